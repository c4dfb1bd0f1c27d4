"""The old Verdict-only report functions, kept until their callers (run.boot, run.retry,
frontend, cli) pass a RunReport to write_reports.  They rebuild the RunReport from what the
verdict's meta holds and go through the same renderers, so every file they write is in the
new shapes (schema-valid verdict.json and JUnit, the triage page).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from xenpvh.check.verdict import Verdict
from xenpvh.report.atomic import atomic_write_text
from xenpvh.report.console_view import console_from_lines, read_console
from xenpvh.report.html_page import render_html
from xenpvh.report.junit_xml import render_junit as render_junit_report
from xenpvh.report.record import Attempt, RunReport
from xenpvh.report.verdict_doc import dumps_verdict_json, render_verdict_json

CONSOLE_LOG = "console.log"


def report_from_verdict(
    verdict: Verdict,
    artifacts: Path | None,
    *,
    suite_name: str | None = None,
    case_name: str | None = None,
) -> RunReport:
    """A RunReport from a verdict whose meta a BootRun (or the checker) filled."""
    meta = verdict.meta
    suite_profile = (suite_name or "").removeprefix("xenpvh").removeprefix(".")
    profile = _text(meta.get("profile")) or suite_profile or "unknown"
    now = time.time()
    elapsed = _number(meta.get("run_s")) or _number(meta.get("create_to_verdict_s")) or 0.0
    host = meta.get("host")
    return RunReport(
        verdict=verdict,
        profile=profile,
        point=_point(meta) or case_name or "default",
        run_id=_text(meta.get("run_id")) or _offline_id(),
        host=str(host) if host is not None else None,
        started_at=now - elapsed,
        finished_at=now,
        artifacts=artifacts,
        attempts=_attempts(meta.get("attempts"), artifacts),
        timings={k: _number(v) for k, v in meta.items() if isinstance(k, str) and k.endswith("_s")},
        console_log=CONSOLE_LOG,
    )


def write_verdict_json(verdict: Verdict, path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    doc = render_verdict_json(report_from_verdict(verdict, p.parent))
    return atomic_write_text(p, dumps_verdict_json(doc))


def render_junit(verdict: Verdict, suite_name: str, case_name: str) -> str:
    """The old signature (the CLI's `check --format junit`): render only."""
    report = report_from_verdict(verdict, None, suite_name=suite_name, case_name=case_name)
    return render_junit_report(report)


def write_junit(
    verdict: Verdict, path: str | os.PathLike[str], suite_name: str, case_name: str
) -> Path:
    p = Path(path)
    report = report_from_verdict(verdict, p.parent, suite_name=suite_name, case_name=case_name)
    return atomic_write_text(p, render_junit_report(report))


def write_html(
    verdict: Verdict, path: str | os.PathLike[str], console_tail_lines: Iterable[str]
) -> Path:
    """The page for the run in `path`'s directory.  Its console.log, when there, is read
    (bounded) in place of the given tail, so line numbers match the checker's."""
    p = Path(path)
    report = report_from_verdict(verdict, p.parent)
    log = p.parent / CONSOLE_LOG
    view = read_console(log) if log.is_file() else console_from_lines(console_tail_lines)
    return atomic_write_text(p, render_html(report, view))


def _point(meta: Mapping[str, object]) -> str | None:
    """The point name run.boot gives its JUnit case (toolstack-vcpusN-memM)."""
    toolstack, vcpus, memory = (meta.get(k) for k in ("toolstack", "vcpus", "memory_mb"))
    if toolstack is None or vcpus is None or memory is None:
        return None
    return f"{toolstack}-vcpus{vcpus}-mem{memory}"


def _attempts(history: object, artifacts: Path | None) -> tuple[Attempt, ...]:
    """run.retry's meta["attempts"]: [{attempt, verdict, reason, emulation_fault, artifacts}]."""
    if not isinstance(history, list):
        return ()
    out = []
    for i, h in enumerate(history, 1):
        if not isinstance(h, Mapping):
            continue
        kept = h.get("artifacts")
        fault = h.get("emulation_fault")
        out.append(
            Attempt(
                number=int(h.get("attempt", i)),
                verdict=str(h.get("verdict", "")),
                reason=str(h.get("reason", "")),
                emulation_fault=str(fault) if fault is not None else None,
                artifacts=_relative(str(kept), artifacts) if kept is not None else None,
            )
        )
    return tuple(out)


def _relative(path: str, base: Path | None) -> str:
    if base is None:
        return path
    try:
        return Path(path).resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path


def _text(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _offline_id() -> str:
    return "check-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


__all__ = [
    "render_junit",
    "report_from_verdict",
    "write_html",
    "write_junit",
    "write_verdict_json",
]
