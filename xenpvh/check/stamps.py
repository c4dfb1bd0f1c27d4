"""Offline times: a saved console's `t` from the lines' own timestamp prefixes.

A stamped line gives its stamp; an unstamped line (an init's own echo) inherits the stamp of
the nearest stamped line before it (bounded look-back).  Times count from the first stamp
seen: 0 for since-boot stamps (`[    1.234567]`), the first line's for wall-clock ones.
"""

from __future__ import annotations

from xenpvh.check.lines import strip_prefix

LOOKBACK = 32  # lines searched backwards for a timestamp


class OfflineStamps:
    def __init__(self) -> None:
        self._origin: float | None = None
        self.last: float | None = None  # latest timestamp prefix seen

    def before(self, block: str, pos: int) -> float | None:
        """The stamp of the nearest stamped line of `block` before `pos` (else the last)."""
        for _ in range(LOOKBACK):
            end = block.rfind("\n", 0, pos)
            if end < 0:
                break
            pos = block.rfind("\n", 0, end) + 1
            stamp = strip_prefix(block[pos:end][:64])[1]
            if stamp is not None:
                return stamp
            if pos == 0:
                break
        return self.last

    def block_done(self, block: str) -> None:
        """A block was scanned: its last stamp is the one later lines inherit."""
        self.last = self.before(block, len(block))

    def t(self, stamp: float | None, where: tuple[str, int] | None) -> float | None:
        """`t` of a line with `stamp` (None: unstamped, at `where` = (block, line start))."""
        if stamp is None:
            stamp = self.last if where is None else self.before(*where)
        else:
            self.last = stamp
        if stamp is None:
            return None
        if self._origin is None:
            self._origin = stamp if stamp > 1e6 else 0.0  # wall clock vs since-boot
        return round(stamp - self._origin, 6)


__all__ = ["LOOKBACK", "OfflineStamps"]
