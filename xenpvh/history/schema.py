"""The one schema, as versioned migrations.

`schema_version` holds the version applied; `migrate()` applies each missing migration in
its own transaction (with the version bump), so a database is always at a version of this
list, never between two.  SQL here is the common subset of SQLite and PostgreSQL.  Never
edit an applied migration: append one.
"""

from __future__ import annotations

import logging

from xenpvh.errors import BlockedError
from xenpvh.history.db import Database

log = logging.getLogger(__name__)

REAL = "DOUBLE PRECISION"  # SQLite reads it as REAL

MIGRATIONS: list[tuple[str, ...]] = [
    # 1: plan runs, runs, stages, attempts, artifacts
    (
        f"""CREATE TABLE plan_run (
            id TEXT PRIMARY KEY,
            plan TEXT NOT NULL,
            baseline TEXT NOT NULL,
            started_at {REAL} NOT NULL,
            finished_at {REAL},
            hosts TEXT NOT NULL DEFAULT '',
            summary TEXT
        )""",
        f"""CREATE TABLE run (
            id TEXT PRIMARY KEY,
            plan_run_id TEXT REFERENCES plan_run(id) ON DELETE CASCADE,
            point TEXT NOT NULL,
            profile TEXT NOT NULL,
            baseline TEXT NOT NULL DEFAULT '',
            host TEXT,
            verdict TEXT NOT NULL,
            failed_stage TEXT,
            reason TEXT NOT NULL,
            started_at {REAL} NOT NULL,
            finished_at {REAL} NOT NULL,
            artifacts TEXT,
            report TEXT,
            xen_build TEXT,
            guest_build TEXT,
            tree_commit TEXT,
            xen_version TEXT
        )""",
        "CREATE INDEX run_by_point ON run (point, baseline, started_at)",
        "CREATE INDEX run_by_plan_run ON run (plan_run_id)",
        f"""CREATE TABLE stage (
            run_id TEXT NOT NULL REFERENCES run(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            name TEXT NOT NULL,
            status TEXT NOT NULL,
            t {REAL},
            evidence TEXT NOT NULL DEFAULT '',
            detail TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (run_id, position)
        )""",
        """CREATE TABLE attempt (
            run_id TEXT NOT NULL REFERENCES run(id) ON DELETE CASCADE,
            number INTEGER NOT NULL,
            verdict TEXT NOT NULL,
            reason TEXT NOT NULL,
            emulation_fault TEXT,
            artifacts TEXT,
            PRIMARY KEY (run_id, number)
        )""",
        """CREATE TABLE artifact (
            run_id TEXT NOT NULL REFERENCES run(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            path TEXT NOT NULL,
            PRIMARY KEY (run_id, name)
        )""",
    ),
]
LATEST = len(MIGRATIONS)


def current_version(db: Database) -> int:
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    rows = db.query("SELECT version FROM schema_version")
    return int(rows[0][0]) if rows else 0


def migrate(db: Database, migrations: list[tuple[str, ...]] | None = None) -> int:
    """Bring `db` to the latest version; returns the version it is at."""
    steps = MIGRATIONS if migrations is None else migrations
    with db.transaction():
        version = current_version(db)
    if version > len(steps):
        raise BlockedError(
            f"history database {db.where} is at schema version {version}; this xenpvh knows "
            f"up to {len(steps)} (a newer xenpvh wrote it)"
        )
    for n in range(version + 1, len(steps) + 1):
        with db.transaction():
            # Re-read under the transaction (PostgreSQL: under a table lock; SQLite's BEGIN
            # IMMEDIATE already holds the write lock): another process may have migrated.
            if db.dialect == "postgresql":
                db.execute("LOCK TABLE schema_version IN ACCESS EXCLUSIVE MODE")
            if current_version(db) >= n:
                continue
            for statement in steps[n - 1]:
                db.execute(statement)
            db.execute("DELETE FROM schema_version")
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (n,))
        log.info("history database %s: migrated to schema version %d", db.where, n)
    return len(steps)


__all__ = ["LATEST", "MIGRATIONS", "current_version", "migrate"]
