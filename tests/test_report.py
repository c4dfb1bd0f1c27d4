"""Reports as files: write_reports writes all four atomically (rendered first, verdict.json
last); a decided Verdict with its facts (retries, hostile text, the console) comes out in
every report's shape."""

from __future__ import annotations

import dataclasses
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from report_cases import CASES, ap_fail_run, broken_run, validate_junit, validate_verdict_json

from xenpvh.check.verdict import (
    StageResult,
    StageStatus,
    Verdict,
    VerdictValue,
    verdict_from_json_dict,
)
from xenpvh.report import (
    Attempt,
    RunReport,
    render_html,
    render_junit,
    render_verdict_json,
    write_reports,
)
from xenpvh.report import writer as writer_mod
from xenpvh.util import fs as atomic_mod

REPORTS = ["junit.xml", "report.html", "timing.json", "verdict.json"]


def fail_verdict(evidence: str = "FreeBSD/SMP: Multiprocessor System Detected: 2 CPUs") -> Verdict:
    return Verdict(
        verdict=VerdictValue.FAIL,
        reason="ap-launch: APs seen {1}, expected {1,2}",
        failed_stage="ap-launch",
        stages=[
            StageResult("early-init", StageStatus.PASSED, 0.5, evidence),
            StageResult("ap-launch", StageStatus.FAILED, 2.25, "panic: ap", "APs seen {1}"),
            StageResult("xenbus"),
            StageResult("login"),
        ],
        meta={"host": "nested", "xen": "4.17.5"},
    )


# ---- write_reports ----


@pytest.mark.parametrize("case", CASES)
def test_write_reports_writes_all_four(case: str, tmp_path: Path) -> None:
    report = CASES[case](tmp_path / "run")
    written = write_reports(report)
    assert list(written) == REPORTS  # verdict.json last: its presence means "all written"
    assert all(p.parent == tmp_path / "run" and p.is_file() for p in written.values())
    assert json.loads(written["timing.json"].read_text()) == dict(report.timings)
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]


def test_write_reports_creates_the_run_directory(tmp_path: Path) -> None:
    report = CASES["blocked-no-stages"](tmp_path / "a")
    report = dataclasses.replace(report, artifacts=tmp_path / "new" / "dir")
    write_reports(report)
    assert (tmp_path / "new" / "dir" / "verdict.json").is_file()


def test_write_reports_needs_a_run_directory(tmp_path: Path) -> None:
    report = dataclasses.replace(ap_fail_run(tmp_path), artifacts=None)
    with pytest.raises(ValueError, match="run directory"):
        write_reports(report)


def test_a_render_failure_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Everything is rendered before the first file is touched: the old reports stand."""
    report = ap_fail_run(tmp_path)
    write_reports(report)
    before = {n: (tmp_path / n).read_bytes() for n in REPORTS}

    def boom(*args: object) -> str:
        raise RuntimeError("template bug")

    monkeypatch.setattr(writer_mod, "render_html", boom)
    report.verdict.reason = "changed"
    with pytest.raises(RuntimeError, match="template bug"):
        write_reports(report)
    assert {n: (tmp_path / n).read_bytes() for n in REPORTS} == before


def test_a_write_failure_removes_its_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = ap_fail_run(tmp_path)

    def full(src: str, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(atomic_mod.os, "replace", full)
    with pytest.raises(OSError, match="disk full"):
        write_reports(report)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not (tmp_path / "verdict.json").exists()


def test_each_file_is_replaced_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every report reaches its name by one rename of a complete temp file."""
    report = broken_run(tmp_path)
    renames: list[tuple[str, str]] = []
    real = os.replace

    def spy(src: str, dst: str) -> None:
        assert Path(src).parent == Path(dst).parent and Path(src).name.startswith(".")
        renames.append((Path(dst).name, Path(src).read_text()))
        real(src, dst)

    monkeypatch.setattr(atomic_mod.os, "replace", spy)
    write_reports(report)
    assert [n for n, _ in renames] == REPORTS
    for name, text in renames:
        assert (tmp_path / name).read_text() == text


# ---- a decided Verdict through the writer ----


def fail_report(
    v: Verdict,
    artifacts: Path | None,
    *,
    profile: str = "linux-pvh",
    point: str = "xl-vcpus2-mem256",
    attempts: tuple[Attempt, ...] = (),
) -> RunReport:
    return RunReport(v, profile, point, "r-1", "nested", 0.0, 2.0, artifacts, attempts)


def test_verdict_json_is_schema_valid_and_roundtrips(tmp_path: Path) -> None:
    v = fail_verdict()
    written = write_reports(fail_report(v, tmp_path))
    doc = json.loads(written["verdict.json"].read_text())
    validate_verdict_json(doc)
    assert verdict_from_json_dict(doc) == v
    assert sorted(os.listdir(tmp_path)) == REPORTS  # no temp file left beside them


def test_verdict_json_stringifies_unserialisable_meta() -> None:
    bad = fail_verdict()
    bad.meta["obj"] = object()
    doc = render_verdict_json(fail_report(bad, None))
    validate_verdict_json(doc)
    assert doc["meta"]["obj"].startswith("<object object")


def test_verdict_json_takes_retry_history() -> None:
    v = fail_verdict()
    attempts = (
        Attempt(1, "broken", "tcg fault", "tcg-svm-double-delivery", "attempt-1"),
        Attempt(2, "fail", v.reason),
    )
    doc = render_verdict_json(fail_report(v, None, attempts=attempts))
    validate_verdict_json(doc)
    assert [(a["number"], a["artifacts"]) for a in doc["attempts"]] == [
        (1, "attempt-1"),
        (2, None),
    ]


def test_junit_names_suite_and_case_by_profile_and_point() -> None:
    """Every attempt of a point and the final junit.xml name the case alike."""
    v = fail_verdict()
    suite = validate_junit(render_junit(fail_report(v, None)))
    assert suite.get("name") == "xenpvh.linux-pvh"
    names = {c.get("classname") for c in suite.findall("testcase")}
    assert names == {"xenpvh.linux-pvh.xl-vcpus2-mem256"}
    assert suite.get("failures") == "1"


def test_html_reads_the_run_console(tmp_path: Path) -> None:
    (tmp_path / "console.log").write_bytes(b"boot\r\npanic: ap\r\n")
    text = write_reports(fail_report(fail_verdict(), tmp_path))["report.html"].read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert 'id="L2"' in text
    assert 'class="l failure" id="L2"' in text


def test_html_without_console_uses_the_lines() -> None:
    page = render_html(fail_report(fail_verdict(), None), ["boot", "panic: ap"])
    assert 'class="l failure" id="L2"' in page


def test_reports_escape_hostile_text() -> None:
    hostile = "<script>alert(1)</script> ]]> \x00\x1b[2J\x07 & \"q\" 'q' \ud800"
    v = fail_verdict(hostile)
    v.meta["<b>k"] = "<img src=x onerror=alert(1)>"
    junit = render_junit(fail_report(v, None))
    ET.fromstring(junit)
    assert "<script>" not in junit
    page = render_html(fail_report(v, None), [hostile])
    assert "<script" not in page and "<img" not in page and "\x00" not in page
