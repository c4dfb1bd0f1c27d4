"""Render a `DomainSpec` as an xl.cfg(5) file for a PVH guest, and parse that subset back.

Pure functions, no I/O.  Every value is validated before it is quoted: xl's config lexer
has no way to escape a quote inside a string, and the disk/vif specs are themselves
comma/equals separated mini-languages, so a bad character is refused rather than escaped.

Version rules (xl.cfg(5), docs/features/pvh and XEN-ON-THIS-MACHINE.md):
- Xen 4.4-4.8: PVHv1, `pvh = 1` plus the PV-style `kernel`/`ramdisk`/`extra`.
- Xen 4.9: PVHv1 was removed and PVHv2 (`type = "pvh"`) is not there yet: blocked.
- Xen >= 4.10: `type = "pvh"` with `cmdline` (xl.cfg of 4.17 documents `cmdline` as the
  preferred key; `extra` is ignored when `cmdline` is set).
- xl 4.17 silently turns `pvh = 1` into a PV guest, so PVHv1 is never emitted for >= 4.9.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from xenpvh.errors import RenderError
from xenpvh.profile.domain import DiskSpec, DomainSpec, VifSpec

# xl.cfg(5): on_poweroff/on_reboot/on_watchdog/on_crash/on_soft_reset ACTION values.
ACTIONS: Final = frozenset(
    {
        "destroy",
        "restart",
        "rename-restart",
        "preserve",
        "coredump-destroy",
        "coredump-restart",
        "soft-reset",
    }
)
DISK_FORMATS: Final = frozenset({"raw", "qcow2", "vhd"})
DISK_ACCESS: Final = frozenset({"rw", "ro"})

_VDEV_RE: Final = re.compile(r"xvd[a-z]{1,3}")
_MAC_RE: Final = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
# libxl accepts more, but a conservative charset keeps names usable in paths, xenstore
# and shell-free argv; all-digit names are refused because xl reads them as domids.
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Linux interface names: at most 15 bytes, no '/', no whitespace.
_BRIDGE_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_KEY_RE: Final = re.compile(r"[a-z_][a-z0-9_]*")

# Characters that end or escape an xl string, start another directive, or close a list.
_STRING_FORBIDDEN: Final = {
    "'": "single quote",
    '"': "double quote",
    "\\": "backslash",
    "\n": "newline",
    "\r": "carriage return",
    "\x00": "NUL",
    "]": "']'",
}
# Inside a disk or vif spec a comma starts another key and '=' another assignment.
_SPEC_FORBIDDEN: Final = {**_STRING_FORBIDDEN, ",": "comma", "=": "'='"}


@dataclass(frozen=True, order=True)
class XenVersion:
    """A Xen release, ordered numerically (4.9 < 4.10)."""

    major: int
    minor: int
    patch: int = 0

    _RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?(?:[-+~][0-9A-Za-z.+~-]*)?")

    @classmethod
    def parse(cls, text: str) -> XenVersion:
        """Parse "4.17", "4.17.5" or "4.17.5-pre"; the suffix is ignored."""
        m = cls._RE.fullmatch(text.strip())
        if m is None:
            raise RenderError(f"cannot parse Xen version {text!r}: expected MAJOR.MINOR[.PATCH]")
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


PVHV1_FIRST: Final = XenVersion(4, 4)
PVHV1_LAST: Final = XenVersion(4, 8, 999)
PVHV2_FIRST: Final = XenVersion(4, 10)


def _bad_char(value: str, forbidden: dict[str, str]) -> str | None:
    for ch in value:
        if ch in forbidden:
            return forbidden[ch]
        # Other C0 controls, DEL and C1 controls have no business in a config value.
        if (ord(ch) < 0x20 and ch != "\t") or 0x7F <= ord(ch) <= 0x9F:
            return f"control character U+{ord(ch):04X}"
    return None


def check_string(field: str, value: str, *, spec: bool = False) -> str:
    """Refuse a value that would break out of its xl string (or disk/vif field)."""
    if not isinstance(value, str):
        raise RenderError(f"{field}: expected a string, got {type(value).__name__}")
    bad = _bad_char(value, _SPEC_FORBIDDEN if spec else _STRING_FORBIDDEN)
    if bad is not None:
        raise RenderError(f"{field}: refusing {bad} in {value!r}")
    if spec and value != value.strip():
        # xl strips whitespace around disk/vif tokens, so it would silently change the path.
        raise RenderError(f"{field}: refusing leading/trailing whitespace in {value!r}")
    return value


def _check_choice(field: str, value: str, allowed: frozenset[str]) -> str:
    if value not in allowed:
        raise RenderError(f"{field}: {value!r} is not one of {', '.join(sorted(allowed))}")
    return value


def check_name(name: str) -> str:
    check_string("name", name)
    if not _NAME_RE.fullmatch(name) or name.isdigit():
        raise RenderError(
            f"name: {name!r} must be 1-64 of [A-Za-z0-9_.-], start alphanumeric, not all digits"
        )
    return name


def check_mac(field: str, mac: str) -> str:
    check_string(field, mac, spec=True)
    if not _MAC_RE.fullmatch(mac):
        raise RenderError(f"{field}: {mac!r} is not a MAC address like 00:16:3e:12:34:56")
    if int(mac[:2], 16) & 1:
        raise RenderError(f"{field}: {mac!r} is a multicast address (first octet is odd)")
    return mac


def _check_positive(field: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RenderError(f"{field}: expected a positive integer, got {value!r}")
    return value


def disk_spec_string(index: int, disk: DiskSpec) -> str:
    """One DISKSPEC in keyword form (xl-disk-configuration(5)); target goes last."""
    f = f"disks[{index}]"
    if not disk.target:
        raise RenderError(f"{f}.target: empty (create the scratch image before rendering)")
    check_string(f"{f}.target", disk.target, spec=True)
    check_string(f"{f}.vdev", disk.vdev, spec=True)
    if not _VDEV_RE.fullmatch(disk.vdev):
        raise RenderError(f"{f}.vdev: {disk.vdev!r} must look like xvda (xvd + 1-3 letters)")
    _check_choice(f"{f}.format", disk.format, DISK_FORMATS)
    _check_choice(f"{f}.access", disk.access, DISK_ACCESS)
    script = ""
    if disk.script is not None:
        script = f"script={_script(f'{f}.script', disk.script)}, "
    return (
        f"format={disk.format}, vdev={disk.vdev}, access={disk.access}, {script}"
        f"target={disk.target}"
    )


def _script(field: str, path: str) -> str:
    check_string(field, path, spec=True)
    if not path.startswith("/"):
        raise RenderError(f"{field}: {path!r} must be an absolute path on the host")
    return path


def vif_spec_string(index: int, vif: VifSpec) -> str:
    f = f"vifs[{index}]"
    check_string(f"{f}.bridge", vif.bridge, spec=True)
    if not _BRIDGE_RE.fullmatch(vif.bridge):
        raise RenderError(f"{f}.bridge: {vif.bridge!r} is not an interface name")
    parts = [f"bridge={vif.bridge}"]
    if vif.mac is not None:
        parts.append(f"mac={check_mac(f'{f}.mac', vif.mac)}")
    if vif.script is not None:
        parts.append(f"script={_script(f'{f}.script', vif.script)}")
    return ",".join(parts)


def _check_unique_vdevs(spec: DomainSpec) -> None:
    seen: set[str] = set()
    for d in spec.disks:
        if d.vdev in seen:
            raise RenderError(f"disks: vdev {d.vdev!r} used twice")
        seen.add(d.vdev)


def _quote(value: str) -> str:
    # Safe only after check_string: no quote, backslash or newline can be inside.
    return f'"{value}"'


def _list(items: list[str]) -> str:
    return "[ " + ", ".join(f"'{i}'" for i in items) + " ]"


def render_xl_config(spec: DomainSpec, xen: XenVersion | str) -> str:
    """Render `spec` as xl.cfg text for Xen `xen`; RenderError names what is refused."""
    ver = XenVersion.parse(xen) if isinstance(xen, str) else xen
    if spec.mode not in ("pvh", "pvhv1"):
        raise RenderError(f"mode: {spec.mode!r} is not one of pvh, pvhv1")
    if ver < PVHV1_FIRST:
        raise RenderError(f"Xen {ver} has no PVH guests (PVHv1 appeared in 4.4)")
    if PVHV1_LAST < ver < PVHV2_FIRST:
        raise RenderError(
            f"Xen {ver} supports no PVH mode: PVHv1 was removed in 4.9, PVHv2 arrived in 4.10"
        )
    if ver >= PVHV2_FIRST and spec.mode == "pvhv1":
        raise RenderError(
            f"mode pvhv1 on Xen {ver}: PVHv1 was removed in 4.9 and xl would silently build "
            "a PV guest from 'pvh = 1'; boot it with a PVHv2 profile (e.g. freebsd-pvh or "
            "linux-pvh; `xenpvh profiles` lists them)"
        )
    if ver < PVHV2_FIRST and spec.mode == "pvh":
        raise RenderError(
            f"PVHv2 (mode pvh) needs Xen >= 4.10, got {ver}; on Xen 4.4-4.8 boot a PVHv1 "
            "profile instead (e.g. freebsd-pvhv1; `xenpvh profiles` lists them), or a profile "
            'of your own with mode = "pvhv1"'
        )
    v2 = ver >= PVHV2_FIRST

    name = check_name(spec.name)
    if not spec.kernel:
        raise RenderError("kernel: empty path")
    kernel = check_string("kernel", spec.kernel)
    cmdline = check_string("cmdline", spec.cmdline)
    ramdisk = check_string("ramdisk", spec.ramdisk) if spec.ramdisk else None
    memory = _check_positive("memory_mb", spec.memory_mb)
    vcpus = _check_positive("vcpus", spec.vcpus)
    actions = {
        key: _check_choice(key, getattr(spec, key), ACTIONS)
        for key in ("on_poweroff", "on_reboot", "on_crash")
    }
    if ver < XenVersion(4, 6) and "soft-reset" in actions.values():
        raise RenderError(f"soft-reset action needs Xen >= 4.6, got {ver}")
    disks = [disk_spec_string(i, d) for i, d in enumerate(spec.disks)]
    _check_unique_vdevs(spec)
    vifs = [vif_spec_string(i, v) for i, v in enumerate(spec.vifs)]

    lines = [
        f"# xenpvh: {'PVHv2' if v2 else 'PVHv1'} guest for Xen {ver}",
        f"name = {_quote(name)}",
    ]
    lines.append('type = "pvh"' if v2 else "pvh = 1")
    lines.append(f"kernel = {_quote(kernel)}")
    if ramdisk is not None:
        lines.append(f"ramdisk = {_quote(ramdisk)}")
    if cmdline:
        # 4.4 knows only `extra`; from 4.10 on, `cmdline` is the documented key.
        lines.append(f"{'cmdline' if v2 else 'extra'} = {_quote(cmdline)}")
    lines.append(f"memory = {memory}")
    lines.append(f"vcpus = {vcpus}")
    for key, action in actions.items():
        lines.append(f"{key} = {_quote(action)}")
    if disks:
        lines.append(f"disk = {_list(disks)}")
    if vifs:
        lines.append(f"vif = {_list(vifs)}")
    emitted = {line.split(" = ", 1)[0] for line in lines[1:]}
    for key, value in spec.extra.items():
        # Extra xl keys from a profile (e.g. "serial"); they may not override ours.
        if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
            raise RenderError(f"extra: key {key!r} is not an xl key ([a-z_][a-z0-9_]*)")
        if key in emitted or key in ("pvh", "type", "extra", "cmdline", "builder"):
            raise RenderError(f"extra.{key}: would override a key xenpvh renders itself")
        lines.append(f"{key} = {_quote(check_string(f'extra.{key}', value))}")
    return "\n".join(lines) + "\n"


# ---- parser for the subset rendered above (tests, and reading back a saved config) ----

XlValue = str | int | list[str | int]

_TOKEN_RE: Final = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+|\#[^\n]*)
  | (?P<str>"[^"\n]*"|'[^'\n]*')
  | (?P<int>-?(?:0x[0-9a-fA-F]+|\d+))
  | (?P<key>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[=\[\],;])
    """,
    re.VERBOSE,
)


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise RenderError(f"xl config: unexpected {text[pos]!r} at offset {pos}")
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append((kind, m.group(), pos))
        pos = m.end()
    return out


