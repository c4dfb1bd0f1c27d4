"""The libvirt driver on real Xen: libvirtd's libxl driver in the nested host's Debian dom0.

The connection is the real one (relay over ssh to /var/run/libvirt/libvirt-sock, libvirt's
remote protocol, the libxl driver), the guest is the linux-pvh profile's kernel and initrd.
Afterwards neither xl nor libvirt may know any xenpvh domain.  Measured times are appended
to `$XENPVH_LIVE_TIMES` (JSON lines) when that variable is set.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from xenpvh.check.verdict import StageStatus, VerdictValue
from xenpvh.host.base import Host
from xenpvh.run.options import HostClients
from xenpvh.run.request import BootRequest
from xenpvh.run.session import Session
from xenpvh.toolstack.libvirt import Libvirt, os_machine
from xenpvh.toolstack.xl import Xl

pytestmark = pytest.mark.xen

VIRSH = ["virsh", "-c", "xen:///system"]


@pytest.fixture(scope="module")
def nested_host(xen_host: Host) -> Host:
    """The session's host (the plugin's `xen_host`).  The nested image ships the CPU model
    libvirtd's libxl driver needs on a TCG dom0 (TCG_CPU_MODEL_XML); a lab box on real
    hardware needs none: the test changes nothing on the host."""
    return xen_host


@pytest.fixture
def host(nested_host: Host) -> Iterator[Host]:
    yield nested_host
    # Whatever the test did, neither toolstack may know a xenpvh domain afterwards.
    assert [d.name for d in Xl(nested_host).list()] == ["Domain-0"]
    names = nested_host.run([*VIRSH, "list", "--all", "--name"], check=True).out.split()
    assert [n for n in names if n.startswith("xenpvh-")] == [], names
    left = nested_host.run(["ls", "-A", "/var/lib/xenpvh/runs"]).out.split()
    assert left == [], f"run dirs left on the host: {left}"


def _record(test: str, row: dict[str, Any]) -> None:
    line = json.dumps({"test": test, **row})
    print(line)
    out = os.environ.get("XENPVH_LIVE_TIMES")
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


def test_libvirtd_offers_pvh_through_the_relay(host: Host) -> None:
    t0 = time.monotonic()
    with Libvirt(host) as lv:
        conn = lv.connection()
        connected = time.monotonic() - t0
        assert lv.uri.startswith("xen+unix:///system?socket=")
        xen, lib, caps = lv.versions()
        assert xen.startswith("4.17") and lib >= 9_000_000
        assert "xenpvh" in caps
        assert conn.getType() == "Xen"
    _record("libvirt-connect", {"connect_s": round(connected, 3), "xen": xen, "libvirt": lib})


def test_linux_pvh_boots_with_libvirt(host: Host, tmp_path: Path) -> None:
    from xenpvh.build.guestkit import build_linux_guest_kit

    kit = build_linux_guest_kit()
    lv = Libvirt(host)
    t0 = time.monotonic()
    try:
        # Retried only when the nested host's own emulation spoils the run (Session).
        v = (
            Session(
                BootRequest(profile="linux-pvh", vcpus=2, toolstack="libvirt", artifacts=tmp_path),
                host=host,
                guest_kit=kit,
                clients=HostClients(toolstack=lv),
            )
            .run()
            .verdict
        )
    finally:
        lv.close()
    wall = time.monotonic() - t0
    keys = (
        "create_to_verdict_s",
        "unpause_to_verdict_s",
        "harness_overhead_s",
        "run_s",
        "attempts",
    )
    _record(
        "libvirt-pass-vcpus2",
        {"verdict": str(v.verdict), "wall_s": round(wall, 3), **{k: v.meta.get(k) for k in keys}},
    )
    assert v.verdict == VerdictValue.PASS, f"{v.failed_stage}: {v.reason}"
    assert all(s.status == StageStatus.PASSED for s in v.stages)
    assert v.meta["toolstack"] == "libvirt" and v.meta["vcpus"] == 2
    assert v.meta["xen_version"].startswith("4.17")
    assert v.meta["xenstore_check"] == "connected"
    assert os_machine((tmp_path / "domain.xml").read_text()) == ("xenpvh", "xenpvh")
    assert os_machine((tmp_path / "domain-live.xml").read_text())[1] == "xenpvh"
    for name in ("console.log", "xl-dmesg.txt", "libvirt-capabilities.xml", "xenstore.txt"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert b"login:" in (tmp_path / "console.log").read_bytes()


def test_sweep_destroys_and_undefines_stale_libvirt_domains(host: Host) -> None:
    """A domain a crashed run left defined in libvirt is gone after the next sweep."""
    from xenpvh.profile.domain import DomainSpec
    from xenpvh.render.libvirt import render_libvirt_xml

    stale = "xenpvh-stale-libvirt"
    xml = render_libvirt_xml(DomainSpec(name=stale, kernel="/nonexistent", memory_mb=64))
    with Libvirt(host) as lv:
        lv.connection().defineXML(xml)
        assert stale in lv.list_names()
        t0 = time.monotonic()
        assert stale in lv.sweep("xenpvh-")
        swept = time.monotonic() - t0
        assert stale not in lv.list_names()
        assert lv.destroy(stale) is False
    _record("libvirt-sweep", {"sweep_s": round(swept, 3)})
