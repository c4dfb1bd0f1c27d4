"""libvirt's errors as xenpvh's: a refused domain description is our input (blocked), any
other failed call is the host's (broken); and libvirt's version numbers in words."""

from __future__ import annotations

import libvirt

from xenpvh.errors import BlockedError, BrokenError, XenpvhError

# Errors that mean libvirt refused *our* description of the domain (verdict blocked).
_INPUT_ERRORS = frozenset(
    {
        libvirt.VIR_ERR_XML_ERROR,
        libvirt.VIR_ERR_XML_DETAIL,
        libvirt.VIR_ERR_XML_INVALID_SCHEMA,
        libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
    }
)


class LibvirtCallError(BrokenError):
    """A libvirt call failed; `code` is libvirt's error code (VIR_ERR_*)."""

    def __init__(self, what: str, code: int, message: str) -> None:
        self.what = what
        self.code = code
        super().__init__(f"libvirt {what}: {message}")


class LibvirtInputError(BlockedError):
    """libvirt refused the domain description itself (bad XML, unsupported config)."""

    def __init__(self, what: str, code: int, message: str) -> None:
        self.what = what
        self.code = code
        super().__init__(f"libvirt {what} refused the domain XML: {message}")


def quiet_error_handler(_ctx: object, _err: object) -> None:
    """libvirt's default handler prints to stderr; errors reach us as exceptions anyway."""


def translate(what: str, e: libvirt.libvirtError) -> XenpvhError:
    code = e.get_error_code() or 0
    msg = e.get_error_message() or str(e)
    if code in _INPUT_ERRORS:
        return LibvirtInputError(what, code, msg)
    return LibvirtCallError(what, code, msg)


def version_string(v: int) -> str:
    """libvirt encodes versions as major*1e6 + minor*1e3 + release: 4017005 -> "4.17.5"."""
    if v <= 0:
        raise BrokenError(f"libvirt reported hypervisor version {v!r}")
    major, rest = divmod(v, 1_000_000)
    minor, release = divmod(rest, 1_000)
    return f"{major}.{minor}.{release}"
