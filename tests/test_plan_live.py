"""A small plan run live on the nested host, a regression introduced and detected, then
bisected.

The guest side lives in a git repository made here (a guest-kit configuration: the file
`cmdline` is added to the kernel command line).  Night 1 runs the plan at c0 and passes;
c2 adds `maxcpus=1`, so at c3 the 2-vCPU point brings up one CPU: night 2 fails at
ap-launch, `plan run` says new-failure (exit 1) and names the commits to bisect; the bisect
finds c2 in at most 4 boots.

One nested host serves it all (started detached here, or the one `xenpvh host nested up`
left running): the plan's pytest-xdist worker and the bisection lease it in turn.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenpvh.history.regress import Category
from xenpvh.plan.runner import PlanRunner

pytestmark = pytest.mark.xen

ROOT = Path(__file__).resolve().parents[1]
POINT = "linux-pvh.xl.vcpus2.mem256.disks1.vifs1.xen-host.kernel-kit"


@pytest.fixture(scope="module")
def nested_up() -> Iterator[None]:
    """A detached nested host for the module (the plan run's workers are processes)."""
    from xenpvh.host.nested import NestedHost
    from xenpvh.host.open import running_nested_host

    if running_nested_host(None, "patched") is not None:
        yield  # someone's `host nested up`: used, left up
        return
    host = NestedHost()
    t0 = time.monotonic()
    host.up(detach=True)
    print(f"nested host up in {time.monotonic() - t0:.1f}s")
    try:
        yield
    finally:
        host.down()


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def _record(name: str, row: dict) -> None:
    print(json.dumps({"test": name, **row}))
    out = os.environ.get("XENPVH_LIVE_TIMES")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps({"test": name, **row}) + "\n")


# Nightly tier (tests/conftest.py): two plan nights and a bisection, 6-11 boots' worth of CI
# (438-659 s here); the scheduler, regressions and bisection logic have unit tests in CI.
@pytest.mark.slow
def test_plan_run_detects_a_regression_and_bisect_finds_it(nested_up: None, tmp_path: Path) -> None:
    repo = tmp_path / "guest-config"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "ci@example.org")
    _git(repo, "config", "user.name", "ci")
    commits = []
    for i, line in enumerate(
        # Harmless arguments, then maxcpus=1 (c2).  Nothing that quiets the kernel's console
        # (loglevel=4 would hide the very lines the stages are judged by).
        ["audit=0", "audit=0 nowatchdog", "audit=0 nowatchdog maxcpus=1", "maxcpus=1 panic=30"]
    ):
        (repo / "cmdline").write_text(line + "\n")
        _git(repo, "add", "cmdline")
        _git(repo, "commit", "-q", "-m", f"c{i}: {line}")
        commits.append(_git(repo, "rev-parse", "HEAD"))
    plan = tmp_path / "live.toml"
    plan.write_text(
        'name = "live"\n[defaults]\nattempts = 2\ntimeout = 300\n'
        f'[[kernel]]\nname = "kit"\ncmdline_repo = "{repo}"\n'
        '[[matrix]]\nprofile = "linux-pvh"\ntoolstack = "xl"\nvcpus = 2\n'
    )
    db = str(tmp_path / "history.sqlite")

    def night(commit: str):
        _git(repo, "checkout", "-q", commit)
        t0 = time.monotonic()
        result = PlanRunner(
            plan=str(plan), hosts="nested:1", db=db, out_root=tmp_path / "runs",
            env={"PYTHONPATH": str(ROOT)},
        ).run()  # fmt: skip
        return result, time.monotonic() - t0

    first, wall1 = night(commits[0])
    (r1,) = first.results
    assert r1.category is Category.PASS, r1.note
    assert first.exit_code == 0
    assert r1.current is not None and r1.current.tree_commit == commits[0]
    assert r1.current.host == "nested"

    second, wall2 = night(commits[3])
    (r2,) = second.results
    assert r2.category is Category.NEW_FAILURE, r2.note
    assert r2.current is not None and r2.current.failed_stage == "ap-launch"
    assert second.exit_code == 1
    from xenpvh.cli.plan_run import bisect_command

    command = bisect_command(r2, str(plan))
    assert command is not None
    assert f"--good {commits[0]} --bad {commits[3]}" in command
    assert "--role cmdline-file:cmdline" in command
    html = second.files["summary.html"].read_text()
    assert html.count('<td class="cell ') == 2 and "new-failure" in html

    from xenpvh.plan.bisection import bisect_point as bisect

    t0 = time.monotonic()
    found = bisect(
        tree=str(repo), good=commits[0], bad=commits[3], plan=str(plan), point=POINT,
        role="cmdline-file:cmdline", artifacts=tmp_path / "bisect", db=db,
    )  # fmt: skip
    wall3 = time.monotonic() - t0
    steps = [
        (s.commit[:8], s.outcome.verdict, s.outcome.failed_stage, str(s.mark)) for s in found.steps
    ]
    _record(
        "plan-live",
        {
            "night1_wall_s": round(wall1, 1),
            "night2_wall_s": round(wall2, 1),
            "bisect_wall_s": round(wall3, 1),
            "bisect_steps": steps,
            "spread": second.spread(),
        },
    )
    assert found.first_bad == commits[2], steps
    assert found.stage == "ap-launch"
    assert found.boots <= 4
    # The bisection is in the history: its own plan run, one run per step with its commit.
    from xenpvh.history import open_store

    with open_store(db) as store:
        runs = store.runs(plan_run_id=found.plan_run_id, limit=100, details=False)
    assert sorted((r.tree_commit, r.verdict) for r in runs) == sorted(
        (s.commit, s.outcome.verdict) for s in found.steps
    )
