"""Which process owns something left on disk or on a host, and is it still running?

A run's lease on a Xen host and a nested host's temp dir name their owner; a later process
on the same machine (same kernel boot, same PID namespace) can then tell a leftover of a
killed process from one in use, at once, instead of waiting for an age or an expiry.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Owner:
    """Who holds a lease: a process, and the machine it can be checked on."""

    name: str  # host:pid, for people
    machine: str  # boot id + PID namespace: where `pid` means this process
    pid: int
    started: int  # the process's start time (clock ticks after boot): pids are reused


def _read(path: str) -> str:
    with contextlib.suppress(OSError):
        return Path(path).read_text().strip()
    return ""


def this_machine() -> str:
    """Processes with the same value share a PID space: the kernel's boot id and the PID
    namespace (two containers on one kernel do not)."""
    try:
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        ns = 0
    return f"{_read('/proc/sys/kernel/random/boot_id')}/{ns}"


def process_start(pid: int, proc: Path = Path("/proc")) -> int | None:
    """Field 22 of /proc/PID/stat (start time), or None when there is no such process."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def current_owner() -> Owner:
    """This process."""
    pid = os.getpid()
    return Owner(f"{socket.gethostname()}:{pid}", this_machine(), pid, process_start(pid) or 0)


def is_running(machine: str, pid: int, started: int) -> bool | None:
    """Is that process still running?  None when it cannot be told from here (another
    machine's process, or an owner recorded without a machine)."""
    if not machine.split("/")[0] or machine != this_machine():
        return None
    return process_start(pid) == started


def owner_record(owner: Owner | None = None) -> dict[str, object]:
    return asdict(owner or current_owner())


__all__ = ["Owner", "current_owner", "is_running", "owner_record", "process_start", "this_machine"]
