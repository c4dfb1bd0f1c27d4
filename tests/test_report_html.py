"""report.html: the triage page.  Hostile console text stays text, line anchors match the
checker's line numbers, the console is bounded, every attempt and file is linked."""

from __future__ import annotations

import dataclasses
import re
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import jinja2
import pytest
from report_cases import (
    AP_FAIL_LINE,
    CASES,
    HOSTILE,
    HOSTILE_LINE,
    PROFILE,
    ap_fail_run,
    broken_run,
    pass_run,
)

from xenpvh.check.checker import check_file
from xenpvh.check.verdict import StageResult, StageStatus, Verdict, VerdictValue
from xenpvh.report import (
    RunReport,
    html_page,
    jinja_env,
    plan_summary,
    read_console,
    render_html,
    write_reports,
)
from xenpvh.report.console_view import MAX_CONSOLE_BYTES, MAX_CONSOLE_LINES, MAX_LINE_CHARS


class Page(HTMLParser):
    """Elements by id, their classes and text, links, and raw <script> elements."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: dict[str, dict[str, str]] = {}
        self.text_of: dict[str, str] = {}
        self.order: list[str] = []
        self.links: list[str] = []
        self.tags: set[str] = set()
        self.body: dict[str, str] = {}
        self._open: list[str | None] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        if tag == "body":
            self.body = a
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        ident = a.get("id")
        if ident:
            self.ids[ident] = a
            self.text_of[ident] = ""
            self.order.append(ident)
        if tag not in ("meta", "br", "img", "link", "input"):
            self._open.append(ident)

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for ident in self._open:
            if ident:
                self.text_of[ident] += data


def test_template_is_package_data() -> None:
    assert resources.files("xenpvh.report").joinpath("templates/report.html.j2").is_file()


@pytest.mark.parametrize("case", CASES)
def test_every_case_renders(case: str, tmp_path: Path) -> None:
    report = CASES[case](tmp_path)
    write_reports(report)
    page = Page((tmp_path / "report.html").read_text())
    assert page.text_of["verdict"] == str(report.verdict.verdict)
    assert "script" not in page.tags


def test_top_of_page_names_verdict_stage_reason(tmp_path: Path) -> None:
    text = render_html(ap_fail_run(tmp_path), read_console(tmp_path / "console.log"))
    page = Page(text)
    assert page.text_of["verdict"] == "fail"
    assert page.text_of["failed-stage"] == "ap-launch"
    assert page.text_of["reason"] == "ap-launch: guest reports 1 CPUs, expected 2"
    # ... above everything else: the summary comes before the stage table and the console.
    assert page.order.index("summary") < page.order.index("stages") < page.order.index("L1")
    assert "<title>xenpvh fail at ap-launch" in text


def test_console_lines_are_anchors_and_stage_lines_are_linked(tmp_path: Path) -> None:
    report = ap_fail_run(tmp_path)
    page = Page(render_html(report, read_console(tmp_path / "console.log")))
    n_lines = 9
    assert all(f"L{n}" in page.ids for n in range(1, n_lines + 1))
    assert f"L{n_lines + 1}" not in page.ids
    # The failure line is highlighted and linked from the top and from the stage table.
    assert "failure" in page.ids[f"L{AP_FAIL_LINE}"]["class"].split()
    assert page.text_of[f"L{AP_FAIL_LINE}"].endswith("smp: Brought up 1 node, 1 CPU")
    assert page.links.count(f"#L{AP_FAIL_LINE}") >= 3  # summary, stage table, line number
    # The passed stage's evidence line is highlighted as evidence.
    assert "evidence" in page.ids["L2"]["class"].split()
    assert "#L2" in page.links
    # Lines no stage chose are plain.
    assert page.ids["L1"]["class"].split() == ["l"]


def test_hostile_console_is_text(tmp_path: Path) -> None:
    report = pass_run(tmp_path)
    report.verdict.reason = "<img src=x onerror=alert(1)>"
    report.verdict.meta["<b>key"] = "<iframe src=javascript:alert(1)>"
    text = render_html(report, read_console(tmp_path / "console.log"))
    page = Page(text)
    assert page.tags.isdisjoint({"script", "img", "iframe", "b"})
    assert page.text_of[f"L{HOSTILE_LINE}"].endswith(HOSTILE)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    # Control characters never reach the page raw: ANSI escapes removed, the rest shown.
    assert "\x1b" not in text and "\x07" not in text
    assert page.text_of["L3"].endswith('x86/cpu: model \\x07 & "quoted" \ufffd\ufffd bytes')
    assert "Content-Security-Policy" in text


def test_html_escapes_every_field(tmp_path: Path) -> None:
    bad = "<script>x</script>\x00\ud800"
    v = Verdict(
        VerdictValue.FAIL,
        bad,
        bad,
        [StageResult(bad, StageStatus.FAILED, 1.0, bad, bad)],
        meta={bad: bad, "xenstore_devices": [{"kind": bad, "devid": bad, "frontend": bad}]},
    )
    report = RunReport(v, bad, bad, bad, bad, 0.0, 1.0, tmp_path, timings={bad: 1.0})
    write_reports(report)  # lone surrogates cannot break the UTF-8 file either
    text = (tmp_path / "report.html").read_text()
    assert "<script" not in text and "\x00" not in text
    assert "\\x00\\ud800" in text


def test_evidence_found_by_text_when_no_line_number(tmp_path: Path) -> None:
    """Verdicts from before StageResult.line (or other producers) still get their links."""
    report = ap_fail_run(tmp_path)
    report.verdict.stages[:] = [dataclasses.replace(s, line=None) for s in report.verdict.stages]
    page = Page(render_html(report, read_console(tmp_path / "console.log")))
    assert "failure" in page.ids[f"L{AP_FAIL_LINE}"]["class"].split()
    assert "evidence" in page.ids["L2"]["class"].split()


def test_line_numbers_match_the_checker_for_any_line_ends(tmp_path: Path) -> None:
    console = (
        b"noise\rLinux version 6.1\r\n"
        b"\x1b[0mBooting paravirtualized kernel on Xen PVH\n\r"
        b"smp: Brought up 1 node, 2 CPUs\r\r\n"
        b"Run /init as init process\n" + b"x" * 100_000 + b"\n"
        b"blkfront: xvda: flush diskcache: enabled; persistent grants: enabled;\r"
        b"xenpvh-init: netfront eth0 up\r\n"
        b"xenpvh-guest login: "
    )
    log = tmp_path / "console.log"
    log.write_bytes(console)
    verdict = check_file(log, PROFILE, vcpus=2, disks=1, vifs=1)
    assert verdict.verdict is VerdictValue.PASS, verdict.reason
    view = read_console(log)
    by_number = {line.number: line.text for line in view.lines}
    for stage in verdict.stages:
        assert stage.line is not None, stage
        assert stage.evidence.strip() in by_number[stage.line], stage


def test_attempts_and_files_are_linked(tmp_path: Path) -> None:
    report = broken_run(tmp_path)
    write_reports(report)
    text = (tmp_path / "report.html").read_text()
    page = Page(text)
    assert "attempt-1/" in page.links
    assert text.count("tcg-svm-double-delivery on host nested") >= 3  # reason + 2 attempts
    files = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert files <= set(page.links)
    assert "attempt-1/console.log" in files
    assert "#summary" not in page.links  # (no self links beyond line anchors)
    assert "broken: the infrastructure failed" in text
    # The guest's login "failure" is shown but not blamed: the host spoilt the run.
    assert "not counted: the run was broken" in text


def test_xenstore_devices_table(tmp_path: Path) -> None:
    report = pass_run(tmp_path)
    report.verdict.meta["xenstore_devices"][0]["backend_state"] = 2  # type: ignore[index]
    text = render_html(report, [])
    assert 'id="xenstore"' in text
    row = re.search(r"<tr class=\"(\w+)\">\s*<td>vbd</td>.*?</tr>", text, re.S)
    assert row is not None and row.group(1) == "failed"
    assert "4 (Connected)" in row.group(0) and "2 (InitWait)" in row.group(0)
    assert "/local/domain/7/device/vbd/51712" in row.group(0)
    assert "/local/domain/0/backend/vbd/7/51712" in row.group(0)
    report.verdict.meta.pop("xenstore_devices")
    assert 'id="xenstore"' not in render_html(report, [])


def test_time_bars_follow_the_stage_times(tmp_path: Path) -> None:
    text = render_html(pass_run(tmp_path), [])
    bars = re.findall(r'style="left: ([\d.]+)%; width: ([\d.]+)%"', text)
    # early-init at 0.0 s (a sliver), ap-launch 0 -> 0.412 s, then the rest up to 1.5 s.
    assert bars[0] == ("0.0", "0.5")
    assert bars[1] == ("0.0", f"{100 * 0.412345 / 1.5:.2f}")
    assert float(bars[-1][0]) + float(bars[-1][1]) == pytest.approx(100.0, abs=0.6)


def test_console_memory_is_bounded(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    with log.open("wb") as f:
        for i in range(1, 300_001):
            f.write(b"line %d " % i + b"y" * 60 + b"\r\n")
        f.write(b"z" * 1_000_000 + b"\r\n")  # one overlong line
        f.write(b"last line\r\n")
    view = read_console(log)
    shown = sum(len(line.text) for line in view.lines)
    assert shown <= MAX_CONSOLE_BYTES and len(view.lines) <= MAX_CONSOLE_LINES
    assert view.total_lines == 300_002
    assert view.lines[0].number == 1 and view.lines[-1].number == 300_002
    assert view.lines[-1].text == "last line"
    long = view.lines[-2]
    assert long.number == 300_001 and long.cut and len(long.text) == MAX_LINE_CHARS
    assert view.omitted == 300_002 - len(view.lines) > 0
    # Line numbers stay true across the omitted middle.
    numbered = [line for line in view.lines if line.text.startswith("line ")]
    assert all(line.text.startswith(f"line {line.number} ") for line in numbered)
    page = render_html(pass_run(tmp_path / "run"), view)
    assert len(page) < MAX_CONSOLE_BYTES + MAX_CONSOLE_LINES * 200
    assert "lines not shown" in page and "[line cut]" in page


def test_console_bytes_are_bounded(tmp_path: Path) -> None:
    """Long lines: the byte budget binds before the line budget."""
    log = tmp_path / "console.log"
    line = b"w" * (MAX_LINE_CHARS - 10)
    n = 2 * MAX_CONSOLE_BYTES // len(line)
    with log.open("wb") as f:
        for i in range(n):
            f.write(b"%08d " % i + line + b"\n")
    view = read_console(log)
    assert len(view.lines) < MAX_CONSOLE_LINES
    assert sum(len(line.text) for line in view.lines) <= MAX_CONSOLE_BYTES
    assert view.total_lines == n and view.lines[-1].text.startswith(f"{n - 1:08d} ")


def test_small_budget_keeps_head_and_tail(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(b"".join(b"%d\n" % i for i in range(1, 1001)))
    view = read_console(log, max_bytes=10**6, max_lines=10)
    assert [line.number for line in view.lines] == [1, 2, 3, 4, 5, 996, 997, 998, 999, 1000]
    assert [line.text for line in view.lines][-1] == "1000" and view.omitted == 990


def test_plain_lines_are_numbered_from_one() -> None:
    v = Verdict(VerdictValue.PASS, "ok", stages=[StageResult("login", StageStatus.PASSED, 1.0)])
    report = RunReport(v, "p", "q", "r", None, 0.0, 1.0, None)
    page = Page(render_html(report, ["a", "b\x1b[1m!"]))
    assert page.text_of["L1"].endswith("a") and page.text_of["L2"].endswith("b!")


# ---- the one template environment ----


def test_one_environment_for_every_report_template(monkeypatch: pytest.MonkeyPatch) -> None:
    """report.html and the plan summary load their templates from the same environment:
    HTML-escaped, strict about undefined names, every printed string XML-safe and bounded."""
    env = jinja_env.template_environment()
    assert env is jinja_env.template_environment()  # made once
    assert set(env.list_templates()) == {"report.html.j2", "plan_summary.html.j2"}
    page = env.from_string("<p>{{ v }}</p>").render(v="<script>\x1b[2J" + "x" * (70 * 1024))
    assert page.startswith("<p>&lt;script&gt;\\x1b[2J")
    assert "chars cut]" in page and len(page) < 66 * 1024
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ missing }}").render()
    # Both renderers take their templates from it (no environment of their own).
    assert html_page.template_environment is jinja_env.template_environment
    assert plan_summary.template_environment is jinja_env.template_environment
    assert not [name for name in vars(html_page) if "environment" in name.lower()
                if name != "template_environment"]  # fmt: skip
