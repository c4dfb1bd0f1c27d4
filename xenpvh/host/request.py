"""Which host a run uses, as a front end asks for it (see xenpvh.host.open)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HostRequest:
    """Which host: `nested` (a Xen host under QEMU that the session boots or reuses),
    `local`, or an ssh address (`ssh://user@host[:port]`, or an inventory name)."""

    spec: str = "nested"
    inventory: Path | None = None
    identity: Path | None = None
    known_hosts: Path | None = None
    xen_image: Path | None = None  # nested host: boot this Xen image
    qemu: str = "patched"  # nested host: its QEMU (see xenpvh.build.qemu)

    @property
    def nested(self) -> bool:
        return self.spec == "nested"


__all__ = ["HostRequest"]
