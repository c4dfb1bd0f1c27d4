"""report.html: a self-contained triage page for one run, rendered by a Jinja2 template.

Top to bottom: the verdict, the blamed stage and the reason; the stages with a time bar
each; the attempts; the run's files; the XenStore devices; timings and the other facts;
the console with numbered lines (anchors `#L<n>`), the evidence lines and the failure line
highlighted and linked from the stage table.

Everything shown is text the guest or the host could have chosen, so autoescape is on and
every value passes `xml_safe` first (control characters become visible escapes, and lone
surrogates cannot break the UTF-8 file).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from xenpvh.check.verdict import StageResult, StageStatus, VerdictValue
from xenpvh.report.artifacts import list_artifacts
from xenpvh.report.console_view import ConsoleView, console_from_lines
from xenpvh.report.jinja_env import template_environment
from xenpvh.report.jsonsafe import json_safe
from xenpvh.report.record import RunReport
from xenpvh.report.timefmt import iso_utc
from xenpvh.report.verdict_doc import REPORT_FILES, tool_version
from xenpvh.toolstack.xenstore import CONNECTED, XENBUS_STATES

TEMPLATE: Final = "report.html.j2"
MIN_BAR_PCT: Final = 0.5  # an instant stage still shows as a sliver


@dataclass(frozen=True)
class StageRow:
    name: str
    status: str
    t: float | None
    bar_left: float  # percent of the longest stage time
    bar_width: float  # 0: no bar (not reached, or no time)
    evidence: str
    detail: str
    line: int | None
    line_shown: bool  # the line is on this page (not in the omitted middle)
    failed: bool  # the stage the verdict blames
    # The guest's own failure in a run that was broken or blocked: shown, but not blamed.
    not_counted: bool


@dataclass(frozen=True)
class ConsoleRow:
    number: int
    text: str
    cut: bool
    css: str  # "", "evidence" or "failure"
    gap: int  # lines not shown just before this one


@dataclass(frozen=True)
class DeviceRow:
    kind: str
    devid: str
    frontend: str
    frontend_state: str
    backend: str
    backend_state: str
    connected: bool


def render_html(report: RunReport, console_lines: ConsoleView | Iterable[str]) -> str:
    """The page; `console_lines` is a bounded view of console.log (read_console) or plain
    lines, numbered from 1."""
    console = (
        console_lines
        if isinstance(console_lines, ConsoleView)
        else console_from_lines(console_lines)
    )
    v = report.verdict
    stages = report.stages
    lines = _stage_lines(stages, console)
    rows = _stage_rows(stages, lines, console, judged=v.verdict is VerdictValue.FAIL)
    failure_line = next((r.line for r in rows if r.failed and r.line_shown), None)
    evidence_lines = {r.line for r in rows if r.line_shown and not r.failed}
    artifacts = (
        list_artifacts(report.artifacts, REPORT_FILES) if report.artifacts is not None else {}
    )
    meta = json.dumps(json_safe(v.meta), indent=2, ensure_ascii=False)
    return (
        template_environment()
        .get_template(TEMPLATE)
        .render(
            verdict=str(v.verdict),
            failed_stage=v.failed_stage,
            reason=v.reason,
            report=report,
            started=iso_utc(report.started_at),
            finished=iso_utc(report.finished_at),
            duration=max(report.finished_at - report.started_at, 0.0),
            tool_version=tool_version(),
            stages=rows,
            failure_line=failure_line,
            attempts=[
                {
                    "number": a.number,
                    "verdict": a.verdict,
                    "reason": a.reason,
                    "emulation_fault": a.emulation_fault,
                    "href": quote(a.artifacts) + "/" if a.artifacts else None,
                }
                for a in report.attempts
            ],
            artifacts=[(name, quote(rel)) for name, rel in artifacts.items()],
            console_href=quote(report.console_log) if report.console_log in artifacts else None,
            devices=_device_rows(v.meta.get("xenstore_devices")),
            notices=_notice_rows(v.meta.get("notices")),
            timings=list(report.timings.items()),
            meta=meta,
            console=console,
            console_rows=_console_rows(console, failure_line, evidence_lines),
        )
    )


def _stage_lines(stages: list[StageResult], console: ConsoleView) -> list[int | None]:
    """Each stage's console line: the checker's number when it has one, else the first
    line (after the previous stage's) that contains its evidence."""
    found: list[int | None] = []
    after = 1
    for s in stages:
        line = s.line
        if line is None and s.evidence:
            line = console.find(s.evidence, after) or console.find(s.evidence)
        if line is not None:
            after = line
        found.append(line)
    return found


def _stage_rows(
    stages: list[StageResult],
    lines: list[int | None],
    console: ConsoleView,
    *,
    judged: bool,
) -> list[StageRow]:
    times = [s.t for s in stages if s.t is not None and s.t >= 0]
    longest = max(times, default=0.0)
    rows = []
    prev = 0.0
    for s, line in zip(stages, lines, strict=True):
        left = width = 0.0
        if s.t is not None and s.t >= 0 and s.status is not StageStatus.NOT_REACHED:
            start = min(prev, s.t)
            if longest > 0:
                # A stage that ends where the last one did still shows, at the far end.
                left = min(100.0 * start / longest, 100.0 - MIN_BAR_PCT)
                width = max(100.0 * (s.t - start) / longest, MIN_BAR_PCT)
            else:
                width = MIN_BAR_PCT
            prev = max(prev, s.t)
        rows.append(
            StageRow(
                name=s.name,
                status=str(s.status),
                t=s.t,
                bar_left=round(left, 2),
                bar_width=round(min(width, 100.0 - left), 2),
                evidence=s.evidence,
                detail=s.detail,
                line=line,
                line_shown=console.shows(line),
                failed=judged and s.status is StageStatus.FAILED,
                not_counted=not judged and s.status is StageStatus.FAILED,
            )
        )
    return rows


def _console_rows(
    console: ConsoleView, failure_line: int | None, evidence_lines: set[int | None]
) -> list[ConsoleRow]:
    rows = []
    prev = 0
    for line in console.lines:
        css = (
            "failure"
            if line.number == failure_line
            else "evidence"
            if line.number in evidence_lines
            else ""
        )
        rows.append(ConsoleRow(line.number, line.text, line.cut, css, line.number - prev - 1))
        prev = line.number
    return rows


def _notice_rows(raw: object) -> list[dict[str, object]]:
    """meta["notices"]: lines a profile reports but never fails on (the checker's list)."""
    if not isinstance(raw, list):
        return []
    rows = []
    for n in raw:
        if isinstance(n, dict):
            line = n.get("line")
            rows.append(
                {
                    "name": str(n.get("name", "")),
                    "stage": str(n.get("stage") or ""),
                    "line": line if isinstance(line, int) else None,
                    "evidence": str(n.get("evidence", "")),
                }
            )
    return rows


def _device_rows(devices: object) -> list[DeviceRow]:
    """meta["xenstore_devices"]: DeviceState as dicts (frontend/backend may be spelt
    frontend_path/backend_path, as dataclasses.asdict gives them)."""
    if not isinstance(devices, list):
        return []

    def state(value: object) -> str:
        if value is None:
            return "missing"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value} ({XENBUS_STATES.get(value, 'invalid')})"
        return str(value)

    rows = []
    for d in devices:
        if not isinstance(d, Mapping):
            continue
        fe, be = d.get("frontend_state"), d.get("backend_state")
        rows.append(
            DeviceRow(
                kind=str(d.get("kind", "")),
                devid=str(d.get("devid", "")),
                frontend=str(d.get("frontend", d.get("frontend_path", ""))),
                frontend_state=state(fe),
                backend=str(d.get("backend", d.get("backend_path", ""))),
                backend_state=state(be),
                connected=fe == CONNECTED and be == CONNECTED,
            )
        )
    return rows


__all__ = ["render_html"]
