"""A deterministic writer for the newc ("070701") cpio format the Linux kernel unpacks as an
initramfs.

Every member is owned by root, has mtime 0 and a sequential inode number, so the same inputs
give the same bytes (and the guest kit's cache key can stand for its contents).  Parent
directories are written before their first member, because the kernel's unpacker does not
create them.
"""

from __future__ import annotations

import stat
from types import TracebackType
from typing import BinaryIO

from xenpvh.errors import BlockedError

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
DIR_MODE = 0o755


def _pad(length: int) -> bytes:
    """Zero bytes that bring `length` up to the next multiple of 4 (newc's alignment)."""
    return b"\0" * (-length % 4)


def _check_name(name: str) -> str:
    """`name` if it is a plain relative path that stays inside the archive root."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in {"", ".", ".."} for p in parts):
        raise BlockedError(f"cpio member {name!r} is not a plain relative path")
    return name


class NewcWriter:
    """Writes newc members to a binary stream; `close()` (or leaving the `with` block without
    an exception) writes the trailer."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._names: set[str] = set()
        self._implicit: set[str] = set()  # parents written on a member's behalf
        self._next_ino = 1
        self._closed = False

    def __enter__(self) -> NewcWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # A half-written archive must not look complete: no trailer after an error.
        if exc_type is None:
            self.close()

    # -- members -----------------------------------------------------------------------------

    def add_file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._add(name, stat.S_IFREG | (mode & 0o7777), data)

    def add_directory(self, name: str, mode: int = DIR_MODE) -> None:
        self._add(name, stat.S_IFDIR | (mode & 0o7777), b"", nlink=2)

    def add_symlink(self, name: str, target: str) -> None:
        if not target or "\0" in target:
            raise BlockedError(f"cpio symlink {name!r}: bad target {target!r}")
        self._add(name, stat.S_IFLNK | 0o777, target.encode())

    def add_char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._add(name, stat.S_IFCHR | (mode & 0o7777), b"", rdev=(major, minor))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._write_entry(TRAILER, 0, b"", ino=0, nlink=1, rdev=(0, 0))

    # -- internals ---------------------------------------------------------------------------

    def _add(
        self, name: str, mode: int, data: bytes, *, nlink: int = 1, rdev: tuple[int, int] = (0, 0)
    ) -> None:
        if self._closed:
            raise BlockedError(f"cpio member {name!r} added after the trailer")
        _check_name(name)
        if name in self._implicit:
            # Its mode is already in the stream: directories must precede their contents.
            raise BlockedError(
                f"cpio member {name!r} added twice (already written as a parent directory)"
            )
        if name in self._names:
            raise BlockedError(f"cpio member {name!r} added twice")
        self._parents(name)
        self._names.add(name)
        self._write_entry(name, mode, data, ino=self._ino(), nlink=nlink, rdev=rdev)

    def _parents(self, name: str) -> None:
        """Write the missing parent directories of `name`, outermost first."""
        parts = name.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            parent = "/".join(parts[:depth])
            if parent not in self._names:
                self._names.add(parent)
                self._implicit.add(parent)
                self._write_entry(
                    parent, stat.S_IFDIR | DIR_MODE, b"", ino=self._ino(), nlink=2, rdev=(0, 0)
                )

    def _ino(self) -> int:
        ino = self._next_ino
        self._next_ino += 1
        return ino

    def _write_entry(
        self, name: str, mode: int, data: bytes, *, ino: int, nlink: int, rdev: tuple[int, int]
    ) -> None:
        encoded = name.encode() + b"\0"
        fields = (
            ino,
            mode,
            0,  # uid
            0,  # gid
            nlink,
            0,  # mtime: fixed, for reproducible archives
            len(data),
            0,  # devmajor
            0,  # devminor
            rdev[0],
            rdev[1],
            len(encoded),
            0,  # check (only used by the crc format)
        )
        header = MAGIC + b"".join(b"%08x" % f for f in fields)
        self._out.write(header + encoded + _pad(len(header) + len(encoded)))
        self._out.write(data + _pad(len(data)))
