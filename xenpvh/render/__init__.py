"""Renderers from a DomainSpec to toolstack input: xl.cfg text and libvirt domain XML."""

from xenpvh.render.libvirt import render_libvirt_xml
from xenpvh.render.xl import XenVersion, parse_xl_config, render_xl_config

__all__ = ["XenVersion", "parse_xl_config", "render_libvirt_xml", "render_xl_config"]
