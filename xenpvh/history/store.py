"""Reading and writing the history: plan runs, runs (one per point boot) and their stages,
attempts and artifacts."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xenpvh.history.db import Database, open_db
from xenpvh.history.schema import migrate

VERDICTS = ("pass", "fail", "broken", "blocked")


@dataclass(frozen=True)
class StageRow:
    name: str
    status: str
    t: float | None = None
    evidence: str = ""
    detail: str = ""


@dataclass(frozen=True)
class AttemptRow:
    number: int
    verdict: str
    reason: str
    emulation_fault: str | None = None
    artifacts: str | None = None


@dataclass(frozen=True)
class RunRecord:
    """One decided boot of one point, as the history keeps it."""

    id: str
    point: str
    profile: str
    verdict: str
    reason: str
    started_at: float
    finished_at: float
    failed_stage: str | None = None
    plan_run_id: str | None = None
    baseline: str = ""
    host: str | None = None
    artifacts: str | None = None
    report: str | None = None  # report.html's path
    xen_build: str | None = None
    guest_build: str | None = None
    tree_commit: str | None = None
    xen_version: str | None = None
    stages: tuple[StageRow, ...] = ()
    attempts: tuple[AttemptRow, ...] = ()
    files: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "plan_run": self.plan_run_id,
            "point": self.point,
            "profile": self.profile,
            "baseline": self.baseline,
            "host": self.host,
            "verdict": self.verdict,
            "failed_stage": self.failed_stage,
            "reason": self.reason,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "artifacts": self.artifacts,
            "report": self.report,
            "xen_build": self.xen_build,
            "guest_build": self.guest_build,
            "tree_commit": self.tree_commit,
            "xen_version": self.xen_version,
            "stages": [s.__dict__ for s in self.stages],
            "attempts": [a.__dict__ for a in self.attempts],
            "files": dict(self.files),
        }


@dataclass(frozen=True)
class PlanRunRecord:
    id: str
    plan: str
    baseline: str
    started_at: float
    finished_at: float | None = None
    hosts: str = ""
    summary: str | None = None


_RUN_COLUMNS = (
    "id, plan_run_id, point, profile, baseline, host, verdict, failed_stage, reason, "
    "started_at, finished_at, artifacts, report, xen_build, guest_build, tree_commit, "
    "xen_version"
)


class HistoryStore:
    """The history in one database (migrated to the latest schema when opened)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        migrate(db)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ----------------------------------------------------------------------------

    def begin_plan_run(self, record: PlanRunRecord) -> None:
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO plan_run (id, plan, baseline, started_at, finished_at, hosts, "
                "summary) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.plan,
                    record.baseline,
                    record.started_at,
                    record.finished_at,
                    record.hosts,
                    record.summary,
                ),
            )

    def finish_plan_run(self, plan_run_id: str, *, summary: str | None = None) -> None:
        with self.db.transaction():
            self.db.execute(
                "UPDATE plan_run SET finished_at = ?, summary = ? WHERE id = ?",
                (time.time(), summary, plan_run_id),
            )

    def record_run(self, run: RunRecord) -> None:
        """Insert or replace one run (a run's reports are written twice: at the verdict and
        after the destroy; the history keeps the last), all in one transaction."""
        values = (
            run.id,
            run.plan_run_id,
            run.point,
            run.profile,
            run.baseline,
            run.host,
            run.verdict,
            run.failed_stage,
            run.reason,
            run.started_at,
            run.finished_at,
            run.artifacts,
            run.report,
            run.xen_build,
            run.guest_build,
            run.tree_commit,
            run.xen_version,
        )
        with self.db.transaction():
            for table in ("stage", "attempt", "artifact"):
                self.db.execute(f"DELETE FROM {table} WHERE run_id = ?", (run.id,))
            self.db.execute("DELETE FROM run WHERE id = ?", (run.id,))
            marks = ", ".join("?" for _ in values)
            self.db.execute(f"INSERT INTO run ({_RUN_COLUMNS}) VALUES ({marks})", values)
            for i, s in enumerate(run.stages):
                self.db.execute(
                    "INSERT INTO stage (run_id, position, name, status, t, evidence, detail) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (run.id, i, s.name, s.status, s.t, s.evidence, s.detail),
                )
            for a in run.attempts:
                self.db.execute(
                    "INSERT INTO attempt (run_id, number, verdict, reason, emulation_fault, "
                    "artifacts) VALUES (?, ?, ?, ?, ?, ?)",
                    (run.id, a.number, a.verdict, a.reason, a.emulation_fault, a.artifacts),
                )
            for name, path in sorted(run.files.items()):
                self.db.execute(
                    "INSERT INTO artifact (run_id, name, path) VALUES (?, ?, ?)",
                    (run.id, name, path),
                )

    # -- reading ----------------------------------------------------------------------------

    def runs(
        self,
        *,
        point: str | None = None,
        verdict: str | None = None,
        since: float | None = None,
        until: float | None = None,
        plan_run_id: str | None = None,
        baseline: str | None = None,
        limit: int = 1000,
        details: bool = True,
    ) -> list[RunRecord]:
        """Runs matching every filter given, newest first."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("point", point),
            ("verdict", verdict),
            ("plan_run_id", plan_run_id),
            ("baseline", baseline),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("started_at >= ?")
            params.append(since)
        if until is not None:
            where.append("started_at < ?")
            params.append(until)
        sql = f"SELECT {_RUN_COLUMNS} FROM run"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, id DESC LIMIT ?"
        rows = self.db.query(sql, (*params, int(limit)))
        return [self._run(row, details) for row in rows]

    def run(self, run_id: str) -> RunRecord | None:
        rows = self.db.query(f"SELECT {_RUN_COLUMNS} FROM run WHERE id = ?", (run_id,))
        return self._run(rows[0], True) if rows else None

    def plan_runs(self, *, plan: str | None = None, limit: int = 100) -> list[PlanRunRecord]:
        sql = "SELECT id, plan, baseline, started_at, finished_at, hosts, summary FROM plan_run"
        params: list[Any] = []
        if plan is not None:
            sql += " WHERE plan = ?"
            params.append(plan)
        sql += " ORDER BY started_at DESC, id DESC LIMIT ?"
        return [PlanRunRecord(*row) for row in self.db.query(sql, (*params, int(limit)))]

    def previous_run(self, point: str, baseline: str, before_plan_run: str) -> RunRecord | None:
        """The last run of `point` against `baseline` in an earlier plan run."""
        rows = self.db.query(
            f"SELECT {_RUN_COLUMNS} FROM run WHERE point = ? AND baseline = ? "
            "AND plan_run_id IS NOT NULL AND plan_run_id <> ? AND started_at < "
            "(SELECT started_at FROM plan_run WHERE id = ?) "
            "ORDER BY started_at DESC, id DESC LIMIT 1",
            (point, baseline, before_plan_run, before_plan_run),
        )
        return self._run(rows[0], True) if rows else None

    def _run(self, row: Sequence[Any], details: bool) -> RunRecord:
        (
            rid,
            plan_run_id,
            point,
            profile,
            baseline,
            host,
            verdict,
            failed_stage,
            reason,
            started_at,
            finished_at,
            artifacts,
            report,
            xen_build,
            guest_build,
            tree_commit,
            xen_version,
        ) = row
        stages: tuple[StageRow, ...] = ()
        attempts: tuple[AttemptRow, ...] = ()
        files: dict[str, str] = {}
        if details:
            stages = tuple(
                StageRow(*r)
                for r in self.db.query(
                    "SELECT name, status, t, evidence, detail FROM stage WHERE run_id = ? "
                    "ORDER BY position",
                    (rid,),
                )
            )
            attempts = tuple(
                AttemptRow(*r)
                for r in self.db.query(
                    "SELECT number, verdict, reason, emulation_fault, artifacts FROM attempt "
                    "WHERE run_id = ? ORDER BY number",
                    (rid,),
                )
            )
            files = dict(self.db.query("SELECT name, path FROM artifact WHERE run_id = ?", (rid,)))
        return RunRecord(
            id=rid,
            plan_run_id=plan_run_id,
            point=point,
            profile=profile,
            baseline=baseline,
            host=host,
            verdict=verdict,
            failed_stage=failed_stage,
            reason=reason,
            started_at=float(started_at),
            finished_at=float(finished_at),
            artifacts=artifacts,
            report=report,
            xen_build=xen_build,
            guest_build=guest_build,
            tree_commit=tree_commit,
            xen_version=xen_version,
            stages=stages,
            attempts=attempts,
            files=files,
        )


def open_store(target: str | Path | None = None) -> HistoryStore:
    """The history at `target` (postgresql://… or an SQLite path; default under the cache)."""
    return HistoryStore(open_db(target))


__all__ = [
    "VERDICTS",
    "AttemptRow",
    "HistoryStore",
    "PlanRunRecord",
    "RunRecord",
    "StageRow",
    "open_store",
]
