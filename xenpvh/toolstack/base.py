"""The Toolstack protocol: what a boot run needs from xl, libvirt or any later driver.

A run only ever talks to this protocol, so a Libvirt driver plugs in by implementing these
few methods; console capture and XenStore are toolstack-independent and live beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from xenpvh.host.base import Host
from xenpvh.profile.domain import DomainSpec
from xenpvh.toolstack.console import ConsoleCapture
from xenpvh.toolstack.domain import Domain, check_domain_name, xl_domain_exists

# Domain and its name rule live in toolstack.domain, below this protocol and the console
# capture (which both need them); they are re-exported here as the protocol's vocabulary.


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
