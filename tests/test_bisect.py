"""The bisection driver with fake verdicts: the same Bisector and `git bisect run` as the
live bisection, over a real git repository made here; the judge reads the commit's file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from xenpvh.bisect.driver import Bisector, Mark, StepOutcome
from xenpvh.errors import BlockedError, BrokenError


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def _repo(tmp_path: Path, contents: list[str]) -> tuple[Path, list[str]]:
    """One commit per entry, writing `cmdline`; returns the repo and the commits in order."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "t@example.org")
    _git(repo, "config", "user.name", "t")
    commits = []
    for i, text in enumerate(contents):
        (repo / "cmdline").write_text(text + "\n")
        _git(repo, "add", "cmdline")
        _git(repo, "commit", "-q", "-m", f"c{i}: {text}")
        commits.append(_git(repo, "rev-parse", "HEAD"))
    return repo, commits


def judge_by_content(seen: list[str]):
    """A fake boot: the cmdline file decides the verdict, as the guest would."""

    def judge(commit: str, work: Path) -> StepOutcome:
        seen.append(commit)
        text = (work / "cmdline").read_text()
        if "BLOCK" in text:
            raise BlockedError("kernel missing at this commit")
        if "FLAKE" in text:
            raise BrokenError("host died")
        if "NOPANIC" in text:
            return StepOutcome("fail", "early-init", "panic before AP bring-up")
        if "maxcpus=1" in text:
            return StepOutcome("fail", "ap-launch", "expected 4 CPUs, saw 1")
        return StepOutcome("pass")

    return judge


def test_finds_the_commit_that_breaks_ap_bring_up(tmp_path: Path) -> None:
    repo, c = _repo(
        tmp_path, ["console=hvc0", "quiet", "loglevel=7", "maxcpus=1", "maxcpus=1 debug"]
    )
    seen: list[str] = []
    result = Bisector(str(repo), c[0], c[4], judge_by_content(seen)).run()
    assert result.first_bad == c[3]
    assert result.stage == "ap-launch"
    assert result.steps[0].commit == c[4] and result.steps[0].mark is Mark.BAD
    assert result.boots <= 4
    assert seen == [s.commit for s in result.steps]
    assert "first bad commit" not in result.log or c[3] in result.log


def test_a_broken_step_is_skipped_and_another_stage_is_marked_so(tmp_path: Path) -> None:
    repo, c = _repo(
        tmp_path,
        ["ok", "FLAKE", "NOPANIC", "maxcpus=1", "maxcpus=1 x"],
    )
    result = Bisector(str(repo), c[0], c[4], judge_by_content([])).run()
    marks = {s.commit: s for s in result.steps}
    # c1 (broken) and c2 (fails at early-init, not ap-launch) are skipped: git can then only
    # say the first bad commit is one of the skipped ones or c3.
    if c[2] in marks:
        assert marks[c[2]].mark is Mark.OTHER_STAGE
        assert "fails at early-init, not at ap-launch" in marks[c[2]].note
    if c[1] in marks:
        assert marks[c[1]].mark is Mark.SKIP
    assert result.first_bad == c[3] or c[3] in result.candidates


def test_blocked_stops_the_bisection_with_the_reason(tmp_path: Path) -> None:
    repo, c = _repo(tmp_path, ["ok", "ok2", "BLOCK", "maxcpus=1", "maxcpus=1 y"])
    result = Bisector(str(repo), c[0], c[4], judge_by_content([])).run()
    assert result.first_bad is None
    assert result.stopped is not None and "kernel missing at this commit" in result.stopped
    assert result.steps[-1].mark is Mark.STOP


def test_bad_that_passes_is_blocked(tmp_path: Path) -> None:
    repo, c = _repo(tmp_path, ["ok", "ok2"])
    with pytest.raises(BlockedError, match="does not fail"):
        Bisector(str(repo), c[0], c[1], judge_by_content([])).run()


def test_bad_refs_and_trees_are_blocked(tmp_path: Path) -> None:
    repo, c = _repo(tmp_path, ["ok", "maxcpus=1"])
    with pytest.raises(BlockedError, match="not a git revision"):
        Bisector(str(repo), "--upload-pack=x", c[1], judge_by_content([]))
    with pytest.raises(BlockedError, match="not a commit"):
        Bisector(str(repo), "nope", c[1], judge_by_content([])).run()
    with pytest.raises(BlockedError, match="git clone failed"):
        Bisector(str(tmp_path / "absent"), c[0], c[1], judge_by_content([])).run()


# --------------------------------------------------------------------- the history's record


