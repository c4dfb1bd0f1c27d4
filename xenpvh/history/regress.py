"""Regressions: each point of a plan run against the last run of the same point on the
same baseline.

    previous   now     category            a regression?
    pass|none  pass    pass                no   (flaky when an earlier attempt was broken)
    fail       pass    fixed               no
    pass       fail    new-failure         yes
    fail       fail    still-failing       no   (the stage it fails at is said)
    none       fail    failing-new-point   no   (never passed: nothing regressed)
    any        broken  infrastructure      no   (apart: the guest was not judged)
    any        blocked infrastructure      no
    broken|blocked before: the last *decided* (pass/fail) run is the reference.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from xenpvh.history.store import HistoryStore, RunRecord


class Category(enum.StrEnum):
    PASS = "pass"
    FLAKY = "flaky"
    FIXED = "fixed"
    NEW_FAILURE = "new-failure"
    STILL_FAILING = "still-failing"
    FAILING_NEW_POINT = "failing-new-point"
    INFRASTRUCTURE = "infrastructure"
    NOT_RUN = "not-run"


# Exit codes of `plan run` (documented in its --help and the README).
EXIT_NO_REGRESSION = 0
EXIT_REGRESSION = 1
EXIT_BLOCKED = 2
EXIT_INFRASTRUCTURE = 3


@dataclass(frozen=True)
class PointResult:
    point: str
    category: Category
    current: RunRecord | None
    previous: RunRecord | None

    @property
    def note(self) -> str:
        c, p = self.current, self.previous
        if c is None:
            return "no run recorded (no healthy host left, or the run was interrupted)"
        if self.category is Category.NEW_FAILURE:
            assert p is not None
            return f"fails at {c.failed_stage} (passed in run {p.id}): {c.reason}"
        if self.category is Category.STILL_FAILING:
            assert p is not None
            same = c.failed_stage == p.failed_stage
            where = "the same stage" if same else f"now, before at {p.failed_stage}"
            return f"fails at {c.failed_stage} ({where}): {c.reason}"
        if self.category is Category.FLAKY:
            broken = [a for a in c.attempts if a.verdict == "broken"]
            return f"passed after {len(broken)} broken attempt(s): {broken[0].reason}"
        if self.category is Category.INFRASTRUCTURE:
            return f"{c.verdict}: {c.reason}"
        if self.category is Category.FIXED:
            assert p is not None
            return f"passes (failed at {p.failed_stage} in run {p.id})"
        if self.category is Category.FAILING_NEW_POINT:
            return f"fails at {c.failed_stage} (no earlier pass): {c.reason}"
        return "passes"


def classify(current: RunRecord | None, previous: RunRecord | None) -> Category:
    if current is None:
        return Category.NOT_RUN
    if current.verdict in ("broken", "blocked"):
        return Category.INFRASTRUCTURE
    was = previous.verdict if previous is not None else None
    if current.verdict == "pass":
        if any(a.verdict == "broken" for a in current.attempts):
            return Category.FLAKY
        return Category.FIXED if was == "fail" else Category.PASS
    if was == "pass":
        return Category.NEW_FAILURE
    if was == "fail":
        return Category.STILL_FAILING
    return Category.FAILING_NEW_POINT


def final_runs(runs: Iterable[RunRecord]) -> dict[str, RunRecord]:
    """The deciding run of each point in one plan run: the last one to finish (a point
    re-run on another host after its host broke has two)."""
    best: dict[str, RunRecord] = {}
    for r in runs:
        if r.point not in best or r.finished_at >= best[r.point].finished_at:
            best[r.point] = r
    return best


def last_decided(
    store: HistoryStore, point: str, baseline: str, plan_run: str, started: dict[str, float]
) -> RunRecord | None:
    """The last pass/fail run of `point` on `baseline` in a plan run before `plan_run`
    (`started`: plan run id -> its start)."""
    limit = started.get(plan_run, float("inf"))
    for r in store.runs(point=point, baseline=baseline, limit=500, details=False):
        if r.plan_run_id in (None, plan_run) or r.verdict not in ("pass", "fail"):
            continue
        if started.get(r.plan_run_id or "", float("inf")) < limit:
            return store.run(r.id)
    return None


def compare(
    store: HistoryStore, plan_run: str, baseline: str, points: Sequence[str]
) -> list[PointResult]:
    current = final_runs(store.runs(plan_run_id=plan_run, limit=100_000, details=False))
    started = {p.id: p.started_at for p in store.plan_runs(limit=100_000)}
    results = []
    for point in points:
        now = current.get(point)
        if now is not None:
            now = store.run(now.id)
        prev = last_decided(store, point, baseline, plan_run, started)
        results.append(PointResult(point, classify(now, prev), now, prev))
    return results


def exit_code(results: Sequence[PointResult]) -> int:
    """1 when a point regressed; else 3 when a point could not be decided; else 0."""
    cats = {r.category for r in results}
    if Category.NEW_FAILURE in cats:
        return EXIT_REGRESSION
    if cats & {Category.INFRASTRUCTURE, Category.NOT_RUN}:
        return EXIT_INFRASTRUCTURE
    return EXIT_NO_REGRESSION


__all__ = [
    "EXIT_BLOCKED",
    "EXIT_INFRASTRUCTURE",
    "EXIT_NO_REGRESSION",
    "EXIT_REGRESSION",
    "Category",
    "PointResult",
    "classify",
    "compare",
    "exit_code",
    "final_runs",
]
