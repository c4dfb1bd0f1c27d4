"""Drive `git bisect run` in a scratch clone; each step is judged here, in this process.

    clone (scratch, --no-checkout) ─► judge BAD (must fail; its failed stage is the one
    sought) ─► git bisect start BAD GOOD ─► git bisect run <step client>
          step client ──(unix socket, authkey)──► Bisector._judge(commit, work tree)
    ─► first bad commit (or the candidates when skips leave several) ─► reset, remove

The step client (`python -m xenpvh.bisect.step`) only asks; the Bisector holds the host,
the build cache and the judge, so a bisection boots the host once and every step's verdict
is decided by the same code as `plan run`'s.

Verdict → git bisect:  pass → 0 (good);  fail at BAD's stage → 1 (bad);  fail at another
stage → 125 (skip, and said so: that commit breaks something else);  broken → 125 (skip);
blocked → the bisection stops (exit 128 aborts `git bisect run`) with the reason.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Client, Listener
from pathlib import Path

from xenpvh.errors import BlockedError, BrokenError

log = logging.getLogger(__name__)

GOOD, BAD, SKIP, ABORT = 0, 1, 125, 128
ENV_SOCKET = "XENPVH_BISECT_SOCKET"
ENV_KEY = "XENPVH_BISECT_KEY"
_QUIT = "quit"
_SHA = re.compile(r"^[0-9a-f]{40}$")
_REF = re.compile(r"^[A-Za-z0-9_./^~@{}-]{1,200}$")


@dataclass(frozen=True)
class StepOutcome:
    """What one boot of one commit said: a verdict, the stage it failed at, why."""

    verdict: str  # pass | fail | broken | blocked
    failed_stage: str | None = None
    reason: str = ""
    artifacts: str | None = None


class Mark(enum.StrEnum):
    GOOD = "good"
    BAD = "bad"
    SKIP = "skip"
    OTHER_STAGE = "skip (fails at another stage)"
    STOP = "stop"


@dataclass(frozen=True)
class Step:
    commit: str
    outcome: StepOutcome
    mark: Mark
    seconds: float
    note: str = ""


@dataclass
class BisectResult:
    first_bad: str | None
    candidates: list[str]  # when skipped commits leave several
    stage: str | None  # the stage BAD fails at
    steps: list[Step] = field(default_factory=list)
    stopped: str | None = None  # why the bisection stopped (blocked), if it did
    log: str = ""
    plan_run_id: str | None = None  # the history's record of this bisection, if any

    @property
    def boots(self) -> int:
        return len(self.steps)


Judge = Callable[[str, Path], StepOutcome]


class Bisector:
    """Bisect `tree` (a git URL or local repository) between `good` and `bad`; `judge(commit,
    work_tree)` builds and boots one commit and returns its StepOutcome."""

    def __init__(self, tree: str, good: str, bad: str, judge: Judge) -> None:
        for what, ref in (("--good", good), ("--bad", bad)):
            if not _REF.match(ref) or ref.startswith("-"):
                raise BlockedError(f"{what} {ref!r} is not a git revision")
        self.tree = tree.removeprefix("git:")
        self.good, self.bad = good, bad
        self.judge = judge
        self.steps: list[Step] = []
        self.stage: str | None = None
        self.stopped: str | None = None
        self._lock = threading.Lock()

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> BisectResult:
        with self._scratch() as work:
            bad = self._rev(work, self.bad)
            good = self._rev(work, self.good)
            _git(work, "checkout", "-q", "--detach", bad)
            first = self._step(bad, work, reference=True)
            if first.mark is Mark.STOP:
                return self._result(None, [], first.note)
            if first.outcome.verdict != "fail":
                raise BlockedError(
                    f"--bad {self.bad} ({bad[:12]}) does not fail ({first.outcome.verdict}: "
                    f"{first.outcome.reason}); nothing to bisect"
                )
            self.stage = first.outcome.failed_stage
            _git(work, "bisect", "start", bad, good)
            out = self._bisect_run(work)
            bisect_log = _git(work, "bisect", "log", check=False)
            first_bad, candidates = _parse(out, work)
            _git(work, "bisect", "reset", "-q", check=False)
            result = self._result(first_bad, candidates, self.stopped)
            result.log = bisect_log
            return result

    def _result(self, first_bad: str | None, cands: list[str], stopped: str | None) -> BisectResult:
        return BisectResult(first_bad, cands, self.stage, list(self.steps), stopped)

    def _bisect_run(self, work: Path) -> str:
        key = secrets.token_bytes(32)
        sock_dir = Path(tempfile.mkdtemp(prefix="xenpvh-bisect-"))
        address = str(sock_dir / "judge.sock")
        listener = Listener(address, family="AF_UNIX", authkey=key)
        server = threading.Thread(target=self._serve, args=(listener, work), daemon=True)
        server.start()
        env = {**os.environ, ENV_SOCKET: address, ENV_KEY: key.hex()}
        try:
            proc = subprocess.run(
                ["git", "bisect", "run", sys.executable, "-m", "xenpvh.bisect.step"],
                cwd=work, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                check=False,
            )  # fmt: skip
        finally:
            with (
                contextlib.suppress(OSError, EOFError),
                Client(address, family="AF_UNIX", authkey=key) as conn,
            ):
                conn.send(_QUIT)  # wakes the server's accept(); it returns
            server.join(timeout=10)
            listener.close()
            shutil.rmtree(sock_dir, ignore_errors=True)
        log.info("git bisect run: exit %d\n%s%s", proc.returncode, proc.stdout, proc.stderr)
        return proc.stdout + proc.stderr

    def _serve(self, listener: Listener, work: Path) -> None:
        while True:
            try:
                conn = listener.accept()
            except (OSError, EOFError):
                return  # closed: the bisection is over
            with conn:
                try:
                    commit = str(conn.recv())
                    if commit == _QUIT:
                        return
                    if not _SHA.match(commit):
                        conn.send(ABORT)
                        continue
                    conn.send(self._code(self._step(commit, work)))
                except (EOFError, OSError):
                    continue

    # -- one step ---------------------------------------------------------------------------

    def _step(self, commit: str, work: Path, *, reference: bool = False) -> Step:
        t0 = time.monotonic()
        with self._lock:
            try:
                outcome = self.judge(commit, work)
            except BlockedError as e:
                outcome = StepOutcome("blocked", None, str(e))
            except BrokenError as e:
                outcome = StepOutcome("broken", None, str(e))
            mark, note = self._mark(outcome, reference)
            step = Step(commit, outcome, mark, time.monotonic() - t0, note)
            self.steps.append(step)
            if mark is Mark.STOP:
                self.stopped = note
            log.info("bisect %s: %s (%s) %s", commit[:12], mark, outcome.verdict, note)
            return step

    def _mark(self, o: StepOutcome, reference: bool) -> tuple[Mark, str]:
        if o.verdict == "blocked":
            return Mark.STOP, f"blocked at {'--bad' if reference else 'a step'}: {o.reason}"
        if o.verdict == "pass":
            return Mark.GOOD, ""
        if o.verdict == "broken":
            return Mark.SKIP, f"broken (infrastructure), skipped: {o.reason}"
        if reference or o.failed_stage == self.stage:
            return Mark.BAD, f"fails at {o.failed_stage}"
        return (
            Mark.OTHER_STAGE,
            f"fails at {o.failed_stage}, not at {self.stage} as --bad does: skipped",
        )

    @staticmethod
    def _code(step: Step) -> int:
        return {Mark.GOOD: GOOD, Mark.BAD: BAD, Mark.STOP: ABORT}.get(step.mark, SKIP)

    # -- git --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _scratch(self) -> Iterator[Path]:
        base = Path(tempfile.mkdtemp(prefix="xenpvh-bisect-tree-"))
        try:
            work = base / "tree"
            proc = subprocess.run(
                ["git", "clone", "-q", "--no-checkout", "--", self.tree, str(work)],
                capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
            )  # fmt: skip
            if proc.returncode != 0:
                raise BlockedError(f"--tree {self.tree}: git clone failed: {proc.stderr.strip()}")
            yield work
        finally:
            shutil.rmtree(base, ignore_errors=True)

    def _rev(self, work: Path, ref: str) -> str:
        proc = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
            cwd=work, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise BlockedError(f"{ref!r} is not a commit of {self.tree}")
        return proc.stdout.strip()


def _git(work: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=work, capture_output=True, text=True, stdin=subprocess.DEVNULL,
        check=False,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise BlockedError(f"git {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def _parse(out: str, work: Path) -> tuple[str | None, list[str]]:
    m = re.search(r"^([0-9a-f]{40}) is the first bad commit", out, re.M)
    if m:
        return m.group(1), [m.group(1)]
    if "only 'skip'ped commits left" in out:
        cands = re.findall(r"^([0-9a-f]{40})$", out, re.M)
        return None, cands
    return None, []


__all__ = [
    "ABORT",
    "BAD",
    "GOOD",
    "SKIP",
    "BisectResult",
    "Bisector",
    "Mark",
    "Step",
    "StepOutcome",
]
