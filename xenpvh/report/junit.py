"""JUnit XML for CI: one testsuite per run, one testcase per boot stage."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Final

from xenpvh.check.verdict import StageStatus, Verdict, VerdictValue
from xenpvh.report.atomic import atomic_write_text
from xenpvh.report.sanitize import xml_safe

# Guest evidence is one console line, but it is hostile: cap what goes into CI logs.
EVIDENCE_LIMIT: Final = 4096


def _t(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _props(parent: ET.Element, items: list[tuple[str, str]]) -> None:
    props = ET.SubElement(parent, "properties")
    for name, value in items:
        ET.SubElement(props, "property", {"name": xml_safe(name), "value": xml_safe(value)})


def render_junit(verdict: Verdict, suite_name: str, case_name: str) -> str:
    """A JUnit document; every string passes through xml_safe, ElementTree escapes it."""
    suite = ET.Element("testsuite", {"name": xml_safe(suite_name)})
    suite_props = [
        ("verdict", str(verdict.verdict)),
        ("reason", verdict.reason),
        ("failed_stage", verdict.failed_stage or ""),
    ]
    suite_props += [(f"meta.{k}", str(v)) for k, v in sorted(verdict.meta.items())]
    _props(suite, suite_props)

    classname = xml_safe(f"{suite_name}.{case_name}")
    failures = skipped = errors = 0
    prev_t = 0.0
    for stage in verdict.stages:
        elapsed = 0.0 if stage.t is None else max(stage.t - prev_t, 0.0)
        if stage.t is not None:
            prev_t = stage.t
        case = ET.SubElement(
            suite,
            "testcase",
            {"classname": classname, "name": xml_safe(stage.name), "time": f"{elapsed:.3f}"},
        )
        _props(case, [("name", stage.name), ("status", str(stage.status)), ("t", _t(stage.t))])
        if stage.status is StageStatus.FAILED:
            failures += 1
            message = stage.detail or verdict.reason
            fail = ET.SubElement(case, "failure", {"message": xml_safe(message, EVIDENCE_LIMIT)})
            fail.text = xml_safe(verdict.reason, EVIDENCE_LIMIT)
        elif stage.status is StageStatus.NOT_REACHED:
            skipped += 1
            ET.SubElement(case, "skipped", {"message": "stage not reached"})
        out = stage.evidence + (f"\n{stage.detail}" if stage.detail else "")
        if out:
            ET.SubElement(case, "system-out").text = xml_safe(out, EVIDENCE_LIMIT)

    if verdict.verdict in (VerdictValue.BROKEN, VerdictValue.BLOCKED) or not verdict.stages:
        # No stage is to blame: the run itself errored (or had no stages), so CI must see it.
        errors += verdict.verdict is not VerdictValue.PASS
        case = ET.SubElement(suite, "testcase", {"classname": classname, "name": "verdict"})
        if verdict.verdict is not VerdictValue.PASS:
            err = ET.SubElement(
                case,
                "error",
                {"type": str(verdict.verdict), "message": xml_safe(verdict.reason, 4096)},
            )
            err.text = xml_safe(verdict.reason, EVIDENCE_LIMIT)
    suite.set("tests", str(len(suite.findall("testcase"))))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, "unicode") + "\n"


def write_junit(
    verdict: Verdict, path: str | os.PathLike[str], suite_name: str, case_name: str
) -> Path:
    return atomic_write_text(path, render_junit(verdict, suite_name, case_name))
