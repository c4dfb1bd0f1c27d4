"""The Session: one request to written reports, the same for every front end.  Runs against
the boundary fake of test_run_boot (FakeXenHost answers like xl 4.17; `xl console` is a real
pty child; XenStore is faked at its protocol boundary)."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from test_run_boot import GOOD, FakeXenStore
from test_toolstack_fakes import FakeXenHost

from xenpvh.check.checker import StageEvent
from xenpvh.check.verdict import VerdictValue
from xenpvh.run.events import VerdictEvent
from xenpvh.run.options import HostClients
from xenpvh.run.request import BootRequest, HostRequest
from xenpvh.run.session import Session


@pytest.fixture
def host(host: FakeXenHost):
    """conftest's fake host, checked after the test: every session destroyed its domain."""
    yield host
    assert list(host.domains) == ["Domain-0"]


@pytest.fixture
def kit(tmp_path: Path) -> tuple[str, str]:
    k, r = tmp_path / "vmlinuz", tmp_path / "initrd"
    k.write_bytes(b"kernel")
    r.write_bytes(b"initrd")
    return str(k), str(r)


def _session(fake_host, kit, **kw) -> Session:
    xs = FakeXenStore({"vbd": 4, "vif": 4})
    request = BootRequest(profile="linux-pvh", kernel=kit[0], ramdisk=kit[1], **kw)
    return Session(request, host=fake_host, clients=HostClients(xenstore_factory=lambda h: xs))


def test_reports_agree_with_each_other_and_with_the_result(host, kit, tmp_path) -> None:
    host.console = GOOD
    result = _session(host, kit, artifacts=tmp_path / "art").run()
    v = result.verdict
    assert v.verdict is VerdictValue.PASS, v.reason
    art = tmp_path / "art"
    doc = json.loads((art / "verdict.json").read_text())
    assert doc["verdict"] == "pass" and doc["profile"] == "linux-pvh"
    assert doc["point"] == "xl-vcpus2-mem256"
    assert [s["name"] for s in doc["stages"]] == [s.name for s in v.stages]
    suite = ET.parse(art / "junit.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    cases = suite.findall("testcase")
    assert {c.get("classname") for c in cases} == {"xenpvh.linux-pvh.xl-vcpus2-mem256"}
    assert suite.get("failures") == "0" and suite.get("errors") == "0"
    assert "pass" in (art / "report.html").read_text()
    assert json.loads((art / "timing.json").read_text())
    assert set(result.reports) >= {"verdict.json", "junit.xml", "report.html", "timing.json"}


def test_the_verdict_is_written_before_the_guest_is_destroyed(host, kit, tmp_path) -> None:
    host.console = GOOD
    seen: dict[str, object] = {}

    def on_event(e: object) -> None:
        if isinstance(e, VerdictEvent):
            seen["json"] = json.loads((tmp_path / "art" / "verdict.json").read_text())
            seen["domains"] = list(host.domains)

    s = _session(host, kit, artifacts=tmp_path / "art")
    s.on_event = on_event
    s.run()
    assert seen["json"]["verdict"] == "pass"  # type: ignore[index]
    assert len(seen["domains"]) == 2  # type: ignore[arg-type]  (the guest still existed)


def test_default_artifacts_get_a_latest_link(host, kit, tmp_path) -> None:
    host.console = GOOD
    s = _session(host, kit)
    s.artifacts_root = tmp_path / "artifacts"
    result = s.run()
    latest = tmp_path / "artifacts" / "latest"
    assert latest.is_symlink() and latest.resolve() == result.artifacts.resolve()
    assert (latest / "verdict.json").is_file()


def test_blocked_request_touches_no_host_and_leaves_no_directory(host, kit, tmp_path) -> None:
    s = _session(host, kit, attempts=0)
    s.artifacts_root = tmp_path / "artifacts"
    result = s.run()
    assert result.verdict.verdict is VerdictValue.BLOCKED
    assert host.calls == [] and not (tmp_path / "artifacts").exists()
    assert result.reports == {}


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"vcpus": 100_000}, "vcpus must be"),
        ({"memory_mb": 999_999_999}, "memory must be"),
        ({"cmdline_append": "x" * 100_000}, "at most 4096"),
        ({"cmdline_append": "a\nb"}, "one line"),
        ({"cmdline_append": 'quiet" extra="x'}, "cmdline: refusing"),
        ({"cmdline_append": "a'b"}, "cmdline: refusing"),
        ({"timeout": float("inf")}, "timeout"),
        ({"toolstack": "xm"}, "toolstack"),
        ({"host": HostRequest(qemu="nonsense")}, "--qemu"),
    ],
)
def test_bad_input_is_blocked_before_any_host(host, kit, tmp_path, kw, needle) -> None:
    s = _session(host, kit, artifacts=tmp_path / "art", **kw)
    v = s.run().verdict
    assert v.verdict is VerdictValue.BLOCKED and needle in v.reason
    assert host.calls == []


