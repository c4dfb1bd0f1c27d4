"""File-system helpers: atomic writes, sha256 digests, advisory locks and the cache root.

One home for them: every module that publishes a file, hashes one, serialises on a lock
file or keeps something in the user's cache uses these, so their behaviour (permissions,
durability, where the cache lives) is the same everywhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from xenpvh.errors import BrokenError

log = logging.getLogger(__name__)

# Bytes read at a time when hashing a file: large artifacts (disk images) stay out of memory.
_CHUNK = 1 << 20
# How often a lock with a timeout tries again.
_LOCK_POLL = 0.05


def process_umask() -> int:
    """The process's umask, read without changing it (os.umask can only set it, and setting
    and restoring it races with other threads creating files)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    # No /proc (or a kernel older than 4.7): set and restore, the only other way.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, mode: int | None = None
) -> Path:
    """Write `data` to `path` so that a reader sees the old file or the complete new one.

    A temp file beside `path` is written, fsynced and renamed over it; the directory is
    fsynced after the rename.  The final mode is `mode`, else what `open()` would give a new
    file (0666 minus the umask): mkstemp's 0600 would keep a web server from publishing it.
    An exception removes the temp file and leaves any old `path` untouched.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode if mode is not None else 0o666 & ~process_umask())
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str, *, mode: int | None = None) -> Path:
    """`atomic_write_bytes` of `text` encoded as UTF-8 (newlines written as given)."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory is; some file systems refuse (EINVAL).
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def sha256_bytes(data: bytes) -> str:
    """The hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of the file at `path`, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def flock(path: str | os.PathLike[str], *, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive advisory lock on the file `path` (created if missing) meanwhile.

    Without `timeout` it waits as long as it takes; with one it raises BrokenError when the
    lock is still held by someone else after `timeout` seconds.
    """
    lock_path = Path(path)
    with lock_path.open("a") as handle:
        if timeout is None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise BrokenError(
                            f"lock {lock_path} is still held by another process after {timeout:g} s"
                        ) from None
                    time.sleep(_LOCK_POLL)
        log.debug("locked %s", lock_path)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cache_root(*parts: str) -> Path:
    """`${XDG_CACHE_HOME:-~/.cache}/xenpvh`, or the directory `parts` below it."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base, "xenpvh", *parts)


__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "cache_root",
    "flock",
    "process_umask",
    "sha256_bytes",
    "sha256_file",
]
