"""junit.xml: valid against the xunit plugin's junit-10.xsd, one outcome per stage, counts
that add up, a stable classname across attempts, the console attached for Jenkins."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema
from hypothesis import given, settings
from hypothesis import strategies as st
from report_cases import CASES, JUNIT_XSD, POINT, ap_fail_run, broken_run, validate_junit

from xenpvh.check.verdict import StageResult, StageStatus, Verdict, VerdictValue
from xenpvh.report import RunReport, render_junit, write_reports

CLASSNAME = f"xenpvh.linux-pvh.{POINT}"
SHARED_XSD = Path("/work/shared/schemas/junit-10.xsd")


def _cases(suite: ET.Element) -> dict[str, ET.Element]:
    return {c.get("name", ""): c for c in suite.findall("testcase")}


def _props(suite: ET.Element) -> dict[str, str]:
    return {p.get("name", ""): p.get("value", "") for p in suite.findall("properties/property")}


@pytest.mark.parametrize("case", CASES)
def test_every_case_is_valid_junit(case: str, tmp_path: Path) -> None:
    report = CASES[case](tmp_path)
    write_reports(report)
    suite = validate_junit((tmp_path / "junit.xml").read_text())
    assert suite.get("name") == "xenpvh.linux-pvh"
    assert {c.get("classname") for c in suite.findall("testcase")} == {CLASSNAME}
    assert suite.get("timestamp") == "2026-01-01T00:00:00"
    assert suite.get("hostname") == "nested"
    # Properties belong to the suite only: the schema has none in a testcase.
    assert len(suite.findall("properties")) == 1 and not suite.findall("testcase/properties")


def test_the_xsd_is_a_copy_in_the_repo() -> None:
    assert JUNIT_XSD.is_file() and "xenpvh" not in str(JUNIT_XSD.resolve().parent.parent.name)
    if SHARED_XSD.is_file():
        assert JUNIT_XSD.read_bytes() == SHARED_XSD.read_bytes()


def test_the_xsd_rejects_properties_in_a_testcase() -> None:
    """Properties inside a testcase (what xunit1 writes) are invalid: the validator sees it."""
    bad = (
        '<testsuite name="s" tests="1" failures="0" errors="0"><testcase name="a">'
        '<properties><property name="k" value="v"/></properties></testcase></testsuite>'
    )
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        validate_junit(bad)


def test_pass_one_testcase_per_stage_hypervisor_first(tmp_path: Path) -> None:
    suite = validate_junit(render_junit(CASES["pass"](tmp_path)))
    names = [c.get("name") for c in suite.findall("testcase")]
    assert names == ["hypervisor", "early-init", "ap-launch", "root-mount", "xenbus", "login"]
    assert (suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("0", "0", "0")
    # Stage times are the gaps between stages (from the console's first byte).
    cases = _cases(suite)
    assert cases["ap-launch"].get("time") == "0.412"
    assert cases["hypervisor"].get("time") == "0.000"
    assert suite.get("time") == "1.500"


def test_fail_is_one_failure_at_the_stage_and_later_stages_skipped(tmp_path: Path) -> None:
    suite = validate_junit(render_junit(ap_fail_run(tmp_path)))
    cases = _cases(suite)
    assert [n for n, c in cases.items() if c.find("failure") is not None] == ["ap-launch"]
    failure = cases["ap-launch"].find("failure")
    assert failure is not None
    assert failure.get("message") == "expected 2 CPUs, guest reports 1"
    assert "ap-launch: guest reports 1 CPUs, expected 2" in (failure.text or "")
    assert [n for n, c in cases.items() if c.find("skipped") is not None] == [
        "root-mount",
        "xenbus",
        "login",
    ]
    assert (suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("1", "0", "3")
    assert suite.find("testcase/error") is None


def test_broken_is_exactly_one_error_and_no_failure(tmp_path: Path) -> None:
    report = broken_run(tmp_path)
    # The guest's login stage "failed" (the host spoilt it): it must not count as a failure.
    assert report.verdict.stages[-1].status is StageStatus.FAILED
    suite = validate_junit(render_junit(report))
    assert (suite.get("failures"), suite.get("errors")) == ("0", "1")
    assert suite.findall(".//failure") == []
    errors = suite.findall(".//error")
    assert len(errors) == 1 and errors[0].get("type") == "broken"
    assert errors[0].get("message", "").startswith("tcg-svm-double-delivery on host nested")
    login = _cases(suite)["login"]
    assert login.find("skipped") is not None and login.find("failure") is None


def test_blocked_without_stages_is_one_error(tmp_path: Path) -> None:
    suite = validate_junit(render_junit(CASES["blocked-no-stages"](tmp_path)))
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("1", "0", "1")
    (case,) = suite.findall("testcase")
    assert case.get("name") == "verdict" and case.get("classname") == CLASSNAME
    error = case.find("error")
    assert error is not None and error.get("type") == "blocked"
    assert "does not exist" in (error.text or "")


def test_run_facts_are_suite_properties(tmp_path: Path) -> None:
    suite = validate_junit(render_junit(broken_run(tmp_path)))
    props = _props(suite)
    assert props["verdict"] == "broken" and props["failed_stage"] == ""
    assert props["reason"].startswith("tcg-svm-double-delivery")
    assert props["run_id"] == "20260101-000000-a1b2c3" and props["host"] == "nested"
    assert props["xen_version"] == "4.17.5"
    assert props["attempts"] == "2"
    assert props["attempt.1.verdict"] == "broken" and props["attempt.2.verdict"] == "broken"
    assert props["attempt.1.reason"].startswith("tcg-svm-double-delivery")
    assert props["attempt.1.emulation_fault"] == "tcg-svm-double-delivery"
    assert props["attempt.1.artifacts"] == "attempt-1"
    assert props["meta.toolstack"] == "xl"


def test_classname_is_the_same_for_every_attempt_and_the_final_result(tmp_path: Path) -> None:
    """Attempt 1's junit.xml (written by its own boot) and the final one name the test alike,
    so CI shows one test's history."""
    final = broken_run(tmp_path / "run")
    first = dataclasses.replace(
        final, attempts=(), artifacts=tmp_path / "run" / "attempt-1", run_id="other-run-id"
    )
    names = set()
    for report in (first, final):
        suite = validate_junit(render_junit(report))
        names |= {(c.get("classname"), suite.get("name")) for c in suite.findall("testcase")}
    assert names == {(CLASSNAME, "xenpvh.linux-pvh")}


