"""A bisection in the results history: one plan run of its own, one run per step.

Each step's boot is recorded by its Session like any plan point's (stages, attempts,
artifacts), with the bisected commit as its `tree_commit`.  The bisection's plan run has the
baseline `bisect`, so its runs never stand in for last night's in `plan run`'s regression
comparison; its summary says what the bisection found.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field

from xenpvh.bisect.driver import BisectResult
from xenpvh.history.store import PlanRunRecord, open_store
from xenpvh.report.history import HistoryTarget

log = logging.getLogger(__name__)

BASELINE = "bisect"


@dataclass
class BisectHistory:
    """Begin the bisection's plan run; hand each step its HistoryTarget; finish with what was
    found."""

    db: str | None
    plan: str  # the plan's name
    point: str
    host: str
    plan_run_id: str = ""
    about: dict[str, object] = field(default_factory=dict)

    def begin(self, tree: str, good: str, bad: str) -> None:
        self.about = {"point": self.point, "tree": tree, "good": good, "bad": bad}
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        self.plan_run_id = f"bisect-{self.plan}-{stamp}-{os.getpid()}"
        with open_store(self.db) as store:
            store.begin_plan_run(
                PlanRunRecord(
                    self.plan_run_id,
                    self.plan,
                    BASELINE,
                    time.time(),
                    hosts=self.host,
                    summary=json.dumps(self.about),
                )
            )

    def target(self, commit: str) -> HistoryTarget:
        """Where the step that boots `commit` is recorded."""
        return HistoryTarget(
            db=self.db,
            plan_run_id=self.plan_run_id,
            baseline=BASELINE,
            point=self.point,
            host=self.host,
            facts={"tree_commit": commit},
        )

    def finish(self, result: BisectResult | None, error: str | None = None) -> None:
        """Close the plan run with the bisection's answer (or why it ended without one)."""
        if not self.plan_run_id:
            return
        doc = dict(self.about)
        if result is not None:
            doc.update(
                first_bad=result.first_bad,
                candidates=list(result.candidates),
                stage=result.stage,
                stopped=result.stopped,
                boots=result.boots,
            )
        if error is not None:
            doc["error"] = error
        try:
            with open_store(self.db) as store:
                store.finish_plan_run(self.plan_run_id, summary=json.dumps(doc))
        except Exception as e:  # the database driver's own errors too: never mask the result
            log.error("history: bisection %s not closed: %s", self.plan_run_id, e)


__all__ = ["BASELINE", "BisectHistory"]
