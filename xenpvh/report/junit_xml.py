"""junit.xml: what Jenkins and GitLab read (the schema is tests/schemas/junit-10.xsd).

One <testsuite> per run, one <testcase> per boot stage (the hypervisor stage first) whose
classname `xenpvh.<profile>.<point>` is the same for every attempt, so CI sees one test's
history rather than new tests.  Run-wide facts are <properties> of the suite (the schema
allows none in a testcase).  A failed stage is a <failure>; stages never reached are
<skipped>; a broken or blocked run blames no stage and is exactly one <error>, in a
testcase of its own named "verdict".
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Final

from xenpvh.check.verdict import StageResult, StageStatus, VerdictValue
from xenpvh.report.record import RunReport
from xenpvh.report.sanitize import xml_safe
from xenpvh.report.timefmt import iso_utc, junit_timestamp

# Guest text is hostile: cap what goes into CI logs.
EVIDENCE_LIMIT: Final = 4096
MESSAGE_LIMIT: Final = 1024
# Scalar meta facts copied into the suite's properties, at most this many.
MAX_META_PROPERTIES: Final = 64
MAX_NOTICE_PROPERTIES: Final = 16  # notices listed as properties (the count is always given)
VERDICT_CASE: Final = "verdict"
# Properties the suite always states itself; meta keys of the same name are not repeated.
_OWN_PROPERTIES: Final = {"verdict", "reason", "failed_stage", "run_id", "host", "xen_version"}


def suite_name(report: RunReport) -> str:
    return f"xenpvh.{report.profile}"


def case_classname(report: RunReport) -> str:
    return f"xenpvh.{report.profile}.{report.point}"


@dataclass
class _Case:
    element: ET.Element
    seconds: float  # rounded to ms, as printed


def render_junit(report: RunReport) -> str:
    """The JUnit document; every string passes through xml_safe, ElementTree escapes it."""
    v = report.verdict
    judged = v.verdict is VerdictValue.FAIL  # only a fail blames a stage
    classname = xml_safe(case_classname(report))
    cases: list[_Case] = []
    failed_case: _Case | None = None
    prev_t = 0.0
    for stage in report.stages:
        seconds = 0.0
        if stage.t is not None:
            seconds, prev_t = round(max(stage.t - prev_t, 0.0), 3), max(stage.t, prev_t)
        case = _Case(_testcase(classname, stage.name, seconds), seconds)
        cases.append(case)
        el = case.element
        if stage.status is StageStatus.FAILED and judged:
            failure = ET.SubElement(
                el,
                "failure",
                {"type": "fail", "message": xml_safe(stage.detail or v.reason, MESSAGE_LIMIT)},
            )
            failure.text = xml_safe(v.reason, EVIDENCE_LIMIT)
            failed_case = failed_case or case
        elif stage.status is StageStatus.FAILED:
            # The guest's own result stands for nothing once the run itself was broken.
            why = f"not counted: the run was {v.verdict}"
            ET.SubElement(el, "skipped", {"message": why})
        elif stage.status is StageStatus.NOT_REACHED:
            ET.SubElement(el, "skipped", {"message": "stage not reached"})
        out = _stage_output(stage)
        if out:
            ET.SubElement(el, "system-out").text = xml_safe(out, EVIDENCE_LIMIT)

    if judged and failed_case is None:
        # A fail whose stage is not among the stages must still fail in CI.
        failed_case = _Case(_testcase(classname, VERDICT_CASE, 0.0), 0.0)
        failure = ET.SubElement(
            failed_case.element,
            "failure",
            {"type": "fail", "message": xml_safe(v.reason, MESSAGE_LIMIT)},
        )
        failure.text = xml_safe(v.reason, EVIDENCE_LIMIT)
        cases.append(failed_case)
    elif v.verdict in (VerdictValue.BROKEN, VerdictValue.BLOCKED):
        failed_case = _Case(_testcase(classname, VERDICT_CASE, 0.0), 0.0)
        error = ET.SubElement(
            failed_case.element,
            "error",
            {"type": str(v.verdict), "message": xml_safe(v.reason, MESSAGE_LIMIT)},
        )
        error.text = xml_safe(v.reason, EVIDENCE_LIMIT)
        cases.append(failed_case)

    attach_to = failed_case or (cases[-1] if cases else None)
    attachment = _console_attachment(report)
    if attach_to is not None and attachment is not None:
        _append_output(attach_to.element, f"[[ATTACHMENT|{attachment}]]")

    suite = ET.Element("testsuite", _suite_attributes(report, cases))
    _properties(suite, _run_properties(report))
    suite.extend(c.element for c in cases)
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, "unicode") + "\n"


def _testcase(classname: str, name: str, seconds: float) -> ET.Element:
    return ET.Element(
        "testcase", {"classname": classname, "name": xml_safe(name), "time": f"{seconds:.3f}"}
    )


def _suite_attributes(report: RunReport, cases: list[_Case]) -> dict[str, str]:
    def count(tag: str) -> int:
        return sum(1 for c in cases if c.element.find(tag) is not None)

    attrs = {
        "name": xml_safe(suite_name(report)),
        "tests": str(len(cases)),
        "failures": str(count("failure")),
        "errors": str(count("error")),
        "skipped": str(count("skipped")),
        # The sum of the testcases' times, so the counts add up for any reader.
        "time": f"{sum(c.seconds for c in cases):.3f}",
        "timestamp": junit_timestamp(report.started_at),
    }
    if report.host is not None:
        attrs["hostname"] = xml_safe(report.host, MESSAGE_LIMIT)
    return attrs


def _stage_output(stage: StageResult) -> str:
    lines = []
    if stage.evidence:
        where = f" (console line {stage.line})" if stage.line is not None else ""
        lines.append(f"evidence{where}: {stage.evidence}")
    if stage.detail:
        lines.append(f"detail: {stage.detail}")
    return "\n".join(lines)


def _append_output(case: ET.Element, text: str) -> None:
    out = case.find("system-out")
    if out is None:
        out = ET.SubElement(case, "system-out")
        out.text = xml_safe(text)
    else:
        out.text = f"{out.text}\n{xml_safe(text)}"


def _console_attachment(report: RunReport) -> str | None:
    """The console log as Jenkins' attachments plugin wants it: an absolute path when the
    run directory is known (and the log exists), else the name the caller gave."""
    if report.console_log is None:
        return None
    path = report.console_path
    if path is None:
        return report.console_log
    return str(path.absolute()) if path.is_file() else None


def _run_properties(report: RunReport) -> list[tuple[str, str]]:
    v = report.verdict
    props = [
        ("verdict", str(v.verdict)),
        ("reason", v.reason),
        ("failed_stage", v.failed_stage or ""),
        ("profile", report.profile),
        ("point", report.point),
        ("run_id", report.run_id),
        ("started_at", iso_utc(report.started_at)),
        ("finished_at", iso_utc(report.finished_at)),
    ]
    if report.host is not None:
        props.append(("host", report.host))
    xen_version = v.meta.get("xen_version")
    if xen_version is not None:
        props.append(("xen_version", str(xen_version)))
    props.append(("attempts", str(max(len(report.attempts), 1))))
    for a in report.attempts:
        props += [
            (f"attempt.{a.number}.verdict", a.verdict),
            (f"attempt.{a.number}.reason", a.reason),
        ]
        if a.emulation_fault is not None:
            props.append((f"attempt.{a.number}.emulation_fault", a.emulation_fault))
        if a.artifacts is not None:
            props.append((f"attempt.{a.number}.artifacts", a.artifacts))
    notices = v.meta.get("notices")
    if isinstance(notices, list):
        # Lines the profile reports but never fails on (Linux WARNING:, WITNESS LORs).
        props.append(("notices", str(v.meta.get("notices_total", len(notices)))))
        for i, n in enumerate(notices[:MAX_NOTICE_PROPERTIES], 1):
            if isinstance(n, dict):
                line = f" (line {n['line']})" if n.get("line") else ""
                props.append((f"notice.{i}", f"{n.get('name')}{line}: {n.get('evidence', '')}"))
    scalars = [
        (f"meta.{k}", str(val))
        for k, val in sorted(v.meta.items(), key=lambda kv: str(kv[0]))
        if str(k) not in _OWN_PROPERTIES and isinstance(val, str | int | float | bool)
    ]
    return props + scalars[:MAX_META_PROPERTIES]


def _properties(parent: ET.Element, items: list[tuple[str, str]]) -> None:
    props = ET.SubElement(parent, "properties")
    for name, value in items:
        attrs = {"name": xml_safe(name, MESSAGE_LIMIT), "value": xml_safe(value, EVIDENCE_LIMIT)}
        ET.SubElement(props, "property", attrs)


__all__ = ["EVIDENCE_LIMIT", "VERDICT_CASE", "case_classname", "render_junit", "suite_name"]
