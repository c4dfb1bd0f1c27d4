"""The Toolstack protocol: what a boot run needs from xl, libvirt or any later driver.

A run only ever talks to this protocol, so a Libvirt driver plugs in by implementing these
few methods; console capture and XenStore are toolstack-independent and live beside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from xenpvh.errors import BlockedError
from xenpvh.host.base import Host
from xenpvh.profile.domain import DomainSpec

if TYPE_CHECKING:
    from xenpvh.toolstack.console import ConsoleCapture

# Stricter than xl: names end up in paths (/var/log/xen/console/guest-<name>.log).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Domain:
    """A domain the toolstack created (or found)."""

    name: str
    domid: int
    state: str = ""  # `xl list` state flags, e.g. "-b----" (empty when unknown)
    memory_mb: int | None = None
    vcpus: int | None = None


def check_domain_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise BlockedError(
            f"domain name {name!r} is not allowed: use 1-64 of [A-Za-z0-9_.-], "
            "starting with a letter or digit"
        )
    return name


def xl_domain_exists(host: Host, name: str, *, timeout: float = 60.0) -> bool:
    """`xl domid NAME` succeeds on the host.  60 s: on a loaded TCG dom0, `xl domid` over a
    connection that replaced a dropped one took over 30 s (CI, 2026-12-03), and a timeout
    here turns a run broken."""
    return bool(host.run(["xl", "domid", check_domain_name(name)], timeout=timeout).ok)


@dataclass(frozen=True)
class Prepared:
    """A domain description ready to upload: rendered for the Xen the host runs."""

    config: str  # the rendered text (xl cfg or libvirt XML)
    filename: str  # artifact / upload name: "domain.cfg" or "domain.xml"
    xen_version: str  # e.g. "4.17.5"
    host_info: str  # raw `xl info` (or equivalent) for the artifacts


@runtime_checkable
class Toolstack(Protocol):
    name: str
    host: Host

    def prepare(self, spec: DomainSpec) -> Prepared:
        """Read the host's Xen version and render `spec` for it (RenderError: blocked)."""
        ...

    def create(self, cfg_remote_path: str, paused: bool = True, *, name: str) -> Domain: ...

    def verify_pvh(self, name: str) -> None:
        """BlockedError unless the created domain really is PVH."""
        ...

    def console(self, domain: Domain, *, log_path: Path, max_log_bytes: int) -> ConsoleCapture:
        """An unstarted console capture for the domain."""
        ...

    def unpause(self, name: str) -> None: ...

    def destroy(self, name: str) -> bool:
        """Idempotent; True when a domain was destroyed."""
        ...

    def sweep(self, prefix: str = "xenpvh-", *, keep: tuple[str, ...] = ()) -> list[str]: ...

    def collect(self, artifacts: Path) -> dict[str, Path]:
        """Write host-side evidence (hypervisor log, host info) into `artifacts`."""
        ...


__all__ = ["Domain", "Prepared", "Toolstack", "check_domain_name", "xl_domain_exists"]
