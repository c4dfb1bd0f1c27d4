"""The results history against SQLite and a real PostgreSQL server (started by the tests):
the same tests, parametrized over both."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgserver import PostgresServer, pg_bindir, postgres_server

from xenpvh.check.verdict import StageResult, StageStatus, Verdict, VerdictValue
from xenpvh.errors import BlockedError
from xenpvh.history import open_store
from xenpvh.history.db import open_db
from xenpvh.history.schema import LATEST, MIGRATIONS, current_version, migrate
from xenpvh.history.store import PlanRunRecord
from xenpvh.report import Attempt, RunReport
from xenpvh.report.history import HistoryTarget, write_history


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    if pg_bindir() is None:
        pytest.skip("PostgreSQL is not installed (scripts/setup installs it)")
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "history.sqlite")
    return request.getfixturevalue("pg").new_database()


def _report(tmp_path: Path, run_id: str, verdict: str = "pass", t0: float = 1000.0) -> RunReport:
    art = tmp_path / run_id
    art.mkdir(parents=True, exist_ok=True)
    (art / "console.log").write_text("Booting kernel on Xen PVH\n")
    failed = "ap-launch" if verdict == "fail" else None
    stages = [
        StageResult("early-init", StageStatus.PASSED, 0.5, "Booting kernel on Xen PVH"),
        StageResult(
            "ap-launch",
            StageStatus.FAILED if failed else StageStatus.PASSED,
            2.0,
            "smp: Brought up 1 node, 1 CPU",
            'expected 4 CPUs, saw 1; it\'s <b>"quoted"</b>',
        ),
    ]
    v = Verdict(
        VerdictValue(verdict), f"reason of {run_id}", failed, stages, {"xen_version": "4.17.5"}
    )
    return RunReport(
        verdict=v,
        profile="linux-pvh",
        point="xl-vcpus4-mem256",
        run_id=run_id,
        host="nested",
        started_at=t0,
        finished_at=t0 + 30,
        artifacts=art,
        attempts=(
            Attempt(1, "broken", "fault", "svm-double-delivery", "attempt-1"),
            Attempt(2, verdict, "final"),
        ),
    )


def test_migrations_create_the_schema_once(db_url: str) -> None:
    db = open_db(db_url)
    try:
        assert migrate(db) == LATEST
        assert migrate(db) == LATEST  # idempotent
        assert current_version(db) == LATEST
        assert db.query("SELECT count(*) FROM run") == [(0,)]
    finally:
        db.close()


def test_a_failing_migration_leaves_the_previous_version(db_url: str) -> None:
    db = open_db(db_url)
    try:
        broken = [*MIGRATIONS, ("CREATE TABLE extra (x INTEGER)", "CREATE TABLE oops (")]
        with pytest.raises(Exception):  # noqa: B017 - the driver's syntax error
            migrate(db, broken)
        assert current_version(db) == LATEST
        # The half of migration 2 that ran was rolled back with it.
        with pytest.raises(Exception):  # noqa: B017
            db.query("SELECT x FROM extra")
    finally:
        db.close()


def test_a_newer_schema_is_refused_by_name(db_url: str) -> None:
    db = open_db(db_url)
    try:
        migrate(db)
        with db.transaction():
            db.execute("UPDATE schema_version SET version = ?", (LATEST + 5,))
        with pytest.raises(BlockedError, match=f"schema version {LATEST + 5}"):
            migrate(db)
    finally:
        db.close()


def test_a_run_round_trips_with_stages_attempts_and_files(db_url: str, tmp_path: Path) -> None:
    report = _report(tmp_path, "run-1", "fail")
    target = HistoryTarget(
        db=db_url,
        baseline="xen-4.17",
        point="linux-pvh.xl.vcpus4",
        facts={"xen_build": "abc123", "tree_commit": "deadbeef"},
    )
    files = {"verdict.json": report.artifacts / "verdict.json"}
    assert write_history(target, report, files)
    # A second write of the same run (after the destroy) replaces it, not duplicates it.
    assert write_history(target, report, files)
    with open_store(db_url) as store:
        runs = store.runs()
        assert [r.id for r in runs] == ["run-1"]
        r = runs[0]
        assert (r.verdict, r.failed_stage, r.point) == ("fail", "ap-launch", "linux-pvh.xl.vcpus4")
        assert (r.xen_build, r.tree_commit, r.xen_version) == ("abc123", "deadbeef", "4.17.5")
        assert [s.name for s in r.stages] == ["early-init", "ap-launch"]
        assert r.stages[1].detail == 'expected 4 CPUs, saw 1; it\'s <b>"quoted"</b>'
        assert [(a.number, a.verdict) for a in r.attempts] == [(1, "broken"), (2, "fail")]
        assert r.attempts[0].emulation_fault == "svm-double-delivery"
        assert r.files["console.log"].endswith("run-1/console.log")
        assert "verdict.json" in r.files
        json.dumps(r.as_dict())


def test_queries_by_point_verdict_and_range(db_url: str, tmp_path: Path) -> None:
    with open_store(db_url) as store:
        store.begin_plan_run(PlanRunRecord("night-1", "nightly", "b", 900.0))
        store.begin_plan_run(PlanRunRecord("night-2", "nightly", "b", 1900.0))
    for run_id, verdict, t0, night, point in (
        ("a1", "pass", 1000.0, "night-1", "p1"),
        ("b1", "pass", 1001.0, "night-1", "p2"),
        ("a2", "fail", 2000.0, "night-2", "p1"),
        ("b2", "pass", 2001.0, "night-2", "p2"),
    ):
        t = HistoryTarget(db=db_url, plan_run_id=night, baseline="b", point=point)
        assert write_history(t, _report(tmp_path, run_id, verdict, t0))
    with open_store(db_url) as store:
        assert [r.id for r in store.runs(point="p1")] == ["a2", "a1"]
        assert [r.id for r in store.runs(verdict="fail")] == ["a2"]
        assert [r.id for r in store.runs(since=1500.0)] == ["b2", "a2"]
        assert [r.id for r in store.runs(until=1500.0)] == ["b1", "a1"]
        assert [r.id for r in store.runs(plan_run_id="night-1")] == ["b1", "a1"]
        prev = store.previous_run("p1", "b", "night-2")
        assert prev is not None and prev.id == "a1"
        assert store.previous_run("p1", "other-baseline", "night-2") is None
        assert store.previous_run("p1", "b", "night-1") is None
        assert [p.id for p in store.plan_runs(plan="nightly")] == ["night-2", "night-1"]


def test_an_unwritable_history_does_not_raise(tmp_path: Path) -> None:
    bad = tmp_path / "file"
    bad.write_text("x")
    target = HistoryTarget(db=str(bad / "history.sqlite"))
    assert write_history(target, _report(tmp_path, "r")) is False


def test_a_wrong_url_is_blocked_by_name() -> None:
    with pytest.raises(BlockedError, match="mysql://u:\\*\\*\\*@h/db"):
        open_db("mysql://u:secret@h/db")


def test_concurrent_writers_all_land(db_url: str, tmp_path: Path) -> None:
    """Workers of a plan run (one per host) write at the same time."""
    with open_store(db_url):
        pass  # migrated once, before the writers start
    results: list[bool] = []

    def writer(i: int) -> None:
        t = HistoryTarget(db=db_url, point=f"p{i}")
        results.append(write_history(t, _report(tmp_path, f"w{i}", t0=1000.0 + i)))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results == [True] * 6
    with open_store(db_url) as store:
        assert len(store.runs()) == 6


def test_history_cli_filters_and_json(tmp_path: Path) -> None:
    import subprocess
    import sys

    db = str(tmp_path / "h.sqlite")
    for run_id, verdict, t0 in (("a", "pass", 1_700_000_000.0), ("b", "fail", 1_800_000_000.0)):
        assert write_history(
            HistoryTarget(db=db, point="p1"), _report(tmp_path, run_id, verdict, t0)
        )
    root = Path(__file__).resolve().parents[1]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "xenpvh", "history", "--db", db, *args],
            capture_output=True, text=True, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
            timeout=60,
        )  # fmt: skip

    out = cli("--verdict", "fail", "--format", "json")
    assert out.returncode == 0, out.stderr
    runs = json.loads(out.stdout)["runs"]
    assert [r["id"] for r in runs] == ["b"] and runs[0]["stages"][1]["status"] == "failed"
    out = cli("--until", "2025-01-01", "--format", "json")
    assert [r["id"] for r in json.loads(out.stdout)["runs"]] == ["a"]
    out = cli("--point", "p1")
    assert out.returncode == 0 and "2 runs" in out.stdout
    out = cli("--since", "yesterday", "--format", "json")
    assert out.returncode == 2 and "--since" in json.loads(out.stdout)["reason"]
