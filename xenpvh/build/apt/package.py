"""Debian package identities: an exact binary package version, and dpkg's version order."""

from __future__ import annotations

from dataclasses import dataclass

from xenpvh.build.tree import DEBIAN_PACKAGE, DEBIAN_VERSION
from xenpvh.errors import BlockedError


@dataclass(frozen=True)
class DebPackage:
    """One exact binary package version, e.g. DebPackage("busybox-static", "1:1.35.0-4")."""

    name: str
    version: str

    def __post_init__(self) -> None:
        # Both end up in apt's argv: refuse anything apt could read as an option.
        if not DEBIAN_PACKAGE.fullmatch(self.name):
            raise BlockedError(f"{self.name!r} is not a Debian package name")
        if not DEBIAN_VERSION.fullmatch(self.version):
            raise BlockedError(f"{self.version!r} is not a Debian version (of {self.name})")

    @property
    def spec(self) -> str:
        return f"{self.name}={self.version}"

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


class DebianVersion:
    """Orders Debian version strings as dpkg does (epoch, upstream, revision; '~' sorts
    before everything, letters before other characters)."""

    def __init__(self, text: str) -> None:
        self.text = text
        epoch, sep, rest = text.partition(":")
        if not sep:
            epoch, rest = "0", text
        upstream, dash, revision = rest.rpartition("-")
        if not dash:
            upstream, revision = rest, "0"
        self.key = (int(epoch) if epoch.isdigit() else 0, upstream, revision)

    @staticmethod
    def _order(c: str) -> int:
        if c == "~":
            return -1
        if c.isdigit():
            return 0
        if c.isalpha():
            return ord(c)
        return ord(c) + 256

    @classmethod
    def _compare_part(cls, a: str, b: str) -> int:
        i = j = 0
        while i < len(a) or j < len(b):
            diff = 0
            while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
                ac = cls._order(a[i]) if i < len(a) and not a[i].isdigit() else 0
                bc = cls._order(b[j]) if j < len(b) and not b[j].isdigit() else 0
                if ac != bc:
                    return -1 if ac < bc else 1
                if i < len(a) and not a[i].isdigit():
                    i += 1
                if j < len(b) and not b[j].isdigit():
                    j += 1
            na = nb = ""
            while i < len(a) and a[i].isdigit():
                na += a[i]
                i += 1
            while j < len(b) and b[j].isdigit():
                nb += b[j]
                j += 1
            diff = int(na or "0") - int(nb or "0")
            if diff:
                return -1 if diff < 0 else 1
        return 0

    def compare(self, other: DebianVersion) -> int:
        if self.key[0] != other.key[0]:
            return -1 if self.key[0] < other.key[0] else 1
        return self._compare_part(self.key[1], other.key[1]) or self._compare_part(
            self.key[2], other.key[2]
        )

    def __lt__(self, other: DebianVersion) -> bool:
        return self.compare(other) < 0


__all__ = ["DebPackage", "DebianVersion"]
