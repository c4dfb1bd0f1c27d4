"""The nested host's state: its lifecycle states and the state file through which a later
process finds, reaches and stops a detached host (NestedRecord)."""

from __future__ import annotations

import enum
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from xenpvh.errors import BrokenError
from xenpvh.host.nested.qemu import QEMU
from xenpvh.util.fs import cache_root


class NestedState(enum.Enum):
    ABSENT = "absent"
    BOOTING = "booting"
    READY = "ready"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


# -- the state file ------------------------------------------------------------------------


def state_dir() -> Path:
    rt = os.environ.get("XDG_RUNTIME_DIR")
    return Path(rt) / "xenpvh" / "nested" if rt else cache_root("nested")


@dataclass(frozen=True)
class NestedRecord:
    """What a later process needs to find, reach and stop a detached nested host."""

    pid: int
    ssh_port: int
    serial_log: str
    monitor: str
    run_dir: str
    client_key: str
    known_hosts: str
    started: float
    qemu: str = QEMU
    # The Xen image it booted ("" for the image's own, Debian's): a later `xenpvh boot`
    # reuses an `up` host only when it runs the Xen that boot asks for.
    xen: str = ""

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> NestedRecord | None:
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as e:
            raise BrokenError(f"nested host state file {path} is corrupt: {e}") from e

    def alive(self, proc: Path = Path("/proc")) -> bool:
        """Is pid still *our* QEMU (not a recycled pid)?"""
        try:
            cmdline = (proc / str(self.pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        if not cmdline or Path(cmdline[0].decode(errors="replace")).name != Path(self.qemu).name:
            return False
        return f"unix:{self.monitor},server=on,wait=off".encode() in cmdline

    def ssh_command(self) -> list[str]:
        """An OpenSSH command line reaching the dom0 (host key verified)."""
        return [
            "ssh",
            "-i",
            self.client_key,
            "-p",
            str(self.ssh_port),
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "root@127.0.0.1",
        ]


@dataclass(frozen=True)
class NestedStatus:
    state: NestedState
    pid: int | None = None
    ssh_port: int | None = None
    serial_log: Path | None = None
    uptime: float | None = None
