"""The history writer: a run's RunReport into the results database, next to its files.

Called by the Session where the reports are written (`HistoryTarget` in the BootRequest
says where, and under which plan run and baseline).  A database that cannot be written is
logged, never turns the guest's verdict into something else; the plan run that asked for the
history notices the missing row.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from xenpvh.errors import XenpvhError
from xenpvh.history.store import AttemptRow, RunRecord, StageRow, open_store
from xenpvh.report.record import RunReport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HistoryTarget:
    """Where a run's history goes: `db` (postgresql://… or an SQLite path; None: the default
    file under the cache), the plan run it belongs to and the baseline it is compared on.
    `facts` are build ids and commits (xen_build, guest_build, tree_commit)."""

    db: str | None = None
    plan_run_id: str | None = None
    baseline: str = ""
    point: str | None = None  # the plan's point id (default: the report's point name)
    host: str | None = None  # the pool's name of the host (default: the report's)
    facts: Mapping[str, str] = field(default_factory=dict)


def history_record(
    target: HistoryTarget, report: RunReport, files: Mapping[str, Path] | None = None
) -> object:
    """The RunRecord the history keeps for `report`."""

    v = report.verdict
    meta = v.meta
    art = report.artifacts
    listed: dict[str, str] = {name: str(p) for name, p in (files or {}).items()}
    if art is not None and art.is_dir():
        for p in sorted(art.iterdir()):
            if p.is_file():
                listed.setdefault(p.name, str(p))
    facts = dict(target.facts)
    for key in ("xen_build", "guest_build", "tree_commit"):
        value = meta.get(key)
        if value is not None:
            facts.setdefault(key, str(value))
    xen_version = meta.get("xen_version")
    return RunRecord(
        id=report.run_id,
        plan_run_id=target.plan_run_id,
        point=target.point or f"{report.profile}.{report.point}",
        profile=report.profile,
        baseline=target.baseline,
        host=target.host or report.host,
        verdict=str(v.verdict),
        failed_stage=v.failed_stage,
        reason=v.reason,
        started_at=report.started_at,
        finished_at=report.finished_at,
        artifacts=str(art) if art is not None else None,
        report=str(art / "report.html") if art is not None else None,
        xen_build=facts.get("xen_build"),
        guest_build=facts.get("guest_build"),
        tree_commit=facts.get("tree_commit"),
        xen_version=str(xen_version) if xen_version is not None else None,
        stages=tuple(
            StageRow(s.name, str(s.status), s.t, s.evidence, s.detail) for s in report.stages
        ),
        attempts=tuple(
            AttemptRow(a.number, a.verdict, a.reason, a.emulation_fault, a.artifacts)
            for a in report.attempts
        ),
        files=listed,
    )


def write_history(
    target: HistoryTarget, report: RunReport, files: Mapping[str, Path] | None = None
) -> bool:
    """Record `report` in the history; False (logged) when the database refused."""

    try:
        with open_store(target.db) as store:
            store.record_run(history_record(target, report, files))  # type: ignore[arg-type]
    except (XenpvhError, OSError) as e:
        log.error("history: run %s not recorded: %s", report.run_id, e)
        return False
    except Exception as e:  # the database driver's own errors (sqlite3, psycopg)
        log.error("history: run %s not recorded: %s: %s", report.run_id, type(e).__name__, e)
        return False
    return True


__all__ = ["HistoryTarget", "history_record", "write_history"]
