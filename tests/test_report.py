"""Reports: atomic verdict.json, JUnit XML, HTML; hostile guest text stays inert."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenpvh.check.verdict import (
    StageResult,
    StageStatus,
    Verdict,
    VerdictValue,
    verdict_from_json_dict,
)
from xenpvh.report import (
    render_html,
    render_junit,
    write_html,
    write_junit,
    write_verdict_json,
)
from xenpvh.report.html_report import MAX_CONSOLE_LINES, MAX_LINE_CHARS
from xenpvh.util import fs as atomic_mod

HOSTILE = "<script>alert(1)</script> ]]> \x00\x1b[2J\x07 & \"q\" 'q' \ud800"


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


# ---- verdict.json ----


def test_verdict_json_roundtrip(tmp_path: Path) -> None:
    v = fail_verdict()
    p = write_verdict_json(v, tmp_path / "verdict.json")
    back = verdict_from_json_dict(json.loads(p.read_text()))
    assert back == v
    assert os.listdir(tmp_path) == ["verdict.json"]


def test_verdict_json_unserialisable_leaves_old_file(tmp_path: Path) -> None:
    p = tmp_path / "verdict.json"
    write_verdict_json(fail_verdict(), p)
    before = p.read_bytes()
    bad = fail_verdict()
    bad.meta["obj"] = object()
    with pytest.raises(TypeError):
        write_verdict_json(bad, p)
    assert p.read_bytes() == before
    assert os.listdir(tmp_path) == ["verdict.json"]


def test_write_failure_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(src: str, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(atomic_mod.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_verdict_json(fail_verdict(), tmp_path / "verdict.json")
    assert os.listdir(tmp_path) == []


# ---- JUnit ----


def test_junit_structure() -> None:
    root = ET.fromstring(render_junit(fail_verdict(), "xenpvh", "freebsd-pvh"))
    assert root.tag == "testsuite" and root.get("name") == "xenpvh"
    assert (root.get("tests"), root.get("failures"), root.get("skipped"), root.get("errors")) == (
        "4",
        "1",
        "2",
        "0",
    )
    cases = root.findall("testcase")
    assert [c.get("name") for c in cases] == ["early-init", "ap-launch", "xenbus", "login"]
    assert {c.get("classname") for c in cases} == {"xenpvh.freebsd-pvh"}
    assert cases[0].find("failure") is None and cases[0].find("skipped") is None
    assert cases[1].find("failure").get("message") == "APs seen {1}"  # type: ignore[union-attr]
    assert cases[2].find("skipped") is not None and cases[3].find("skipped") is not None
    props = {p.get("name"): p.get("value") for p in cases[1].findall("properties/property")}
    assert props == {"name": "ap-launch", "status": "failed", "t": "2.250"}
    assert cases[1].get("time") == "1.750"
    assert "panic: ap" in cases[1].findtext("system-out", "")
    suite_props = {p.get("name"): p.get("value") for p in root.findall("properties/property")}
    assert suite_props["verdict"] == "fail" and suite_props["meta.xen"] == "4.17.5"


@pytest.mark.parametrize("value", [VerdictValue.BROKEN, VerdictValue.BLOCKED])
def test_junit_broken_blocked_is_an_error(value: VerdictValue) -> None:
    v = Verdict(value, "xenstored dead", stages=[StageResult("early-init")])
    root = ET.fromstring(render_junit(v, "s", "c"))
    assert root.get("errors") == "1"
    err = root.find("testcase[@name='verdict']/error")
    assert err is not None and err.get("type") == str(value)
    assert err.get("message") == "xenstored dead"


def test_junit_hostile_evidence_stays_valid() -> None:
    text = render_junit(fail_verdict(HOSTILE), "s<x>", 'c"]]>')
    root = ET.fromstring(text)  # raises if the control characters leaked through
    out = root.find("testcase/system-out")
    assert out is not None and out.text is not None
    assert "<script>alert(1)</script> ]]>" in out.text
    assert "\\x00\\x1b[2J\\x07" in out.text
    assert "\\ud800" in out.text
    assert "<script>" not in text
    assert root.get("name") == "s<x>"


@given(st.text(max_size=200))
def test_junit_any_evidence_parses(evidence: str) -> None:
    ET.fromstring(render_junit(fail_verdict(evidence), "s", "c"))


def test_write_junit(tmp_path: Path) -> None:
    p = write_junit(fail_verdict(), tmp_path / "junit.xml", "s", "c")
    assert ET.parse(p).getroot().get("failures") == "1"


# ---- HTML ----


def test_html_escapes_everything() -> None:
    v = fail_verdict(HOSTILE)
    v.meta["<b>k"] = "<img src=x onerror=alert(1)>"
    v.reason = "<script>reason</script>"
    page = render_html(v, [HOSTILE, "login:"])
    assert "<script" not in page
    assert "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\x00" not in page and "\x1b" not in page
    assert "login:" in page
    assert "ap-launch" in page and "verdict: fail" in page


def test_html_console_bounded() -> None:
    lines = (f"line {i} " + "x" * 10_000 for i in range(100_000))
    page = render_html(fail_verdict(), lines)
    assert f"line {100_000 - MAX_CONSOLE_LINES} " in page
    assert f"line {100_000 - MAX_CONSOLE_LINES - 1} " not in page
    assert len(page) < MAX_CONSOLE_LINES * (MAX_LINE_CHARS + 50) + 10_000


def test_write_html(tmp_path: Path) -> None:
    p = write_html(fail_verdict(), tmp_path / "report.html", ["boot"])
    assert p.read_text().startswith("<!DOCTYPE html>")
