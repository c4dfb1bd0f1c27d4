"""The developer's loop: re-run when the kernel changes, and compare stage times.

`FileWatch` polls files' stat (no inotify needed: builds write over NFS, into containers,
through editors that rename) and reports a change once the files stayed unchanged for a
debounce interval, so a kernel still being linked or copied is not booted half-written.
`stage_deltas` sets a run's stage times beside the previous run's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from xenpvh.check.verdict import StageStatus, Verdict

Signature = tuple[int, int, int, int] | None  # (device, inode, size, mtime_ns); None: missing


def signature(path: Path) -> Signature:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class FileWatch:
    """Wait until any of `paths` changed and then held still for `debounce` seconds."""

    paths: Sequence[Path]
    debounce: float = 1.0
    poll: float = 0.5
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._seen = self.snapshot()

    def snapshot(self) -> dict[Path, Signature]:
        return {Path(p): signature(Path(p)) for p in self.paths}

    def wait(self, timeout: float | None = None) -> list[Path] | None:
        """The paths that changed (once settled), or None when `timeout` passed first.  A
        file that disappears (an editor's rename, `make` relinking) counts once it is back."""
        start = self.clock()
        while True:
            now = self.snapshot()
            changed = [p for p, sig in now.items() if sig != self._seen[p] and sig is not None]
            if changed:
                settled = self._settle(now)
                changed = [p for p, sig in settled.items() if sig != self._seen[p]]
                self._seen = settled
                if changed and all(sig is not None for sig in settled.values()):
                    return changed
            if timeout is not None and self.clock() - start >= timeout:
                return None
            self.sleep(self.poll)

    def _settle(self, now: dict[Path, Signature]) -> dict[Path, Signature]:
        """Poll until the signatures held still for `debounce` seconds."""
        still_since = self.clock()
        while self.clock() - still_since < self.debounce:
            self.sleep(min(self.poll, self.debounce))
            later = self.snapshot()
            if later != now:
                now, still_since = later, self.clock()
        return now


@dataclass(frozen=True)
class StageDelta:
    stage: str
    before: float | None  # the previous run's time of the stage (None: not passed)
    now: float | None
    status: str  # this run's status of the stage

    @property
    def delta(self) -> float | None:
        if self.before is None or self.now is None:
            return None
        return round(self.now - self.before, 3)


def stage_deltas(previous: Verdict | None, current: Verdict) -> list[StageDelta]:
    """Each stage of `current` with its time and the previous run's (when it had one)."""
    before = {}
    if previous is not None:
        before = {s.name: s.t for s in previous.stages if s.status is StageStatus.PASSED}
    return [
        StageDelta(
            stage=s.name,
            before=before.get(s.name),
            now=s.t if s.status is StageStatus.PASSED else None,
            status=str(s.status),
        )
        for s in current.stages
    ]


__all__ = ["FileWatch", "StageDelta", "signature", "stage_deltas"]
