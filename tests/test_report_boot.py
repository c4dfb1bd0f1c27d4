"""The reports a whole Session writes through the one writer (`write_reports`): schema-valid,
and the live checker's line numbers are the HTML's anchors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_cases import validate_junit, validate_verdict_json
from test_run_boot import GOOD, FakeXenStore

from xenpvh.check.verdict import VerdictValue
from xenpvh.profile import load_profile
from xenpvh.report import read_console
from xenpvh.run.options import HostClients
from xenpvh.run.request import BootRequest
from xenpvh.run.session import Session

PROFILE = load_profile("linux-pvh")


@pytest.mark.parametrize(
    ("console", "verdict"),
    [(GOOD, VerdictValue.PASS), (GOOD.replace(b"2 CPUs", b"1 CPU"), VerdictValue.FAIL)],
)
def test_a_boot_writes_valid_reports(host, tmp_path: Path, console: bytes, verdict) -> None:
    kernel, ramdisk = tmp_path / "vmlinuz", tmp_path / "initrd"
    kernel.write_bytes(b"kernel")
    ramdisk.write_bytes(b"initrd")
    host.console = console
    art = tmp_path / "art"
    xs = FakeXenStore({"vbd": 4, "vif": 4})
    request = BootRequest(
        profile="linux-pvh", kernel=str(kernel), ramdisk=str(ramdisk), artifacts=art, attempts=1
    )
    session = Session(request, host=host, clients=HostClients(xenstore_factory=lambda h: xs))
    v = session.run().verdict
    assert v.verdict is verdict, v.reason
    doc = json.loads((art / "verdict.json").read_text())
    validate_verdict_json(doc)
    assert doc["point"] == "xl-vcpus2-mem256" and doc["run_id"] == session.run_id
    assert {"console.log", "domain.cfg", "junit.xml", "report.html"} <= set(doc["artifacts"])
    suite = validate_junit((art / "junit.xml").read_text())
    assert {c.get("classname") for c in suite.findall("testcase")} == {
        "xenpvh.linux-pvh.xl-vcpus2-mem256"
    }
    # The live checker numbered each stage's line as console.log's lines are numbered.
    lines = {line.number: line.text for line in read_console(art / "console.log").lines}
    page = (art / "report.html").read_text()
    for stage in doc["stages"]:
        if stage["status"] == "not-reached":
            continue
        assert stage["evidence"] in lines[stage["line"]]
        assert f'href="#L{stage["line"]}"' in page