class VerdictBySession:
    """Stands in for a boot at the Session boundary: the command line the judge built decides
    the verdict, as the guest would, and the run goes into the history the way the real
    Session writes it (report.history.write_history)."""

    def __init__(self, request, host=None, guest_kit=None) -> None:
        self.request = request

    def run(self):
        import time as _time

        from xenpvh.check.verdict import StageResult, StageStatus, Verdict, VerdictValue
        from xenpvh.report.history import write_history
        from xenpvh.report.record import RunReport
        from xenpvh.run.session import SessionResult

        req = self.request
        art = Path(req.artifacts)
        art.mkdir(parents=True)
        if "maxcpus=1" in req.cmdline_append:
            v = Verdict(
                VerdictValue.FAIL, "ap-launch: APs seen {}, expected {1}", "ap-launch",
                [StageResult("early-init", StageStatus.PASSED),
                 StageResult("ap-launch", StageStatus.FAILED)],
            )  # fmt: skip
        else:
            v = Verdict(VerdictValue.PASS, "all stages passed", None,
                        [StageResult("early-init", StageStatus.PASSED),
                         StageResult("ap-launch", StageStatus.PASSED)])  # fmt: skip
        now = _time.time()
        report = RunReport(v, req.profile, "p", art.name, "fakehost", now, now, art)
        assert req.history is not None, "the judge gave the step no history target"
        assert write_history(req.history, report)
        return SessionResult(v, art)


def one_point_plan(tmp_path: Path, repo: Path) -> tuple[Path, str]:
    """A plan of one linux-pvh point whose kernel command line comes from `repo`'s file."""
    from xenpvh.plan import load_plan

    plan = tmp_path / "p.toml"
    plan.write_text(
        f'name = "p"\n[[kernel]]\nname = "kit"\ncmdline_repo = "{repo}"\n'
        '[[matrix]]\nprofile = "linux-pvh"\ntoolstack = "xl"\nvcpus = 2\n'
    )
    return plan, load_plan(str(plan)).points[0].id


def test_every_step_is_recorded_in_the_history(tmp_path: Path, monkeypatch) -> None:
    from xenpvh.bisect.history import BASELINE
    from xenpvh.history import open_store
    from xenpvh.plan.bisection import bisect_point as bisect

    monkeypatch.setattr("xenpvh.bisect.judge.Session", VerdictBySession)
    repo, commits = _repo(tmp_path, ["audit=0", "audit=0 quiet", "maxcpus=1", "maxcpus=1 x"])
    plan, point = one_point_plan(tmp_path, repo)
    db = str(tmp_path / "h.sqlite")
    found = bisect(
        tree=str(repo), good=commits[0], bad=commits[3], plan=str(plan), point=point,
        role="cmdline-file:cmdline", artifacts=tmp_path / "b", host=object(), db=db,
    )  # fmt: skip
    assert found.first_bad == commits[2]
    with open_store(db) as store:
        (pr,) = store.plan_runs()
        runs = store.runs(plan_run_id=pr.id, limit=100, details=True)
    assert found.plan_run_id == pr.id and pr.baseline == BASELINE and pr.finished_at
    summary = __import__("json").loads(pr.summary)
    assert summary["first_bad"] == commits[2] and summary["stage"] == "ap-launch"
    assert (summary["good"], summary["bad"]) == (commits[0], commits[3])
    # One run per step, each naming the commit it booted, with that step's verdict.
    assert sorted((r.tree_commit, r.verdict) for r in runs) == sorted(
        (s.commit, s.outcome.verdict) for s in found.steps
    )
    assert all(r.point == point and r.baseline == BASELINE for r in runs)


def test_a_bisection_that_ends_without_answer_closes_its_history(
    tmp_path: Path, monkeypatch
) -> None:
    from xenpvh.history import open_store
    from xenpvh.plan.bisection import bisect_point as bisect

    monkeypatch.setattr("xenpvh.bisect.judge.Session", VerdictBySession)
    repo, commits = _repo(tmp_path, ["audit=0", "audit=0 quiet"])
    plan, point = one_point_plan(tmp_path, repo)
    db = str(tmp_path / "h.sqlite")
    with pytest.raises(BlockedError, match="does not fail"):
        bisect(
            tree=str(repo), good=commits[0], bad=commits[1], plan=str(plan), point=point,
            role="cmdline-file:cmdline", artifacts=tmp_path / "b", host=object(), db=db,
        )  # fmt: skip
    with open_store(db) as store:
        (pr,) = store.plan_runs()
    assert pr.finished_at and "does not fail" in pr.summary
    # A ref that is no revision is refused by the input alone: no plan run is begun.
    with pytest.raises(BlockedError, match="not a git revision"):
        bisect(
            tree=str(repo), good="-x", bad=commits[1], plan=str(plan), point=point,
            role="cmdline-file:cmdline", artifacts=tmp_path / "b", host=object(), db=db,
        )  # fmt: skip
    with open_store(db) as store:
        assert len(store.plan_runs()) == 1


def test_an_unwritable_history_is_refused_before_any_host(tmp_path: Path, monkeypatch) -> None:
    from xenpvh.errors import BrokenError
    from xenpvh.plan.bisection import bisect_point as bisect

    def no_host(*a, **k):
        raise AssertionError("a host was opened before the history was checked")

    monkeypatch.setattr("xenpvh.bisect.run.held_host", no_host)
    repo, commits = _repo(tmp_path, ["audit=0", "maxcpus=1"])
    plan, point = one_point_plan(tmp_path, repo)
    with pytest.raises(BrokenError, match=r"history database postgresql://127\.0\.0\.1:1/none"):
        bisect(
            tree=str(repo), good=commits[0], bad=commits[1], plan=str(plan), point=point,
            role="cmdline-file:cmdline", artifacts=tmp_path / "b",
            db="postgresql://127.0.0.1:1/none",
        )  # fmt: skip
