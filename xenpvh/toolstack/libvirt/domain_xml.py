"""Reading libvirt's XML: the domain name and `<os><type>` of a domain description, and the
guest OS types a connection's capabilities offer."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from xenpvh.errors import BlockedError, BrokenError


def xml_name(xml: str, *, where: str = "domain XML") -> str:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise BlockedError(f"{where}: not well-formed XML: {e}") from e
    name = root.findtext("name")
    if root.tag != "domain" or not name:
        raise BlockedError(f"{where}: no <domain><name>")
    return name.strip()


def os_machine(xml: str) -> tuple[str, str]:
    """(`<os><type>` text, its machine attribute) of a domain XML ('' when absent)."""
    try:
        el = ET.fromstring(xml).find("os/type")
    except ET.ParseError as e:
        raise BrokenError(f"libvirt returned malformed domain XML: {e}") from e
    if el is None:
        return "", ""
    return (el.text or "").strip(), el.get("machine", "")


def caps_os_types(caps: str) -> set[str]:
    """The guest OS types a connection's capabilities XML offers (e.g. xen, xenpvh, hvm)."""
    try:
        root = ET.fromstring(caps)
    except ET.ParseError as e:
        raise BrokenError(f"libvirt capabilities are not XML: {e}") from e
    return {(t.text or "").strip() for t in root.iterfind("guest/os_type")}
