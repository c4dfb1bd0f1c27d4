"""The QEMU process of a nested host: start it on a free ssh port, tell whether it still
runs, read what it runs with and the tail of its serial log, and stop it (QMP quit, then
SIGKILL)."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import itertools
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.nested.qemu import QemuConfig, free_port
from xenpvh.host.nested.record import NestedRecord
from xenpvh.host.ssh import SSHHost

# Every QEMU this process started, by PID (xenpvh.leaks checks none outlives its test).
STARTED_QEMU: list[int] = []
# A port taken between free_port() and QEMU's bind makes QEMU exit at once: try again.
PORT_ATTEMPTS = 3
# How long a started QEMU gets to fail at binding its port before it counts as started.
BIND_GRACE = 0.5


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: QEMU gets SIGKILL when we die, even by kill -9.
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def start_qemu(
    config: QemuConfig,
    *,
    detach: bool,
    qemu_log: Path,
    on_port: Callable[[int], None],
) -> tuple[subprocess.Popen[bytes], QemuConfig]:
    """Start QEMU with `config` on a free ssh port (`on_port(port)` first: the known_hosts
    line names it); the process and the config it runs with.

    Not detached, QEMU dies with this process; detached, it gets a session of its own.
    BrokenError when QEMU exits at once (its log's tail says why).
    """
    last_err = ""
    for _attempt in range(PORT_ATTEMPTS):
        cfg = dataclasses.replace(config, ssh_port=free_port())
        on_port(cfg.ssh_port)
        with qemu_log.open("wb") as log:
            proc = subprocess.Popen(
                cfg.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=None if detach else _die_with_parent,
                start_new_session=detach,
            )
        STARTED_QEMU.append(proc.pid)  # for the live tests' leak check, by PID
        time.sleep(BIND_GRACE)
        if proc.poll() is None:
            return proc, cfg
        last_err = qemu_log.read_text(errors="replace")[-2000:]
        if "forward" not in last_err:
            raise BrokenError(f"QEMU exited at start ({proc.returncode}): {last_err}")
    raise BrokenError(f"QEMU could not forward an ssh port: {last_err}")


def qemu_alive(proc: subprocess.Popen[bytes] | None, record: NestedRecord | None) -> bool:
    """Does the QEMU run: our child, or the one a record names (a detached host)?"""
    if proc is not None:
        return proc.poll() is None
    return record is not None and record.alive()


def send_signal(
    proc: subprocess.Popen[bytes] | None, record: NestedRecord | None, sig: int
) -> None:
    if proc is not None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
    elif record is not None and record.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, sig)


def wait_exit(alive: Callable[[], bool], seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end and alive():
        time.sleep(0.2)


def qmp_quit(sock_path: Path) -> None:
    """Ask QEMU to quit through its QMP socket; silent when nobody answers."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(sock_path))
        s.recv(4096)  # greeting
        s.sendall(b'{"execute":"qmp_capabilities"}\n')
        s.recv(4096)
        s.sendall(b'{"execute":"quit"}\n')
        with contextlib.suppress(OSError):
            s.recv(4096)


def stop_qemu(
    proc: subprocess.Popen[bytes] | None,
    record: NestedRecord | None,
    *,
    poweroff: SSHHost | None = None,
) -> None:
    """Stop the QEMU (`poweroff` over the dom0's ssh first when given, then QMP quit, then
    SIGKILL), each step waiting a while for it to exit."""

    def alive() -> bool:
        return qemu_alive(proc, record)

    if record is None or not alive():
        return
    if poweroff is not None:
        # Whatever ssh says, the monitor and SIGKILL below still stop QEMU.
        with contextlib.suppress(BrokenError, BlockedError):
            poweroff.run(["poweroff"], timeout=10)
        wait_exit(alive, 30)
    if alive():
        qmp_quit(Path(record.monitor))
        wait_exit(alive, 10)
    if alive():
        send_signal(proc, record, signal.SIGKILL)
        wait_exit(alive, 10)


def serial_tail(serial_log: str | Path, n: int) -> str:
    """The last `n` lines of the serial log (each cut to 300 characters); "" unreadable."""
    try:
        with open(serial_log, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            data = f.read()
    except OSError:
        return ""
    lines = data.decode(errors="replace").replace("\r", "").splitlines()
    return "\n".join(ln[:300] for ln in lines[-n:])


def running_qemu_settings(pid: int, proc: Path = Path("/proc")) -> dict[str, object]:
    """accel, tcg_thread, cpus and memory read off a running QEMU's command line ({} when
    it cannot be read)."""
    try:
        argv = [
            a.decode(errors="replace")
            for a in (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
        ]
    except OSError:
        return {}
    out: dict[str, object] = {}
    for flag, value in itertools.pairwise(argv):
        if flag == "-accel":
            accel, _, opts = value.partition(",")
            out["accel"] = accel
            opt = dict(o.partition("=")[::2] for o in opts.split(",") if o)
            out["tcg_thread"] = opt.get("thread") if accel == "tcg" else None
        elif flag == "-smp" and value.isdigit():
            out["cpus"] = int(value)
        elif flag == "-m":
            out["memory"] = value
    return out


__all__ = [
    "BIND_GRACE",
    "STARTED_QEMU",
    "qemu_alive",
    "qmp_quit",
    "running_qemu_settings",
    "send_signal",
    "serial_tail",
    "start_qemu",
    "stop_qemu",
    "wait_exit",
]
