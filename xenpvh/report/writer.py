"""write_reports: the one writer of a run's results.

Everything is rendered in memory first, so a rendering bug writes nothing; then each file
is replaced atomically (temp file + rename).  verdict.json goes last: a reader that waits
for it finds the other reports already in place.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from xenpvh.report.console_view import ConsoleView, read_console
from xenpvh.report.html_page import render_html
from xenpvh.report.junit_xml import render_junit
from xenpvh.report.record import RunReport
from xenpvh.report.verdict_doc import dumps_verdict_json, render_verdict_json, timings_doc
from xenpvh.util.fs import atomic_write_text

log = logging.getLogger(__name__)


def render_reports(report: RunReport) -> dict[str, str]:
    """{file name: text} of every report file, in the order they are written."""
    console = report.console_path
    view = read_console(console) if console is not None and console.is_file() else ConsoleView()
    return {
        "junit.xml": render_junit(report),
        "report.html": render_html(report, view),
        "timing.json": json.dumps(timings_doc(report), indent=2, allow_nan=False) + "\n",
        "verdict.json": dumps_verdict_json(render_verdict_json(report)),
    }


def write_reports(report: RunReport) -> dict[str, Path]:
    """Write verdict.json, junit.xml, report.html and timing.json into the run directory;
    returns {file name: path}."""
    if report.artifacts is None:
        raise ValueError("write_reports needs a run directory (RunReport.artifacts)")
    texts = render_reports(report)
    report.artifacts.mkdir(parents=True, exist_ok=True)
    written = {
        name: atomic_write_text(report.artifacts / name, text) for name, text in texts.items()
    }
    log.debug("reports of run %s written to %s", report.run_id, report.artifacts)
    return written


__all__ = ["render_reports", "write_reports"]