@pytest.mark.parametrize(
    ("case", "attached_to"),
    [
        ("pass", "login"),
        ("fail-ap-launch", "ap-launch"),
        ("broken-2-attempts", "verdict"),
    ],
)
def test_console_attached_to_the_failed_or_last_case(
    case: str, attached_to: str, tmp_path: Path
) -> None:
    suite = validate_junit(render_junit(CASES[case](tmp_path)))
    holders = [
        c.get("name")
        for c in suite.findall("testcase")
        if "[[ATTACHMENT|" in (c.findtext("system-out") or "")
    ]
    assert holders == [attached_to]
    out = _cases(suite)[attached_to].findtext("system-out") or ""
    # Jenkins' attachments plugin wants the absolute path.
    assert f"[[ATTACHMENT|{(tmp_path / 'console.log').absolute()}]]" in out


def test_no_attachment_without_a_console(tmp_path: Path) -> None:
    suite = validate_junit(render_junit(CASES["blocked-no-stages"](tmp_path)))
    assert "ATTACHMENT" not in ET.tostring(suite, "unicode")


def test_render_only_attaches_the_given_name() -> None:
    v = Verdict(VerdictValue.FAIL, "r", "login", [StageResult("login", StageStatus.FAILED)])
    report = RunReport(
        v, "linux-pvh", "boot.log", "c", None, 0.0, 0.0, None, console_log="boot.log"
    )
    suite = validate_junit(render_junit(report))
    assert "[[ATTACHMENT|boot.log]]" in (suite.findtext("testcase/system-out") or "")


def test_a_fail_whose_stage_is_missing_still_fails() -> None:
    v = Verdict(VerdictValue.FAIL, "hypervisor: wrong Xen", "hypervisor", [StageResult("login")])
    report = RunReport(v, "linux-pvh", POINT, "r", "nested", 0.0, 1.0, None)
    suite = validate_junit(render_junit(report))
    assert suite.get("failures") == "1"
    assert _cases(suite)["verdict"].find("failure") is not None


HOSTILE = "<script>alert(1)</script> ]]> \x00\x1b[2J\x07 & \"q\" 'q' \ud800 \ufffe"


def test_hostile_guest_text_stays_valid_and_inert(tmp_path: Path) -> None:
    report = ap_fail_run(tmp_path)
    stages = report.verdict.stages
    stages[1] = dataclasses.replace(stages[1], evidence=HOSTILE, detail=HOSTILE)
    report.verdict.reason = HOSTILE * 1000
    report.verdict.meta["hostile"] = HOSTILE
    text = render_junit(report)
    suite = validate_junit(text)
    assert "<script>" not in text
    out = _cases(suite)["ap-launch"].findtext("system-out") or ""
    assert "<script>alert(1)</script> ]]>" in out and "\\x00\\x1b[2J\\x07" in out
    assert "\\ud800" in out
    failure = _cases(suite)["ap-launch"].find("failure")
    # Capped: 4096 characters of guest text, each escape at most 6 characters long.
    assert failure is not None and len(failure.text or "") < 6 * 4096 + 64
    assert "chars cut" in (failure.text or "")


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=300), st.text(min_size=1, max_size=40))
def test_any_guest_text_gives_valid_junit(text: str, name: str) -> None:
    v = Verdict(
        VerdictValue.FAIL,
        text,
        name,
        [StageResult(name, StageStatus.FAILED, 1.0, text, text)],
        meta={text: text},
    )
    report = RunReport(v, name, text or "p", text or "r", text, 0.0, 1.0, None)
    validate_junit(render_junit(report))


def test_suite_and_classname_come_from_profile_and_point() -> None:
    """A Verdict of another profile and point (what `xenpvh check FILE` renders) gives the
    same valid shape, named after them."""
    v = Verdict(
        VerdictValue.FAIL,
        "ap-launch: APs seen {1}, expected {1,2}",
        "ap-launch",
        [
            StageResult("early-init", StageStatus.PASSED, 0.5, "Linux version"),
            StageResult("ap-launch", StageStatus.FAILED, 2.25, "panic: ap", "APs seen {1}"),
            StageResult("login"),
        ],
        meta={"profile": "freebsd-pvh", "vcpus": 3},
    )
    report = RunReport(v, "freebsd-pvh", "seed.txt", "check-1", None, 0.0, 1.0, None)
    suite = validate_junit(render_junit(report))
    assert suite.get("name") == "xenpvh.freebsd-pvh"
    assert {c.get("classname") for c in suite.findall("testcase")} == {
        "xenpvh.freebsd-pvh.seed.txt"
    }
