"""StageResult.line: the checker numbers a stage's evidence line as console.log's lines,
whatever the chunking, and the number survives verdict.json."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from report_cases import AP_FAIL_CONSOLE, AP_FAIL_LINE, GOOD_CONSOLE, PROFILE

from xenpvh.check.checker import StageChecker
from xenpvh.check.verdict import StageResult, StageStatus, Verdict, VerdictValue
from xenpvh.check.verdict import verdict_from_json_dict as from_json
from xenpvh.report import read_console

# xenbus: blkfront names the disk on line 7; the vif (netfront prints no line per device)
# is unverified on the console and does not hold the stage back offline.
GOOD_LINES = {"early-init": 2, "ap-launch": 4, "root-mount": 5, "xenbus": 7, "login": 9}


def _feed(console: bytes, cuts: list[int]) -> Verdict:
    checker = StageChecker(PROFILE, vcpus=2, disks=1, vifs=1, clock=lambda: 0.0)
    at = 0
    for cut in [*sorted({c % (len(console) + 1) for c in cuts}), len(console)]:
        checker.feed(console[at:cut])
        at = cut
    return checker.verdict if checker.done else checker.finish()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_lines_do_not_depend_on_chunking(cuts: list[int]) -> None:
    v = _feed(GOOD_CONSOLE, cuts)
    assert v.verdict is VerdictValue.PASS
    assert {s.name: s.line for s in v.stages} == GOOD_LINES


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_failure_line_is_numbered(cuts: list[int]) -> None:
    v = _feed(AP_FAIL_CONSOLE, cuts)
    ap = v.stages[1]
    assert (v.failed_stage, ap.status, ap.line) == ("ap-launch", StageStatus.FAILED, AP_FAIL_LINE)
    assert [s.line for s in v.stages[2:]] == [None, None, None]


def test_a_deadline_failure_has_no_line() -> None:
    checker = StageChecker(PROFILE, vcpus=2, disks=1, vifs=1, clock=lambda: 0.0)
    checker.feed(b"Linux version 6.1\r\n")
    v = checker.finish("console ended")
    assert v.stages[0].status is StageStatus.FAILED and v.stages[0].line is None


def test_lines_name_the_evidence_in_console_log(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(GOOD_CONSOLE)
    text = {line.number: line.text for line in read_console(log).lines}
    for s in _feed(GOOD_CONSOLE, []).stages:
        assert s.line is not None and s.evidence in text[s.line]


def test_line_survives_json() -> None:
    v = Verdict(
        VerdictValue.FAIL,
        "r",
        "a",
        [StageResult("a", StageStatus.FAILED, 1.0, "e", line=7), StageResult("b")],
    )
    d = v.to_json_dict()
    assert d["stages"][0]["line"] == 7 and "line" not in d["stages"][1]  # type: ignore[index]
    assert from_json(d) == v
