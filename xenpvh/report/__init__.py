"""The report room: the one writer of a run's results.

`write_reports(RunReport)` renders verdict.json (schema: verdict.schema.json), junit.xml,
report.html and timing.json in memory, then replaces each file atomically.  The render_*
functions are pure (they read the run directory, never write it).
"""

from xenpvh.report.console_view import ConsoleView, read_console
from xenpvh.report.html_page import render_html
from xenpvh.report.junit_xml import render_junit
from xenpvh.report.record import Attempt, RunReport
from xenpvh.report.verdict_doc import SCHEMA_VERSION, load_schema, render_verdict_json
from xenpvh.report.writer import render_reports, write_reports

__all__ = [
    "SCHEMA_VERSION",
    "Attempt",
    "ConsoleView",
    "RunReport",
    "load_schema",
    "read_console",
    "render_html",
    "render_junit",
    "render_reports",
    "render_verdict_json",
    "write_reports",
]
