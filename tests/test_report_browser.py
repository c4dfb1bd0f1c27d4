"""report.html in a real headless browser (Debian's chromium): what a person opening the
page gets.  Hostile console lines are text in the DOM (no element, nothing executed), the
failed stage is at the top, every console line is an anchor."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from report_cases import AP_FAIL_LINE, HOSTILE, HOSTILE_LINE, ap_fail_run
from test_report_html import Page

from xenpvh.report import write_reports

pytestmark = pytest.mark.host

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# If the page's script ran, it would mark the body; the mark must not be in the DOM.
PWN = "<script>document.body.setAttribute('data-pwned','yes')</script>"
PWN_IMG = "<img src=x onerror=\"document.title='pwned'\">"


def _chromium(tmp_path: Path, *args: str) -> str:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (scripts/setup installs it)")
    profile = tmp_path / "chromium-profile"
    r = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.fixture
def report_page(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    report = ap_fail_run(run)
    with (run / "console.log").open("ab") as f:
        f.write(b"\r\n" + PWN.encode() + b"\r\n" + PWN_IMG.encode() + b"\r\n")
    write_reports(report)
    return run / "report.html"


def test_browser_dom_keeps_hostile_text_inert(report_page: Path, tmp_path: Path) -> None:
    dom = _chromium(tmp_path, "--dump-dom", report_page.as_uri())
    page = Page(dom)
    # Rendered by the browser: the hostile lines are text nodes, not elements.
    assert "script" not in page.tags and "img" not in page.tags
    assert page.text_of[f"L{HOSTILE_LINE}"].endswith(HOSTILE)
    assert any(t.endswith(PWN) for t in page.text_of.values())
    assert any(t.endswith(PWN_IMG) for t in page.text_of.values())
    assert "data-pwned" not in page.body
    assert "<title>xenpvh fail at ap-launch" in dom and "pwned</title>" not in dom
    # The failed stage is at the top, before the stage table and the console.
    assert page.text_of["verdict"] == "fail" and page.text_of["failed-stage"] == "ap-launch"
    assert page.order.index("summary") < page.order.index("stages") < page.order.index("L1")
    # Every console line is an anchor; the failure line is highlighted and linked.
    numbers = sorted(int(i[1:]) for i in page.ids if i.startswith("L") and i[1:].isdigit())
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 11
    assert "failure" in page.ids[f"L{AP_FAIL_LINE}"]["class"].split()
    assert f"#L{AP_FAIL_LINE}" in page.links


def test_browser_screenshot(report_page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", report_page.as_uri())
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