def _atom(tok: tuple[str, str, int]) -> str | int:
    kind, raw, pos = tok
    if kind == "str":
        return raw[1:-1]
    if kind == "int":
        return int(raw, 0)
    raise RenderError(f"xl config: expected a string or number at offset {pos}, got {raw!r}")


def parse_xl_config(text: str) -> dict[str, XlValue]:
    """Parse `key = value` lines: strings ('...' or "..."), ints, lists, # comments."""
    toks = _tokens(text)
    result: dict[str, XlValue] = {}
    i = 0

    def need(idx: int) -> tuple[str, str, int]:
        if idx >= len(toks):
            raise RenderError("xl config: unexpected end of input")
        return toks[idx]

    while i < len(toks):
        kind, key, pos = toks[i]
        if kind == "punct" and key == ";":
            i += 1
            continue
        if kind != "key":
            raise RenderError(f"xl config: expected a key at offset {pos}, got {key!r}")
        if need(i + 1)[1] != "=":
            raise RenderError(f"xl config: expected '=' after {key!r}")
        i += 2
        tok = need(i)
        if tok[1] == "[":
            items: list[str | int] = []
            i += 1
            while need(i)[1] != "]":
                items.append(_atom(need(i)))
                i += 1
                if need(i)[1] == ",":
                    i += 1
                elif need(i)[1] != "]":
                    raise RenderError(f"xl config: expected ',' or ']' at offset {need(i)[2]}")
            result[key] = items
        else:
            result[key] = _atom(tok)
        i += 1
    return result


def parse_spec_string(spec: str) -> dict[str, str]:
    """Split a keyword-form disk/vif spec ("a=b, c=d") into a dict."""
    out: dict[str, str] = {}
    for part in spec.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise RenderError(f"spec {spec!r}: {part!r} is not key=value")
        out[key] = value
    return out


__all__ = [
    "ACTIONS",
    "DISK_ACCESS",
    "DISK_FORMATS",
    "XenVersion",
    "check_mac",
    "check_name",
    "check_string",
    "parse_spec_string",
    "parse_xl_config",
    "render_xl_config",
]
