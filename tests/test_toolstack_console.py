"""ConsoleCapture: a real child on a real pty stands in for `xl console` (Host boundary)."""

from __future__ import annotations

import time
from pathlib import Path

from test_toolstack_fakes import FakeXenHost

from xenpvh.toolstack.console import ConsoleCapture, ConsoleSource, skip_ignoring_cr
from xenpvh.toolstack.xl import Xl


def _domain(host: FakeXenHost, name: str = "xenpvh-c"):
    host.files["/c.cfg"] = f'name = "{name}"\ntype = "pvh"\n'.encode()
    return Xl(host).create("/c.cfg")


def _drain(cap: ConsoleCapture, until, limit: float = 10.0) -> bytes:
    out = b""
    deadline = time.monotonic() + limit
    while not until(out) and time.monotonic() < deadline:
        out += cap.read(0.1)
    return out


def test_client_capture_saves_raw_bytes(host: FakeXenHost, tmp_path: Path) -> None:
    host.console = b"Linux version 6.1\nxenbus: ok\nlogin: "
    dom = _domain(host)
    log = tmp_path / "console.log"
    with ConsoleCapture(host, dom, log_path=log) as cap:
        got = _drain(cap, lambda b: b.endswith(b"login: "))
        assert cap.source is ConsoleSource.CLIENT
    assert got.replace(b"\r", b"") == host.console.replace(b"\r", b"")
    assert log.read_bytes() == got
    # It attached to the domain's console and waited for xenconsole's lock first.
    assert ("<spawn>", "xl", "console", "-t", "pv", "xenpvh-c") in host.calls
    assert ("test", "-e", f"/var/lock/xenconsole.{dom.domid}") in host.calls


def test_client_death_falls_back_to_consoled_log(host: FakeXenHost, tmp_path: Path) -> None:
    host.console = b"line one\nline two\n"
    host.console_then = "exit"  # the client dies, the domain keeps running
    dom = _domain(host)
    host.files[f"/var/log/xen/console/guest-{dom.name}.log"] = (
        b"line one\nline two\nline three\nlogin: "
    )
    with ConsoleCapture(host, dom, log_path=tmp_path / "c.log", log_poll_interval=0.05) as cap:
        got = _drain(cap, lambda b: b.endswith(b"login: "))
        assert cap.source is ConsoleSource.LOG
        assert "console client ended" in cap.fallback_reason
        # The log's bytes already seen through the pty are not delivered twice.
        assert got.replace(b"\r", b"") == b"line one\nline two\nline three\nlogin: "
        host.files[f"/var/log/xen/console/guest-{dom.name}.log"] += b"\nmore"
        assert _drain(cap, lambda b: b == b"\nmore") == b"\nmore"
        Xl(host).destroy(dom.name)
        _drain(cap, lambda b: cap.ended, limit=5)
        assert cap.ended


def test_crash_tail_recovered_from_log(host: FakeXenHost, tmp_path: Path) -> None:
    host.console = b"booting\n"
    host.console_then = "crash"  # client ends because on_crash=destroy removed the domain
    dom = _domain(host)
    host.files[f"/var/log/xen/console/guest-{dom.name}.log"] = (
        b"booting\nKernel panic - not syncing: VFS\n"
    )
    with ConsoleCapture(host, dom, log_path=tmp_path / "c.log") as cap:
        got = _drain(cap, lambda b: cap.ended)
    assert got.replace(b"\r", b"") == b"booting\nKernel panic - not syncing: VFS\n"
    assert cap.ended


def test_saved_log_is_capped_and_says_so(host: FakeXenHost, tmp_path: Path) -> None:
    host.console = b"0123456789" * 50 + b"\nEND"
    dom = _domain(host)
    log = tmp_path / "console.log"
    with ConsoleCapture(host, dom, log_path=log, max_log_bytes=100) as cap:
        got = _drain(cap, lambda b: b.endswith(b"END"))
    assert cap.truncated and cap.bytes_total == len(got)
    saved = log.read_bytes()
    assert saved.startswith(got[:100])
    assert saved[100:].startswith(b"\n[xenpvh: console.log truncated at 100 bytes;")


def test_skip_ignoring_cr() -> None:
    assert skip_ignoring_cr(b"a\r\nb\r\nc", 2) == 3  # after "a\r\n"
    assert skip_ignoring_cr(b"ab", 5) == 2
    assert skip_ignoring_cr(b"ab", 0) == 0
