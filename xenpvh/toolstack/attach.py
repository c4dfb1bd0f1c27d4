"""An interactive guest console: `xl console` on the host's pty channel, joined to a terminal.

`xenpvh attach` runs the same console client a run captures with (`xl console -t pv` on a pty
that the Host gives: a paramiko pty channel over ssh, a local pty on the dom0 itself) and
pumps bytes both ways until the user presses the escape key (Ctrl-], as `xl console`
itself), standard input ends, or the console client ends (the domain is gone).  Everything
the guest prints is appended to the run's console log (bounded), so the artifacts keep the
whole session.

Bytes from the guest go to the terminal unchanged, as `xl console` and `ssh` pass them: the
user asked for the guest's terminal.  The terminal is put in raw mode for the session and
always restored.
"""

from __future__ import annotations

import contextlib
import enum
import os
import select
import termios
import tty
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pexpect
from pexpect.spawnbase import SpawnBase

from xenpvh.errors import BrokenError
from xenpvh.host.base import Host
from xenpvh.toolstack.console import MAX_LOG_BYTES, READ_CHUNK
from xenpvh.toolstack.domain import check_domain_name

ESCAPE = b"\x1d"  # Ctrl-]


class AttachEnd(enum.StrEnum):
    DETACHED = "detached"  # the user pressed the escape key
    INPUT_ENDED = "input ended"  # our standard input reached EOF
    CONSOLE_ENDED = "console ended"  # the console client exited (domain gone, slot taken)


@dataclass
class AttachResult:
    end: AttachEnd
    bytes_from_guest: int
    bytes_logged: int
    detail: str = ""


def open_console(host: Host, domain: str, *, timeout: float = 30.0) -> SpawnBase:
    """`xl console -t pv DOMAIN` on a pty of `host` (the guest's hvc0)."""
    check_domain_name(domain)
    return host.spawn(["xl", "console", "-t", "pv", domain], timeout=timeout)


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """The terminal on `fd` in raw mode (keys go to the guest as typed), restored after."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def interact(
    child: SpawnBase,
    *,
    stdin_fd: int,
    stdout_fd: int,
    log: BinaryIO | None = None,
    log_room: int = MAX_LOG_BYTES,
    escape: bytes = ESCAPE,
) -> AttachResult:
    """Pump bytes between the terminal (`stdin_fd`/`stdout_fd`) and the console `child`
    until the escape byte, EOF on stdin, or the console's end."""
    result = AttachResult(AttachEnd.CONSOLE_ENDED, 0, 0)
    child_fd = child.child_fd
    while True:
        try:
            ready, _, _ = select.select([stdin_fd, child_fd], [], [], 0.5)
        except (OSError, ValueError) as e:  # the channel closed under us
            result.detail = str(e)
            return result
        # Drain the console first: a final burst before EOF is not lost.
        while True:
            try:
                data = child.read_nonblocking(READ_CHUNK, 0)
            except pexpect.TIMEOUT:
                break
            except (pexpect.EOF, OSError) as e:
                result.end, result.detail = AttachEnd.CONSOLE_ENDED, type(e).__name__
                return result
            if not data:
                if not child.isalive():
                    result.end = AttachEnd.CONSOLE_ENDED
                    return result
                break
            result.bytes_from_guest += len(data)
            _write_all(stdout_fd, data)
            if log is not None and result.bytes_logged < log_room:
                part = data[: log_room - result.bytes_logged]
                log.write(part)
                log.flush()
                result.bytes_logged += len(part)
        if stdin_fd in ready:
            typed = os.read(stdin_fd, 1024)
            if not typed:
                result.end = AttachEnd.INPUT_ENDED
                return result
            head, esc, _ = typed.partition(escape)
            if head:
                child.send(head)
            if esc:
                result.end = AttachEnd.DETACHED
                return result


def attach(
    host: Host,
    domain: str,
    *,
    console_log: Path | None,
    stdin_fd: int = 0,
    stdout_fd: int = 1,
    max_log_bytes: int = MAX_LOG_BYTES,
) -> AttachResult:
    """An interactive console to `domain` on `host` until the user detaches; the guest's
    output is appended to `console_log` (up to `max_log_bytes` in all)."""
    child = open_console(host, domain)
    log: BinaryIO | None = None
    try:
        room = max_log_bytes
        if console_log is not None:
            with contextlib.suppress(OSError):
                console_log.parent.mkdir(parents=True, exist_ok=True)
                room = max(0, max_log_bytes - _size(console_log))
                log = console_log.open("ab")
                log.write(b"\n[xenpvh attach]\n")
        with raw_terminal(stdin_fd):
            return interact(child, stdin_fd=stdin_fd, stdout_fd=stdout_fd, log=log, log_room=room)
    except OSError as e:
        raise BrokenError(f"console of {domain} on {host.name}: {e}") from e
    finally:
        if log is not None:
            with contextlib.suppress(OSError):
                log.close()
        # Closing the pty channel hangs up `xl console`, which frees the console slot.
        with contextlib.suppress(Exception):
            child.close()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


__all__ = ["ESCAPE", "AttachEnd", "AttachResult", "attach", "interact", "open_console"]
