"""Render a `DomainSpec` as libvirt domain XML for the libxl ("xen") driver, PVHv2 only.

libvirt describes a PVH guest as `<os><type arch='x86_64' machine='xenpvh'>xenpvh</type>`
(libvirt >= 4.10 on Xen >= 4.10).  ElementTree does the escaping; what XML cannot carry
at all (NUL, other control characters) is refused with a RenderError.

Disk driver choice (libvirt libxl_conf.c libxlMakeDisk): `name='phy'` maps to libxl's phy
backend, which is what xl itself picks for a raw file (the block hotplug script sets up a
loop device), so it needs no QEMU disk backend in dom0; qcow2/vhd need `name='qemu'`
(qdisk).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Final

from xenpvh.errors import RenderError
from xenpvh.profile.domain import DomainSpec
from xenpvh.render.xl import DISK_ACCESS, DISK_FORMATS, check_mac, check_name

# libvirt formatdomain "Events configuration".
POWER_ACTIONS: Final = frozenset({"destroy", "restart", "preserve", "rename-restart"})
CRASH_ACTIONS: Final = POWER_ACTIONS | {"coredump-destroy", "coredump-restart"}


def _check_text(field: str, value: str) -> str:
    if not isinstance(value, str):
        raise RenderError(f"{field}: expected a string, got {type(value).__name__}")
    for ch in value:
        o = ord(ch)
        if o == 0:
            raise RenderError(f"{field}: refusing NUL in {value!r}")
        if (o < 0x20 and ch not in "\t") or 0x7F <= o <= 0x9F or 0xD800 <= o <= 0xDFFF:
            raise RenderError(f"{field}: refusing control character U+{o:04X} in {value!r}")
        if o in (0xFFFE, 0xFFFF):
            raise RenderError(f"{field}: refusing non-character U+{o:04X} in {value!r}")
    return value


def _choice(field: str, value: str, allowed: frozenset[str]) -> str:
    if value not in allowed:
        raise RenderError(
            f"{field}: {value!r} is not one of {', '.join(sorted(allowed))} (libvirt)"
        )
    return value


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def render_libvirt_xml(spec: DomainSpec) -> str:
    """Domain XML for `virDomainCreateXML`/`defineXML` on a libxl connection."""
    if spec.mode != "pvh":
        raise RenderError(
            f"mode {spec.mode!r}: libvirt's libxl driver only knows PVHv2 (machine xenpvh)"
        )
    check_name(spec.name)
    if not spec.kernel:
        raise RenderError("kernel: empty path")
    for attr in ("memory_mb", "vcpus"):
        v = getattr(spec, attr)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise RenderError(f"{attr}: expected a positive integer, got {v!r}")

    dom = ET.Element("domain", {"type": "xen"})
    _sub(dom, "name", spec.name)
    _sub(dom, "memory", str(spec.memory_mb), unit="MiB")
    _sub(dom, "vcpu", str(spec.vcpus))
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "xenpvh", arch="x86_64", machine="xenpvh")
    _sub(os_el, "kernel", _check_text("kernel", spec.kernel))
    if spec.ramdisk:
        _sub(os_el, "initrd", _check_text("ramdisk", spec.ramdisk))
    if spec.cmdline:
        _sub(os_el, "cmdline", _check_text("cmdline", spec.cmdline))
    _sub(dom, "on_poweroff", _choice("on_poweroff", spec.on_poweroff, POWER_ACTIONS))
    _sub(dom, "on_reboot", _choice("on_reboot", spec.on_reboot, POWER_ACTIONS))
    _sub(dom, "on_crash", _choice("on_crash", spec.on_crash, CRASH_ACTIONS))

    devices = _sub(dom, "devices")
    seen: set[str] = set()
    for i, d in enumerate(spec.disks):
        f = f"disks[{i}]"
        if not d.target:
            raise RenderError(f"{f}.target: empty (create the scratch image before rendering)")
        _check_text(f"{f}.target", d.target)
        fmt = _choice(f"{f}.format", d.format, DISK_FORMATS)
        _choice(f"{f}.access", d.access, DISK_ACCESS)
        if not (d.vdev.startswith("xvd") and d.vdev[3:].isalpha() and d.vdev[3:].islower()):
            raise RenderError(f"{f}.vdev: {d.vdev!r} must look like xvda")
        if d.vdev in seen:
            raise RenderError(f"disks: vdev {d.vdev!r} used twice")
        seen.add(d.vdev)
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="phy" if fmt == "raw" else "qemu", type=fmt)
        _sub(disk, "source", file=d.target)
        _sub(disk, "target", dev=d.vdev, bus="xen")
        if d.access == "ro":
            _sub(disk, "readonly")
    for i, v in enumerate(spec.vifs):
        iface = _sub(devices, "interface", type="bridge")
        _sub(iface, "source", bridge=_check_text(f"vifs[{i}].bridge", v.bridge))
        if v.mac is not None:
            _sub(iface, "mac", address=check_mac(f"vifs[{i}].mac", v.mac))
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="xen", port="0")

    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode") + "\n"


__all__ = ["CRASH_ACTIONS", "POWER_ACTIONS", "render_libvirt_xml"]
