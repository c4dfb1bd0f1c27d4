"""Reports of a run: verdict.json, JUnit XML, an HTML page.  Pure renderers + atomic writes."""

from xenpvh.report.html_report import render_html, write_html
from xenpvh.report.json_report import render_verdict_json, write_verdict_json
from xenpvh.report.junit import render_junit, write_junit

__all__ = [
    "render_html",
    "render_junit",
    "render_verdict_json",
    "write_html",
    "write_junit",
    "write_verdict_json",
]
