"""The `xl` driver: Xen's own toolstack, driven through a Host with argv lists.

Everything here is a thin, checked wrapper around one `xl` sub-command.  Parsing is strict
enough to notice when xl answers something unexpected (BrokenError naming the command) and
lenient about column widths and extra keys, which change between Xen releases.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from xenpvh.errors import BlockedError, BrokenError, CommandFailed
from xenpvh.host.base import CommandResult, Host
from xenpvh.profile.domain import DomainSpec
from xenpvh.render.xl import XenVersion, render_xl_config
from xenpvh.toolstack.base import Prepared
from xenpvh.toolstack.console import MAX_LOG_BYTES, ConsoleCapture
from xenpvh.toolstack.domain import Domain, check_domain_name
from xenpvh.util.fs import atomic_write_text

_CFG_NAME = re.compile(r"""^\s*name\s*=\s*(["'])(?P<name>[^"']*)\1\s*(?:#.*)?$""", re.M)
# `xl list` row: Name ID Mem VCPUs State Time(s); the name may in theory contain blanks,
# so the numeric columns are matched from the right.
_LIST_ROW = re.compile(
    r"^(?P<name>.+?)\s+(?P<domid>\d+)\s+(?P<mem>\d+)\s+(?P<vcpus>\d+)\s+"
    r"(?P<state>[-rbpscd]{6})\s+(?P<time>[\d.]+)\s*$"
)


class Xl:
    """`xl` on one Host.

    `timeout` bounds every xl invocation; `xl create` gets `create_timeout` because it runs
    hotplug scripts (bridge, loop devices), which are slow on a TCG dom0.
    """

    name = "xl"

    def __init__(self, host: Host, *, timeout: float = 60.0, create_timeout: float = 180.0) -> None:
        self.host = host
        self.timeout = timeout
        self.create_timeout = create_timeout
        # `xl info` as read by prepare(): the host does not change during a run, so collect()
        # saves it instead of asking again (one ssh round trip less on a slow dom0).
        self.prepared_info: str | None = None
        # (name, `xl list -l` entry) of the domain create() made; dropped when destroyed.
        self._created: tuple[str, dict[str, object]] | None = None

    # -- plumbing ---------------------------------------------------------------------------

    def _xl(self, *args: str, timeout: float | None = None, check: bool = True) -> CommandResult:
        return self.host.run(
            ["xl", *args], timeout=self.timeout if timeout is None else timeout, check=check
        )

    # -- host facts -------------------------------------------------------------------------

    def info_text(self) -> str:
        return self._xl("info").out

    def info(self) -> dict[str, str]:
        """`xl info` as a dict (keys as printed: xen_major, xen_minor, xen_extra, ...)."""
        return parse_info(self.info_text())

    def xen_version(self, info: dict[str, str] | None = None) -> XenVersion:
        return XenVersion.parse(version_string(info if info is not None else self.info()))

    def dmesg(self) -> str:
        return self._xl("dmesg").out

    # -- Toolstack protocol -----------------------------------------------------------------

    def prepare(self, spec: DomainSpec) -> Prepared:
        """Render the xl config for the Xen this host runs (RenderError: blocked)."""
        info_text = self.prepared_info = self.info_text()
        version = version_string(parse_info(info_text))
        cfg = render_xl_config(spec, version)
        return Prepared(config=cfg, filename="domain.cfg", xen_version=version, host_info=info_text)

    def console(
        self, domain: Domain, *, log_path: Path, max_log_bytes: int = MAX_LOG_BYTES
    ) -> ConsoleCapture:
        return ConsoleCapture(self.host, domain, log_path=log_path, max_log_bytes=max_log_bytes)

    def collect(self, artifacts: Path) -> dict[str, Path]:
        artifacts.mkdir(parents=True, exist_ok=True)
        out = {"xl-dmesg": artifacts / "xl-dmesg.txt", "xl-info": artifacts / "xl-info.txt"}
        atomic_write_text(out["xl-dmesg"], self.dmesg())
        info = self.prepared_info if self.prepared_info is not None else self.info_text()
        atomic_write_text(out["xl-info"], info)
        return out

    # -- domains ----------------------------------------------------------------------------

    def list(self) -> list[Domain]:
        return parse_list(self._xl("list").out)

    def domid(self, name: str) -> int | None:
        """The domain's id, or None when no domain of that name exists."""
        r = self._xl("domid", check_domain_name(name), check=False)
        if not r.ok:
            return None
        try:
            return int(r.out.strip())
        except ValueError:
            raise BrokenError(f"`xl domid {name}` printed {r.out.strip()!r}") from None

    def create(
        self, cfg_remote_path: str, paused: bool = True, *, name: str | None = None
    ) -> Domain:
        """`xl create [-p] <cfg>`; the name comes from the config when not given."""
        if name is None:
            text = self.host.run(["cat", "--", cfg_remote_path], check=True).out
            name = config_name(text, where=cfg_remote_path)
        check_domain_name(name)
        args = ["create", *(["-p"] if paused else []), "--", cfg_remote_path]
        r = self._xl(*args, timeout=self.create_timeout, check=False)
        if not r.ok:
            raise CommandFailed(r.argv, r.exit_status, r.err)
        # One `xl list -l` gives the domid and the type verify_pvh() needs: one ssh round
        # trip instead of two on a slow dom0.
        r = self._xl("list", "-l", check_domain_name(name), check=False)
        entry = _first_entry(r.out) if r.ok else None
        domid = entry.get("domid") if entry is not None else None
        if not isinstance(domid, int):
            raise BrokenError(f"`xl create {cfg_remote_path}` succeeded but no domain {name!r}")
        self._created = (name, entry)
        return Domain(name=name, domid=domid)

    def unpause(self, name: str) -> None:
        self._xl("unpause", check_domain_name(name))

    def list_long(self, name: str) -> dict[str, object]:
        """The domain's entry of `xl list -l <name>` (JSON); the one create() read when it
        is the domain just created."""
        if self._created is not None and self._created[0] == name:
            return self._created[1]
        r = self._xl("list", "-l", check_domain_name(name))
        try:
            json.loads(r.out)
        except json.JSONDecodeError as e:
            raise BrokenError(f"`xl list -l {name}` did not print JSON: {e}") from e
        data = _first_entry(r.out)
        if data is None:
            raise BrokenError(f"`xl list -l {name}` printed no domain entry")
        return data

    def domain_type(self, name: str) -> str:
        """`c_info.type` of the running domain: "pv", "pvh" or "hvm"."""
        entry = self.list_long(name)
        try:
            t = entry["config"]["c_info"]["type"]  # type: ignore[index]
        except (KeyError, TypeError):
            raise BrokenError(f"`xl list -l {name}` has no config.c_info.type") from None
        return str(t)

    def verify_pvh(self, name: str) -> None:
        """BlockedError unless the domain really is PVH.

        xl 4.17 accepts the PVHv1 option `pvh=1` silently and builds a PV guest, so the
        config alone proves nothing.
        """
        t = self.domain_type(name)
        if t != "pvh":
            raise BlockedError(
                f"domain {name} was built as type {t!r}, not 'pvh' by xl on {self.host.name}: "
                "the config's PVH option is not understood by this Xen (e.g. PVHv1 `pvh=1` "
                "on Xen >= 4.9 silently yields a PV guest)"
            )

    def destroy(self, name: str, *, wait: float = 30.0) -> bool:
        """Destroy the domain if it exists; True when something was destroyed.

        Idempotent: a domain that is already gone is not an error.  Waits (bounded) until
        the name is gone, so a follow-up sweep or create does not trip over a dying domain.
        """
        check_domain_name(name)
        if self._created is not None and self._created[0] == name:
            self._created = None
        # Destroy first and ask afterwards: one ssh round trip less in the common case.
        r = self._xl("destroy", name, check=False)
        if not r.ok:
            if self.domid(name) is None:
                return False  # it was not there (or went away by itself)
            raise CommandFailed(r.argv, r.exit_status, r.err)
        deadline = time.monotonic() + wait
        while self.domid(name) is not None:
            if time.monotonic() > deadline:
                raise BrokenError(f"domain {name} still exists {wait:g}s after `xl destroy`")
            time.sleep(0.2)
        return True

    def sweep(self, prefix: str = "xenpvh-", *, keep: tuple[str, ...] = ()) -> list[str]:
        """Destroy domains named `<prefix>*` left by earlier crashed runs; returns their names."""
        if not prefix:
            raise BlockedError("sweep needs a non-empty name prefix")
        gone: list[str] = []
        for d in self.list():
            stale = d.name.startswith(prefix) and d.name not in keep and d.domid != 0
            if stale and self.destroy(d.name):
                gone.append(d.name)
        return gone


# -- parsers (pure) ------------------------------------------------------------------------


def _first_entry(text: str) -> dict[str, object] | None:
    """The first domain entry of `xl list -l` JSON output (a list, or one object)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(data, list):
        data = data[0] if data else None
    return data if isinstance(data, dict) else None


def parse_info(text: str) -> dict[str, str]:
    """`key : value` lines; xl pads keys with blanks.  Raises BrokenError on empty output."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep or not key.strip() or " " in key.strip():
            continue
        out[key.strip()] = value.strip()
    if "xen_major" not in out:
        raise BrokenError("`xl info` output has no xen_major line; is this a Xen dom0?")
    return out


def version_string(info: dict[str, str]) -> str:
    """ "4.17.5" from xen_major/xen_minor/xen_extra ("-pre" and similar suffixes dropped)."""
    try:
        major, minor = int(info["xen_major"]), int(info["xen_minor"])
    except (KeyError, ValueError):
        raise BrokenError(f"`xl info` has no usable xen_major/xen_minor: {info!r}") from None
    extra = info.get("xen_extra", "")
    m = re.match(r"^\.(\d+)", extra)
    return f"{major}.{minor}.{m.group(1)}" if m else f"{major}.{minor}"


def parse_list(text: str) -> list[Domain]:
    lines = text.splitlines()
    if not lines or not lines[0].startswith("Name"):
        raise BrokenError(f"`xl list` printed no header: {text[:200]!r}")
    out: list[Domain] = []
    for line in lines[1:]:
        if not line.strip():
            continue
        m = _LIST_ROW.match(line)
        if m is None:
            raise BrokenError(f"`xl list` row not understood: {line!r}")
        out.append(
            Domain(
                name=m["name"].strip(),
                domid=int(m["domid"]),
                state=m["state"],
                memory_mb=int(m["mem"]),
                vcpus=int(m["vcpus"]),
            )
        )
    return out


def config_name(text: str, *, where: str = "config") -> str:
    m = _CFG_NAME.search(text)
    if m is None:
        raise BlockedError(f'{where}: no `name = "..."` line')
    return m["name"]


__all__ = [
    "Domain",
    "Xl",
    "check_domain_name",
    "config_name",
    "parse_info",
    "parse_list",
    "version_string",
]
