"""The developer's loop as a library: boot through the Session, keep a failed guest, and on
every change of the kernel end the previous kept guest and boot again.

The loop draws nothing.  Everything it does is an event given to one `on_event` callback:
its own (`DevRunStarted`, `DevRunFinished`, `GuestReaped`, `KeptGuestEnded`, `Watching`,
`FilesChanged`), the Session's (stage and verdict events) and the builders' progress events
(`xenpvh.util.progress`), in the order they happen.  `xenpvh dev` draws them with rich.

`FileWatch` polls files' stat (no inotify needed: builds write over NFS, into containers,
through editors that rename) and reports a change once the files stayed unchanged for a
debounce interval, so a kernel still being linked or copied is not booted half-written.
`stage_deltas` sets a run's stage times beside the previous run's.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xenpvh.check.verdict import StageStatus, Verdict
from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.base import Host
from xenpvh.run import keep
from xenpvh.run.events import VerdictEvent
from xenpvh.run.keep import KeptGuest
from xenpvh.run.request import BootRequest
from xenpvh.run.session import Session

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


# --------------------------------------------------------------------------- the loop


DevEventSink = Callable[[object], None]


@dataclass(frozen=True)
class GuestReaped:
    """A kept guest whose keep ran out was ended (by this command, on its host)."""

    record: KeptGuest


@dataclass(frozen=True)
class KeptGuestEnded:
    """The guest the previous run kept was destroyed before the next run (`error`: why it
    could not be)."""

    record: KeptGuest
    error: str | None = None


@dataclass(frozen=True)
class Watching:
    """The loop waits for any of `paths` to change."""

    paths: tuple[Path, ...]


@dataclass(frozen=True)
class FilesChanged:
    """`paths` changed and held still: a run follows."""

    paths: tuple[Path, ...]


@dataclass(frozen=True)
class DevRunStarted:
    """Run `number` of the loop starts (its Session's events follow)."""

    number: int


@dataclass(frozen=True)
class DevRun:
    """One run of the loop: its verdict beside the previous run's, and its times (wall clock:
    `changed_at` is the kernel file's mtime)."""

    number: int
    verdict: Verdict
    previous: Verdict | None
    started: float
    verdict_at: float
    changed_at: float | None

    @property
    def exit_code(self) -> int:
        return self.verdict.exit_code

    @property
    def meta(self) -> dict[str, Any]:
        return self.verdict.meta or {}

    @property
    def kept(self) -> KeptGuest | None:
        """The guest this run kept for `xenpvh attach`, if it kept one."""
        kept = self.meta.get("kept")
        return KeptGuest(**kept) if isinstance(kept, dict) else None

    @property
    def deltas(self) -> list[StageDelta]:
        return stage_deltas(self.previous, self.verdict)

    def document(self) -> dict[str, Any]:
        """The run as `dev --format json` prints it: the verdict, each stage's time against
        the previous run's, the loop's times, what was uploaded, the kept guest."""
        meta = self.meta
        return {
            "run": self.number,
            "run_id": meta.get("run_id"),
            "verdict": str(self.verdict.verdict),
            "failed_stage": self.verdict.failed_stage,
            "reason": self.verdict.reason,
            "exit_code": self.verdict.exit_code,
            "stages": [
                {
                    "name": d.stage,
                    "status": d.status,
                    "t": d.now,
                    "previous_t": d.before,
                    "delta": d.delta,
                }
                for d in self.deltas
            ],
            "start_to_verdict_s": round(self.verdict_at - self.started, 3),
            "kernel_written_to_verdict_s": (
                None if self.changed_at is None else round(self.verdict_at - self.changed_at, 3)
            ),
            "uploads": meta.get("uploads") or {},
            "uploaded_bytes": meta.get("uploaded_bytes", 0),
            "kept": meta.get("kept"),
            "artifacts": meta.get("artifacts"),
        }


@dataclass(frozen=True)
class DevRunFinished:
    """Run `run.number` has its verdict (and its guest is kept or destroyed)."""

    run: DevRun


def _ignore(event: object) -> None:
    pass


class DevLoop:
    """Runs of one dev command, each a Session on the same host, each compared with the one
    before; the guest the previous run kept is ended before the next run boots."""

    def __init__(
        self,
        request: BootRequest,
        *,
        artifacts_root: Path,
        on_event: DevEventSink = _ignore,
        session_options: dict[str, Any] | None = None,
    ) -> None:
        self.request = request
        self.artifacts_root = artifacts_root
        self.on_event = on_event
        self.session_options = session_options or {}  # e.g. XenStore clients in tests
        self.previous: Verdict | None = None
        self.kept: KeptGuest | None = None
        self.runs = 0

    def reap(self, host: Host) -> list[KeptGuest]:
        """End the kept guests on `host` whose keep ran out (anyone's: the keep is the rule)."""
        reaped = keep.reap_expired(host)
        for rec in reaped:
            self.on_event(GuestReaped(rec))
        return reaped

    def end_previous_kept(self, host: Host) -> None:
        """Destroy the guest the previous run kept: the next run replaces it."""
        if self.kept is None:
            return
        rec, self.kept = self.kept, None
        try:
            keep.end(host, rec)
        except (BlockedError, BrokenError) as e:
            self.on_event(KeptGuestEnded(rec, error=str(e)))
        else:
            self.on_event(KeptGuestEnded(rec))

    def run_once(self, host: Host, *, changed_at: float | None) -> DevRun:
        """One boot of the request on `host`, through the Session."""
        self.runs += 1
        self.on_event(DevRunStarted(self.runs))
        verdict_at: list[float] = []
        started = time.time()

        def on_event(event: object) -> None:
            if isinstance(event, VerdictEvent):
                verdict_at.append(time.time())
            self.on_event(event)

        session = Session(
            self.request,
            on_event=on_event,
            host=host,
            progress=self.on_event,
            artifacts_root=self.artifacts_root,
            **self.session_options,
        )
        verdict = session.run().verdict
        run = DevRun(
            number=self.runs,
            verdict=verdict,
            previous=self.previous,
            started=started,
            verdict_at=verdict_at[0] if verdict_at else time.time(),
            changed_at=changed_at,
        )
        self.previous = verdict
        if run.kept is not None:
            self.kept = run.kept
        self.on_event(DevRunFinished(run))
        return run

    def watch(
        self,
        host: Host,
        paths: Sequence[Path],
        *,
        debounce: float,
        file_watch: FileWatch | None = None,
        runs: int | None = None,
    ) -> None:
        """Boot again whenever `paths` changed and held still for `debounce` seconds; forever,
        or `runs` times (a test's bound)."""
        watch = file_watch or FileWatch(list(paths), debounce=debounce)
        done = 0
        while runs is None or done < runs:
            self.on_event(Watching(tuple(paths)))
            changed = watch.wait()
            assert changed is not None  # no timeout given
            self.on_event(FilesChanged(tuple(changed)))
            self.end_previous_kept(host)
            self.run_once(host, changed_at=latest_mtime(changed))
            done += 1


def latest_mtime(paths: Sequence[Path]) -> float | None:
    """The newest modification time of `paths` (None when none can be read)."""
    times = []
    for p in paths:
        with contextlib.suppress(OSError):
            times.append(p.stat().st_mtime)
    return max(times) if times else None


__all__ = [
    "DevEventSink",
    "DevLoop",
    "DevRun",
    "DevRunFinished",
    "DevRunStarted",
    "FileWatch",
    "FilesChanged",
    "GuestReaped",
    "KeptGuestEnded",
    "StageDelta",
    "Watching",
    "latest_mtime",
    "signature",
    "stage_deltas",
]
