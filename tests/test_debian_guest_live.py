"""A real Debian 12 guest (systemd, Debian's kernel and initramfs-tools) on real Xen: the
session's host from the xenpvh pytest plugin (`xen_host`, the nested host by default).

The guest is built once (cached under ~/.cache/xenpvh/debian-guest) before any boot.  Every
test ends with `xl list` showing only Domain-0 and no run directory -- so no per-run copy of
the guest's disk -- left on the host.  Measured times are appended to `$XENPVH_LIVE_TIMES`
(JSON lines) when that variable is set, as in test_run_live.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_run_live import RecordingHost, _record_times

from xenpvh.check.verdict import StageStatus, VerdictValue
from xenpvh.host.base import Host
from xenpvh.profile.domain import DiskSpec, VifSpec
from xenpvh.run.request import BootRequest
from xenpvh.run.session import Session
from xenpvh.toolstack.xl import Xl

pytestmark = pytest.mark.xen

RUNS = "/var/lib/xenpvh/runs"

# The nested host runs single-threaded TCG (multi-threaded TCG triple-faults nested guests):
# the whole host, all 4 guest vCPUs included, shares one host core.  On the 2-core Xeon CI
# machine of 2026-12-02 a 4-vCPU systemd boot had not reached xenbus 180 s after ap-launch
# (`Run /init` 43 s after the APs came up; 184 s to login on the machine of the measured
# table), twice in two CI runs, and costs over 10 minutes of a 60-minute budget.  4 vCPUs
# of Debian are asked of a lab box (`--host`); on the nested host 4 vCPUs are proven by
# FreeBSD (test_freebsd_live) and the guest kit (test_run_live).
NESTED_4VCPU_DEBIAN = (
    "nested host (single-threaded TCG, one host core): a 4-vCPU Debian boot outruns the "
    "CI budget here; run it on a lab box (--host)"
)


@pytest.fixture(scope="session")
def debian_guest() -> Any:
    from xenpvh.build.debian_guest import ensure_debian_guest

    return ensure_debian_guest()


@pytest.fixture
def host(xen_host: Host, debian_guest: Any) -> Iterator[RecordingHost]:
    yield RecordingHost(xen_host)
    assert [d.name for d in Xl(xen_host).list()] == ["Domain-0"]
    left = xen_host.run(["ls", "-A", RUNS]).out.split()
    assert left == [], f"run dirs (and their disk copies) left on the host: {left}"


def _boot(host: RecordingHost, tmp_path: Path, profile: str = "debian-pvh", **kw: Any):
    request = BootRequest(profile=profile, artifacts=tmp_path, **kw)
    return Session(request, host=host).run().verdict


def _passed(v: Any) -> None:
    assert v.verdict == VerdictValue.PASS, f"{v.failed_stage}: {v.reason}"
    assert all(s.status == StageStatus.PASSED for s in v.stages), v.stages
    assert v.meta["xenstore_check"] == "connected"


def _connected(v: Any, kind: str) -> list[dict[str, Any]]:
    devices = [d for d in v.meta["xenstore_devices"] if d["kind"] == kind]
    for d in devices:
        assert d["frontend_state"] == 4 and d["backend_state"] == 4, d
    return devices


TWO_DISKS = (
    DiskSpec(vdev="xvda", target="@debian-guest:disk"),
    DiskSpec(vdev="xvdb", size_mb=16, fs="ext4"),
)
TWO_VIFS = (VifSpec("xenbr0"), VifSpec("xenbr0"))


def _proves_two_disks_and_two_vifs(v: Any, console: str) -> None:
    for vdev in ("xvda", "xvdb"):
        assert f"blkfront: {vdev}: " in console, vdev
    assert len(_connected(v, "vbd")) == 2
    assert len(_connected(v, "vif")) == 2


# The CI tier's Debian boot (the README's test command): one boot at 1 vCPU proves the guest
# passes every stage and that each of two disks and two vifs is proven.  ~7.5 min here on
# 2026-12-03 when it is the session's first Debian boot (the 57-MB disk is sent and unpacked
# into the TCG dom0 once, ~2 min), ~5 min after: systemd and udev on one TCG thread.
def test_debian_guest_passes_and_proves_two_disks_and_two_vifs(host, tmp_path) -> None:
    v = _boot(host, tmp_path, vcpus=1, disks=TWO_DISKS, vifs=TWO_VIFS)
    _record_times("debian-vcpus1-2disks-2vifs", v)
    _passed(v)
    console = (tmp_path / "console.log").read_text(errors="replace")
    assert "smp: Brought up 1 node, 1 CPU" in console
    assert re.search(r"systemd\[1\]: systemd \S+ running in system mode", console)
    assert "login:" in console
    _proves_two_disks_and_two_vifs(v, console)
    assert v.meta["disk_copies"]["xvda"]["copy_s"] > 0


# Nightly tier (tests/conftest.py): the single-disk guest at 1 vCPU (the CI test above boots
# it with two of each), and at 4 vCPUs.
@pytest.mark.slow
@pytest.mark.parametrize("vcpus", [1, 4])
def test_debian_guest_passes(host, tmp_path, vcpus: int) -> None:
    details = host.describe() if hasattr(host, "describe") else {}
    if vcpus > 2 and details.get("kind") == "nested" and details.get("accel") == "tcg":
        pytest.xfail(NESTED_4VCPU_DEBIAN)
    v = _boot(host, tmp_path, vcpus=vcpus)
    _record_times(f"debian-vcpus{vcpus}", v)
    _passed(v)
    console = (tmp_path / "console.log").read_text(errors="replace")
    assert f"smp: Brought up 1 node, {vcpus} CPU" in console
    assert re.search(r"systemd\[1\]: systemd \S+ running in system mode", console)
    assert "login:" in console
    assert len(_connected(v, "vbd")) == 1 and len(_connected(v, "vif")) == 1
    assert v.meta["disk_copies"]["xvda"]["copy_s"] > 0


# Nightly tier (tests/conftest.py): the same devices at 2 vCPUs (493 s here on 2026-12-03).
@pytest.mark.slow
def test_two_disks_two_vifs_every_device_proven(host, tmp_path) -> None:
    v = _boot(host, tmp_path, vcpus=2, disks=TWO_DISKS, vifs=TWO_VIFS)
    _record_times("debian-2disks-2vifs", v)
    _passed(v)
    _proves_two_disks_and_two_vifs(v, (tmp_path / "console.log").read_text(errors="replace"))


# CI tier: initramfs-tools gives up on the root device after max(30, rootdelay) s (its
# scripts/local), so the guest says so ~2 min after unpause here; the verdict must come
# from that line, not from a deadline.
def test_wrong_root_device_fails_at_root_mount_on_the_initramfs_message(host, tmp_path) -> None:
    v = _boot(host, tmp_path, vcpus=1, cmdline_append="root=/dev/xvdz", attempts=1)
    _record_times("debian-root-xvdz", v)
    assert v.verdict == VerdictValue.FAIL, v.reason
    assert v.failed_stage == "root-mount", v.reason
    assert "deadline" not in v.reason.lower(), v.reason
    failed = next(s for s in v.stages if s.name == "root-mount")
    assert re.search(r"Gave up waiting for root file system device|ALERT!", failed.evidence), failed


def test_vif_on_a_missing_bridge_is_blocked_before_create(host, tmp_path) -> None:
    v = _boot(host, tmp_path, vcpus=1, vifs=(VifSpec("xenpvhnobr0"),))
    assert v.verdict == VerdictValue.BLOCKED, v.reason
    assert "xenpvhnobr0" in v.reason
    assert not [c for c in host.calls if c[:2] == ("xl", "create")], host.calls
    assert not [c for c in host.calls if c[0] == "mkdir"], host.calls


# The slow tier (tests/conftest.py): 282 s of CI on the 2-core machine of 2026-12-03, the same
# disk and stages as the 1-vCPU test, booted through GRUB's PVH image instead.
@pytest.mark.slow
def test_debian_guest_through_pvh_grub_passes(host, tmp_path) -> None:
    v = _boot(host, tmp_path, profile="debian-pvh-grub", vcpus=2)
    _record_times("debian-grub", v)
    _passed(v)
    cfg = (tmp_path / "domain.cfg").read_text()
    assert "grub-pvh.elf" in cfg and "ramdisk" not in cfg
