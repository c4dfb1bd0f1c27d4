"""Run build commands into one log file, streaming their output lines to a progress callback.

A build is a handful of long commands (make, configure, make.py).  Every line they print goes
to the build's log file; the last lines of the command that failed go into the error, with the
log's path, so a compile error is readable without opening the log.

Verdict mapping: a command that exits non-zero is `BuildFailed` (blocked: the tree, the patches
or the config are wrong, and building again gives the same error); a command killed by a signal
is `BuildKilled` (broken: the OOM killer, a reboot, someone's kill -9: retrying can help).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from xenpvh.errors import BlockedError, BrokenError

# Enough to show a compiler error with its context and make's own error lines.
TAIL_LINES = 25
# A line is cut for the progress display and the error tail only; the log keeps it whole.
_SHOWN_LINE = 300

_MAKE_VARS = frozenset({"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "GNUMAKEFLAGS"})

LineCallback = Callable[[str], None]


def _format_tail(lines: Sequence[str]) -> str:
    return "\n".join(line[:_SHOWN_LINE] for line in lines)


class BuildFailed(BlockedError):
    """A build command exited non-zero.  The log is kept; `tail` holds its last lines."""

    def __init__(self, what: str, log: Path, tail: str, exit_status: int | None = None) -> None:
        self.what = what
        self.log = log
        self.tail = tail
        self.exit_status = exit_status
        status = f" (exit {exit_status})" if exit_status is not None else ""
        body = "\n".join(f"  | {line}" for line in tail.splitlines()) or "  | (no output)"
        super().__init__(f"{what} failed{status}; last lines of the log:\n{body}\nlog: {log}")


class BuildKilled(BrokenError):
    """A build command died from a signal: infrastructure, not our input."""

    def __init__(self, what: str, log: Path, signum: int, tail: str) -> None:
        self.what = what
        self.log = log
        self.signum = signum
        self.tail = tail
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = "unknown signal"
        super().__init__(f"{what} was killed by signal {signum} ({name}); log: {log}")


class BuildLog:
    """One build's log file and the commands that write into it.

    Commands run in their own session so an interrupt (Ctrl-C, a pytest timeout) can stop the
    whole process tree — make's children included — instead of leaving compilers running.
    """

    def __init__(self, path: Path, *, env: Mapping[str, str] | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = path.open("ab")
        # LC_ALL=C: compiler and make messages in one language, so the tail reads the same
        # everywhere.  An outer make's MAKEFLAGS (jobserver fds we do not pass on, -j, -k)
        # must not change how the tree builds.
        inherited = {k: v for k, v in os.environ.items() if k not in _MAKE_VARS}
        self.env = {**inherited, "LC_ALL": "C", **(env or {})}

    # -- context manager ------------------------------------------------------------------

    def __enter__(self) -> BuildLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and not isinstance(exc, KeyboardInterrupt):
            # Whatever stopped the build is the last thing in its log.
            self.note(f"!!! {type(exc).__name__}: {exc}")
        self.close()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    # -- writing --------------------------------------------------------------------------

    def note(self, text: str) -> None:
        """A line of our own (phase headers, errors) between the commands' output."""
        if self._file.closed:
            with self.path.open("ab") as f:
                f.write(text.rstrip("\n").encode() + b"\n")
            return
        self._file.write(text.rstrip("\n").encode() + b"\n")
        self._file.flush()

    def phase(self, name: str) -> None:
        self.note(f"=== {name} ({time.strftime('%Y-%m-%d %H:%M:%S')})")

    # -- running --------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        what: str | None = None,
        on_line: LineCallback | None = None,
    ) -> list[str]:
        """Run argv to completion, every output line into the log.  Returns the output lines.

        Raises BuildFailed on a non-zero exit, BuildKilled on a signal, BlockedError when the
        program does not exist.
        """
        # The error names the step and its exact command.
        what = f"{what} ({shlex.join(argv)})" if what else shlex.join(argv)
        self.note(f"$ {shlex.join(argv)}    # in {cwd}")
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        lines: list[str] = []
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except FileNotFoundError as e:
            self.note(f"!!! {argv[0]}: not found")
            raise BlockedError(f"{what}: {argv[0]} is not installed (or not in PATH)") from e
        except NotADirectoryError as e:
            raise BlockedError(f"{what}: working directory {cwd} does not exist") from e
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:
                self._file.write(raw)
                self._file.flush()
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                tail.append(line)
                lines.append(line)
                if on_line is not None and line.strip():
                    on_line(line[:_SHOWN_LINE])
            status = proc.wait()
        except BaseException:
            # Interrupted: take the whole process group down with us.
            _kill_group(proc)
            raise
        finally:
            proc.stdout.close()
        took = time.monotonic() - start
        if status < 0:
            self.note(f"!!! killed by signal {-status} after {took:.1f} s")
            raise BuildKilled(what, self.path, -status, _format_tail(tail))
        if status != 0:
            self.note(f"!!! exit {status} after {took:.1f} s")
            raise BuildFailed(what, self.path, _format_tail(tail), status)
        self.note(f"--- ok after {took:.1f} s")
        return lines


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def tail_of(text: str, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines of some output, for a BuildFailed built from captured output."""
    return _format_tail(text.rstrip("\n").splitlines()[-lines:])


__all__ = ["TAIL_LINES", "BuildFailed", "BuildKilled", "BuildLog", "LineCallback", "tail_of"]
