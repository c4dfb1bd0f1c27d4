"""Running apt, apt-cache and dpkg-source: a C locale, no prompts, and apt's download
progress (APT::Status-Fd) reported as a progress task to the caller's sink."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path

from xenpvh.errors import BlockedError, BrokenError
from xenpvh.util.progress import Note, ProgressSink, emit, task

log = logging.getLogger(__name__)

# The sink long apt steps report to (set by `reporting`).  A context variable, not a
# parameter: the functions keep the small signatures callers (and tests) rely on.
_PROGRESS: ContextVar[ProgressSink | None] = ContextVar("xenpvh_apt_progress", default=None)
# apt's words for "the mirrors do not have it" (our input) as opposed to a failed download.
_NOT_ON_MIRRORS = re.compile(
    r"Can't find a source to download|Unable to locate package|"
    r"Unable to find a source package|Can not find version"
)
_APT_ERROR = re.compile(r"^(E|Err):", re.MULTILINE)


@contextlib.contextmanager
def reporting(progress: ProgressSink | None) -> Iterator[None]:
    """Report apt's downloads (update, packages) as tasks to `progress` meanwhile."""
    token = _PROGRESS.set(progress)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def say(message: str) -> None:
    """A warning for the log and, while `reporting`, a note to the progress sink."""
    log.warning("%s", message)
    emit(_PROGRESS.get(), Note(f"warning: {message}"))


def apt_env() -> dict[str, str]:
    return {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}


def run_captured(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `argv` to completion, its output captured; a missing tool is BrokenError."""
    try:
        return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=apt_env())
    except FileNotFoundError as e:
        raise BrokenError(f"{argv[0]} is not installed (needs apt and dpkg-dev)") from e


def capture(argv: list[str], what: str) -> str:
    """The standard output of `argv`; BrokenError naming `what` when it fails."""
    proc = run_captured(argv)
    if proc.returncode != 0:
        raise BrokenError(f"{what} failed (exit {proc.returncode}): {tail(proc.stderr)}")
    return proc.stdout


def run_apt(argv: list[str], what: str, cwd: Path | None = None) -> None:
    """Run apt with its download progress reported as a task (percent done).  What the
    mirrors do not have is BlockedError; any other failure (exit status or an `E:`/`Err:`
    line) BrokenError, and the task ends failed."""
    with task(_PROGRESS.get(), what, total=100.0) as advance:
        _run_apt(argv, what, cwd, advance)


def _run_apt(argv: list[str], what: str, cwd: Path | None, advance: Callable[..., None]) -> None:
    read_fd, write_fd = os.pipe()
    with tempfile.TemporaryFile() as output:
        try:
            proc = subprocess.Popen(
                [argv[0], "-o", f"APT::Status-Fd={write_fd}", *argv[1:]],
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
                env=apt_env(),
            )
        except FileNotFoundError as e:
            os.close(read_fd)
            raise BrokenError(f"{argv[0]} is not installed (needs apt)") from e
        finally:
            os.close(write_fd)
        with os.fdopen(read_fd, errors="replace") as status:
            for line in status:
                # dlstatus:ITEM:PERCENT:MESSAGE
                parts = line.split(":", 3)
                if parts[0] == "dlstatus" and len(parts) > 2:
                    with contextlib.suppress(ValueError):
                        advance(completed=float(parts[2]))
        rc = proc.wait()
        output.seek(0)
        text = output.read().decode(errors="replace")
    if rc != 0 or _APT_ERROR.search(text):
        if _NOT_ON_MIRRORS.search(text):
            raise BlockedError(f"{what}: not on the mirrors: {tail(text)}")
        raise BrokenError(f"{what} failed (exit {rc}): {tail(text)}")


def tail(text: str, lines: int = 6) -> str:
    """The last non-blank `lines` of `text` on one line: enough to say why a tool failed."""
    kept = [ln for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return " | ".join(kept)


__all__ = ["apt_env", "capture", "reporting", "run_apt", "run_captured", "say", "tail"]
