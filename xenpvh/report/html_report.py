"""A self-contained HTML page for one run: verdict, stage timeline, console excerpt."""

from __future__ import annotations

import html
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from xenpvh.check.verdict import Verdict
from xenpvh.report.atomic import atomic_write_text
from xenpvh.report.sanitize import xml_safe

MAX_CONSOLE_LINES: Final = 200
MAX_LINE_CHARS: Final = 500
MAX_FIELD_CHARS: Final = 4096

_CSS: Final = """
body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}
td,th{border:1px solid #999;padding:.2em .5em;text-align:left;vertical-align:top}
.passed,.pass{background:#cfc}.failed,.fail{background:#fcc}.not-reached{background:#eee}
.broken,.blocked{background:#fe9}pre{background:#f4f4f4;padding:1em;overflow-x:auto}
"""


def _e(text: object, limit: int = MAX_FIELD_CHARS) -> str:
    return html.escape(xml_safe(str(text), limit), quote=True)


def console_excerpt(lines: Iterable[str]) -> list[str]:
    """The last MAX_CONSOLE_LINES lines, each cut to MAX_LINE_CHARS (bounded memory)."""
    tail: list[str] = []
    for line in lines:
        tail.append(line[:MAX_LINE_CHARS])
        if len(tail) > MAX_CONSOLE_LINES:
            del tail[0]
    return tail


def render_html(verdict: Verdict, console_tail_lines: Iterable[str]) -> str:
    v = str(verdict.verdict)
    rows = []
    for s in verdict.stages:
        t = "" if s.t is None else f"{s.t:.3f}"
        st = str(s.status)
        rows.append(
            f'<tr class="{_e(st)}"><td>{_e(s.name)}</td><td>{_e(st)}</td><td>{t}</td>'
            f"<td><code>{_e(s.evidence)}</code></td><td>{_e(s.detail)}</td></tr>"
        )
    meta = "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(val)}</td></tr>" for k, val in sorted(verdict.meta.items())
    )
    console = "\n".join(_e(line, MAX_LINE_CHARS) for line in console_excerpt(console_tail_lines))
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>xenpvh: {_e(v)}</title><style>{_CSS}</style></head><body>\n"
        f'<h1 class="{_e(v)}">verdict: {_e(v)}</h1>\n'
        f"<p>{_e(verdict.reason)}</p>\n"
        + (f"<p>failed stage: {_e(verdict.failed_stage)}</p>\n" if verdict.failed_stage else "")
        + "<h2>Stages</h2>\n<table><tr><th>stage</th><th>status</th><th>t (s)</th>"
        "<th>evidence</th><th>detail</th></tr>\n"
        + "\n".join(rows)
        + "\n</table>\n"
        + (f"<h2>Run</h2>\n<table>{meta}</table>\n" if meta else "")
        + f"<h2>Console (last {MAX_CONSOLE_LINES} lines at most)</h2>\n<pre>{console}</pre>\n"
        "</body></html>\n"
    )


def write_html(
    verdict: Verdict, path: str | os.PathLike[str], console_tail_lines: Iterable[str]
) -> Path:
    return atomic_write_text(path, render_html(verdict, console_tail_lines))