def test_hostile_cmdline_is_blocked_before_a_host_is_opened(kit, tmp_path) -> None:
    """The input alone decides it: no host is opened (a nested host would boot, a lab box
    be dialled) just to refuse it."""
    opened: list[object] = []

    def opener(req, artifacts):
        opened.append(req)
        raise AssertionError("a host was opened")

    request = BootRequest(
        profile="linux-pvh",
        kernel=kit[0],
        ramdisk=kit[1],
        cmdline_append="x\" extra=\"on_crash='preserve'",
        host=HostRequest(spec="ssh://root@192.0.2.1:1"),
        artifacts=tmp_path / "art",
    )
    v = Session(request, open_host=opener).run().verdict
    assert v.verdict is VerdictValue.BLOCKED and "cmdline" in v.reason and not opened


class Terminated(KeyboardInterrupt):
    """What the CLI raises on SIGTERM: a KeyboardInterrupt carrying its reason."""

    reason = "terminated (SIGTERM)"


@pytest.mark.parametrize(
    ("interrupt", "reason"),
    [
        (KeyboardInterrupt, "interrupted (KeyboardInterrupt)"),
        (Terminated, "terminated (SIGTERM)"),
    ],
)
def test_an_interrupt_leaves_a_verdict_json_naming_it_and_no_guest(
    host, kit, tmp_path, interrupt: type[KeyboardInterrupt], reason: str
) -> None:
    host.console = GOOD

    def stop(ev: object) -> None:
        if isinstance(ev, StageEvent) and ev.stage == "ap-launch" and ev.kind == "passed":
            raise interrupt

    s = _session(host, kit, artifacts=tmp_path / "art")
    s.on_event = stop
    with pytest.raises(interrupt):
        s.run()
    doc = json.loads((tmp_path / "art" / "verdict.json").read_text())
    assert doc["verdict"] == "broken" and doc["reason"] == reason
    assert not [p for p in os.listdir(tmp_path / "art") if p.startswith(".")]  # no temp files


def test_a_killed_run_leaves_a_verdict_json_saying_so(kit, tmp_path) -> None:
    """SIGKILL cannot be caught: the run dir holds a verdict.json from its start, and a run
    killed before its verdict leaves that one (broken, naming the process)."""
    import signal
    import subprocess
    import sys
    import time

    art = tmp_path / "art"
    script = f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_run_boot import FakeXenStore
from test_toolstack_fakes import FakeXenHost
from xenpvh.run.options import HostClients
from xenpvh.run.request import BootRequest
from xenpvh.run.session import Session
host = FakeXenHost()
host.console = b"Booting paravirtualized kernel on Xen PVH\\n"
req = BootRequest(
    profile="linux-pvh", kernel={kit[0]!r}, ramdisk={kit[1]!r}, artifacts={str(art)!r}
)
Session(req, host=host, clients=HostClients(xenstore_factory=lambda h: FakeXenStore())).run()
"""
    child = subprocess.Popen([sys.executable, "-c", script], env={**os.environ})
    try:
        deadline = time.monotonic() + 30
        while not (art / "console.log").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (art / "console.log").exists(), "the run never started watching"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    doc = json.loads((art / "verdict.json").read_text())
    assert doc["verdict"] == "broken" and doc["failed_stage"] is None
    assert f"pid {child.pid}" in doc["reason"] and "killed" in doc["reason"]
    assert doc["meta"]["provisional"] is True
