"""A plan run's summary for people and CI: plan-junit.xml (one testcase per point, valid
against junit-10.xsd) and summary.html (the regressions, then a history grid: points x
nights, each cell linking to that run's report.html).

Every string is guest- or host-chosen text as far as we know: autoescape is on, values
pass `xml_safe`, links are built from paths with `quote`.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import quote

from xenpvh.history.regress import Category, PointResult, final_runs
from xenpvh.history.store import HistoryStore, PlanRunRecord, RunRecord
from xenpvh.report.jinja_env import template_environment
from xenpvh.report.sanitize import xml_safe
from xenpvh.report.timefmt import iso_utc, junit_timestamp

TEMPLATE: Final = "plan_summary.html.j2"
MESSAGE_LIMIT: Final = 1024
GRID_NIGHTS: Final = 14
_FAILURE = {Category.NEW_FAILURE, Category.STILL_FAILING, Category.FAILING_NEW_POINT}
_ERROR = {Category.INFRASTRUCTURE, Category.NOT_RUN}


def render_plan_junit(plan: str, plan_run: PlanRunRecord, results: Sequence[PointResult]) -> str:
    suite = ET.Element("testsuite", name=xml_safe(f"xenpvh.plan.{plan}"))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total = 0.0
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("plan_run", plan_run.id),
        ("baseline", plan_run.baseline),
        ("hosts", plan_run.hosts),
    ):
        ET.SubElement(props, "property", name=name, value=xml_safe(value))
    for r in results:
        seconds = 0.0
        if r.current is not None:
            seconds = round(max(r.current.finished_at - r.current.started_at, 0.0), 3)
        total += seconds
        case = ET.SubElement(
            suite,
            "testcase",
            classname=xml_safe(f"xenpvh.plan.{plan}"),
            name=xml_safe(r.point),
            time=f"{seconds:.3f}",
        )
        counts["tests"] += 1
        message = xml_safe(f"{r.category}: {r.note}", MESSAGE_LIMIT)
        if r.category in _FAILURE:
            counts["failures"] += 1
            el = ET.SubElement(case, "failure", message=message, type=str(r.category))
            el.text = _case_text(r)
        elif r.category in _ERROR:
            counts["errors"] += 1
            el = ET.SubElement(case, "error", message=message, type=str(r.category))
            el.text = _case_text(r)
        if r.current is not None and r.current.report:
            out = ET.SubElement(case, "system-out")
            out.text = xml_safe(f"report: {r.current.report}\ncategory: {r.category}\n")
    suite.set("tests", str(counts["tests"]))
    suite.set("failures", str(counts["failures"]))
    suite.set("errors", str(counts["errors"]))
    suite.set("skipped", str(counts["skipped"]))
    suite.set("time", f"{total:.3f}")
    suite.set("timestamp", junit_timestamp(plan_run.started_at))
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def _case_text(r: PointResult) -> str:
    c = r.current
    lines = [f"category: {r.category}", r.note]
    if c is not None:
        lines += [f"run: {c.id}", f"host: {c.host}", f"artifacts: {c.artifacts}"]
    if r.previous is not None:
        lines.append(f"previous run: {r.previous.id} ({r.previous.verdict})")
    return xml_safe("\n".join(lines), 8 * MESSAGE_LIMIT)


@dataclass(frozen=True)
class Cell:
    verdict: str  # pass | fail | broken | blocked | "" (not run that night)
    title: str
    href: str | None


def _href(report: str | None, base: Path) -> str | None:
    if not report:
        return None
    path = Path(report)
    if not path.is_file():  # a night whose artifacts were pruned: the cell stays, no link
        return None
    try:
        rel = os.path.relpath(path, base)
    except ValueError:
        rel = str(path)
    if rel.startswith(".."):  # outside the published directory: a file URL
        return "file://" + quote(str(path.resolve()))
    return quote(rel)


def render_plan_html(
    store: HistoryStore,
    plan: str,
    plan_run: PlanRunRecord,
    results: Sequence[PointResult],
    out_dir: Path,
    *,
    nights: int = GRID_NIGHTS,
) -> str:
    """summary.html for `plan_run`, whose links are relative to `out_dir`."""
    runs = [
        p for p in store.plan_runs(plan=plan, limit=nights * 4) if p.baseline == plan_run.baseline
    ][:nights]
    runs.reverse()  # oldest night on the left
    by_night: dict[str, dict[str, RunRecord]] = {
        p.id: final_runs(store.runs(plan_run_id=p.id, limit=100_000, details=False)) for p in runs
    }
    grid = []
    for r in results:
        cells = []
        for night in runs:
            run = by_night[night.id].get(r.point)
            if run is None:
                cells.append(Cell("", "not run", None))
                continue
            title = xml_safe(f"{run.verdict} {run.failed_stage or ''} {run.reason}", 300)
            cells.append(Cell(run.verdict, title, _href(run.report, out_dir)))
        grid.append((xml_safe(r.point), cells))
    order = [
        Category.NEW_FAILURE,
        Category.INFRASTRUCTURE,
        Category.NOT_RUN,
        Category.FLAKY,
        Category.STILL_FAILING,
        Category.FAILING_NEW_POINT,
        Category.FIXED,
        Category.PASS,
    ]
    rows = sorted(results, key=lambda r: (order.index(r.category), r.point))
    return (
        template_environment()
        .get_template(TEMPLATE)
        .render(
            plan=xml_safe(plan),
            plan_run=xml_safe(plan_run.id),
            baseline=xml_safe(plan_run.baseline),
            hosts=xml_safe(plan_run.hosts),
            started=iso_utc(plan_run.started_at),
            counts={c: sum(1 for r in results if r.category is c) for c in order},
            rows=[
                {
                    "point": xml_safe(r.point),
                    "category": str(r.category),
                    "note": xml_safe(r.note, MESSAGE_LIMIT),
                    "href": _href(r.current.report if r.current else None, out_dir),
                    "host": xml_safe(r.current.host or "") if r.current else "",
                }
                for r in rows
            ],
            nights=[(xml_safe(p.id), iso_utc(p.started_at)[:16]) for p in runs],
            grid=grid,
        )
    )


__all__ = ["Cell", "render_plan_html", "render_plan_junit"]
