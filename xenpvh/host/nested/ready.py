"""Waiting for a booted (or resumed) nested host to be ready: sshd answers with the image's
pinned host key, then `xl list` shows Domain-0.  While it waits, the progress sink gets a
status line (what it waits for, since when, the serial log's last line); QEMU exiting or the
deadline passing is BrokenError quoting the serial log."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xenpvh.errors import BrokenError
from xenpvh.host.nested.qemu import ssh_banner_ready
from xenpvh.host.ssh import HostKeyRejected, SSHHost, SSHOptions
from xenpvh.util.progress import Note, ProgressSink, Status, emit

# Lines of the serial log quoted when a boot fails.
SERIAL_TAIL = 40


@dataclass(frozen=True)
class Machine:
    """What the wait watches: is QEMU alive (and its exit status), the serial log's tail."""

    alive: Callable[[], bool]
    exit_status: Callable[[], int | None]
    serial_tail: Callable[[int], str]


@dataclass
class BootTimes:
    """When a nested host's QEMU started (a `time.monotonic()`) and how long it took."""

    qemu_started: float = 0.0
    ssh_ready: float | None = None  # seconds after QEMU started
    xl_ready: float | None = None
    warm: bool = False  # resumed from a saved machine state


@dataclass
class ReadyTimes:
    """Seconds after QEMU started until ssh answered and `xl list` worked."""

    ssh_ready: float
    xl_ready: float


def ssh_options(key: Path, known_hosts: Path, *, connect_timeout: float = 15.0) -> SSHOptions:
    # Only the pinned key of this image is trusted, and only our generated client key offered.
    return SSHOptions(
        identity=key,
        known_hosts=known_hosts,
        use_system_known_hosts=False,
        allow_agent=False,
        connect_timeout=connect_timeout,
        keepalive=15,
    )


def wait_ready(
    ssh: SSHHost,
    machine: Machine,
    *,
    started: float,
    timeout: float,
    progress: ProgressSink | None = None,
) -> ReadyTimes:
    """Wait until ssh and then `xl list` work, at most `timeout` seconds after `started`
    (a `time.monotonic()`)."""
    deadline = started + timeout
    emit(progress, Status("booting nested Xen…"))
    try:
        _poll(machine, deadline, timeout, lambda: _try_ssh(ssh), "ssh", started, progress)
        ssh_ready = time.monotonic() - started
        emit(progress, Note(f"nested host: ssh ready after {ssh_ready:.1f}s"))
        _poll(machine, deadline, timeout, lambda: _try_xl(ssh), "xl list", started, progress)
        xl_ready = time.monotonic() - started
        emit(progress, Note(f"nested host: `xl list` works after {xl_ready:.1f}s"))
    finally:
        emit(progress, Status(""))
    return ReadyTimes(ssh_ready, xl_ready)


def _poll(
    machine: Machine,
    deadline: float,
    timeout: float,
    attempt: Callable[[], bool],
    what: str,
    started: float,
    progress: ProgressSink | None,
) -> None:
    while True:
        if not machine.alive():
            raise BrokenError(
                f"nested host QEMU exited (status {machine.exit_status()}) while waiting for "
                f"{what}; serial log tail:\n{machine.serial_tail(SERIAL_TAIL)}"
            )
        if attempt():
            return
        if time.monotonic() > deadline:
            raise BrokenError(
                f"nested host: no {what} within {timeout:g}s; serial log "
                f"tail:\n{machine.serial_tail(SERIAL_TAIL)}"
            )
        if progress is not None:
            last = machine.serial_tail(1).strip()[:100]
            elapsed = time.monotonic() - started
            progress(Status(f"nested Xen: waiting for {what} ({elapsed:.0f}s) {last}"))
        time.sleep(1.0)


def _try_ssh(ssh: SSHHost) -> bool:
    # QEMU's user-net accepts on the forwarded port long before sshd listens; probing for
    # the banner first keeps paramiko from logging a traceback per attempt.
    if not ssh_banner_ready(ssh.address.host, ssh.address.port):
        return False
    try:
        ssh.connect()
        return True
    except HostKeyRejected:
        raise  # someone else answers on our port: never retry
    except BrokenError:
        return False


def _try_xl(ssh: SSHHost) -> bool:
    try:
        r = ssh.run(["xl", "list"], timeout=30)
    except BrokenError:
        return False
    return r.ok and "Domain-0" in r.out


__all__ = ["SERIAL_TAIL", "BootTimes", "Machine", "ReadyTimes", "ssh_options", "wait_ready"]
