"""Device evidence per kind: Linux names each disk on its console (blkfront) but no vif
(netfront prints nothing per device), so linux-pvh's vifs are proven by XenStore in a live
run and reported "unverified on the console" offline -- failed only with --strict-devices."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from fakes import FakeClock
from linux_consoles import lines as linux_lines

from xenpvh.check.checker import EventKind, StageChecker, check_file
from xenpvh.check.verdict import StageStatus, Verdict, VerdictValue
from xenpvh.cli import main
from xenpvh.profile import load_profile
from xenpvh.report import load_schema
from xenpvh.run.devices import DeviceCheck
from xenpvh.toolstack.xenstore import DeviceState

LINUX = load_profile("linux-pvh")
CONSOLE = ("\n".join(linux_lines()) + "\n").encode()


def stage(v: Verdict, name: str):
    return next(s for s in v.stages if s.name == name)


def offline(data: bytes, *, vifs: int = 1, strict: bool = False) -> Verdict:
    c = StageChecker(LINUX, vcpus=2, disks=1, vifs=vifs, clock=None, strict_devices=strict)
    c.feed(data)
    return c.finish()


def test_offline_vif_is_unverified_but_passes() -> None:
    v = offline(CONSOLE)
    assert v.verdict is VerdictValue.PASS, v.reason
    xenbus = stage(v, "xenbus")
    assert xenbus.evidence.startswith("blkfront: xvda: flush diskcache")  # the disk: console
    assert xenbus.detail.startswith("vifs: 1 unverified on the console")


def test_strict_devices_fails_the_unverified_vif() -> None:
    v = offline(CONSOLE, strict=True)
    assert (v.verdict, v.failed_stage) == (VerdictValue.FAIL, "xenbus")
    assert v.reason == "xenbus: 1 vif(s) unverified on the console (strict devices)"
    assert "vifs: 1 unverified on the console (strict devices)" in stage(v, "xenbus").detail
    assert stage(v, "login").status is StageStatus.NOT_REACHED
    assert v.meta["strict_devices"] is True


def test_without_vifs_there_is_nothing_to_verify() -> None:
    for strict in (False, True):
        v = offline(CONSOLE, vifs=0, strict=strict)
        assert v.verdict is VerdictValue.PASS and stage(v, "xenbus").detail == ""


def test_a_missing_disk_still_fails_whatever_the_vif() -> None:
    data = b"\n".join(x for x in CONSOLE.split(b"\n") if b"blkfront" not in x)
    v = offline(data)
    assert (v.verdict, v.failed_stage) == (VerdictValue.FAIL, "xenbus")
    assert "disks seen {}, expected 1" in stage(v, "xenbus").detail


def test_a_renamed_vif_is_not_taken_as_proof() -> None:
    """net/core/dev.c prints `vif vif-0 enX0: renamed from eth0` when udev renames the
    netdev netfront registered at probe -- before the backend connects: not proof."""
    lines = linux_lines()
    lines.insert(-3, "[    3.2] vif vif-0 enX0: renamed from eth0")
    v = offline(("\n".join(lines) + "\n").encode())
    assert v.verdict is VerdictValue.PASS
    assert "vifs: 1 unverified on the console" in stage(v, "xenbus").detail


def test_live_xenbus_waits_for_xenstore_then_completes() -> None:
    clock = FakeClock()
    c = StageChecker(LINUX, vcpus=2, disks=1, vifs=1, clock=clock, xenstore_proof=True)
    head, _ = CONSOLE.split(b"debian login:")
    events = c.feed(head)
    assert not c.done and c.stage_in_progress == "xenbus"
    assert c.awaiting_xenstore("xenbus")  # the disk is on the console, the vif is not
    assert not c.awaiting_xenstore("login")
    events += c.feed(b"debian login: ")  # login's own line: still held by xenbus
    assert not c.done
    clock.now += 2.5
    proof = c.prove_devices("vif", ["vif/0"])
    assert c.done and c.verdict.verdict is VerdictValue.PASS
    assert [(e.kind, e.stage) for e in proof if e.kind is EventKind.PASSED] == [
        (EventKind.PASSED, "xenbus"),
        (EventKind.PASSED, "login"),
    ]
    xenbus = stage(c.verdict, "xenbus")
    assert xenbus.detail == "vifs: 1 Connected in XenStore (vif/0)"
    assert xenbus.t == pytest.approx(2.5)


def test_live_without_xenstore_proof_fails_xenbus_at_its_deadline() -> None:
    clock = FakeClock()
    c = StageChecker(LINUX, vcpus=2, disks=1, vifs=1, clock=clock, xenstore_proof=True)
    c.feed(CONSOLE)
    c.xenstore_problem = "vif 0: frontend .../state=3 (Initialised), backend .../state=2"
    clock.now += LINUX.stage("xenbus").deadline + 1
    c.poll()
    v = c.verdict
    assert (v.verdict, v.failed_stage) == (VerdictValue.FAIL, "xenbus")
    assert "vifs: 1 expected, not yet Connected in XenStore: vif 0" in stage(v, "xenbus").detail


def test_prove_devices_names_kinds() -> None:
    c = StageChecker(LINUX, vcpus=2, disks=1, vifs=1, clock=None)
    with pytest.raises(ValueError, match="unknown device kind 'pci'"):
        c.prove_devices("pci", [])
    c.prove_devices("vbd", ["vbd/51712"])  # disks are console-proven here: no effect
    assert not c.done


def _dev(kind: str, devid: str, fe: int | None, be: int | None) -> DeviceState:
    return DeviceState(kind, devid, f"/fe/{kind}/{devid}", fe, f"/be/{kind}/{devid}", be)


def test_device_check_connected_kinds() -> None:
    devs = [_dev("vbd", "51712", 4, 4), _dev("vif", "0", 4, 4), _dev("vif", "1", 3, 4)]
    assert DeviceCheck.connected_kinds(devs, disks=1, vifs=2) == {"vbd": ("vbd/51712",)}
    assert DeviceCheck.connected_kinds(devs[:2], disks=1, vifs=1) == {
        "vbd": ("vbd/51712",),
        "vif": ("vif/0",),
    }
    # A device XenStore lacks is not proven, nor one too many.
    assert DeviceCheck.connected_kinds(devs[:2], disks=2, vifs=1) == {"vif": ("vif/0",)}
    check = DeviceCheck(0.0)
    check.judge(devs, "/dev/pts/1", domid=1, disks=1, vifs=2)
    assert check.result == "pending"  # never stuck before its grace is armed
    check.arm(-1.0, 0.5)
    check.judge(devs, "/dev/pts/1", domid=1, disks=1, vifs=2)
    assert check.result == "stuck" and "vif 1: frontend /fe/vif/1/state=3" in check.problem


@pytest.mark.parametrize("strict", [False, True])
def test_cli_strict_devices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], strict: bool
) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(CONSOLE)
    args = ["check", str(log), "--profile", "linux-pvh", "--format", "json"]
    rc = main([*args, "--strict-devices"] if strict else args)
    doc = json.loads(capsys.readouterr().out)
    jsonschema.validate(doc, load_schema())
    assert rc == (1 if strict else 0)
    assert doc["verdict"] == ("fail" if strict else "pass")
    xenbus = next(s for s in doc["stages"] if s["name"] == "xenbus")
    assert "unverified on the console" in xenbus["detail"]


def test_check_file_strict_keyword(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_bytes(CONSOLE)
    assert check_file(log, LINUX, 2, 1, 1).verdict is VerdictValue.PASS
    assert check_file(log, LINUX, 2, 1, 1, strict_devices=True).failed_stage == "xenbus"


# Lines only xenpvh's own guest kit prints (xenpvh/build/guestkit.py INIT_TEMPLATE).
KIT_ONLY = [
    "xenpvh-init: started, kernel 6.1.0-18-amd64",
    "xenpvh-init: netfront eth0 up",
    "xenpvh-init: /dev/xvda mounted on /mnt",
]


def test_no_shipped_profile_relies_on_the_guest_kits_own_lines() -> None:
    """A verdict must be right for guests xenpvh did not build: no pattern of any shipped
    profile may match a line only the guest kit prints (its `login:` prompt is getty's)."""
    from xenpvh.profile import list_profiles

    for profile in list_profiles():
        patterns = [p for s in profile.stages for p in s.patterns()]
        for line in KIT_ONLY:
            hits = [p.name for p in patterns if p.regex.search(line)]
            assert hits == [], (profile.name, line, hits)


# A real console: Debian 12 (systemd 252, Debian's 6.1 kernel and initramfs-tools) booted PVH
# with 2 disks and 2 vifs on the nested host (the debian-pvh live test, 2026-12-02).  Its vifs
# show only as `vif vif-N enXN: renamed from ethN`; it reached `debian12-pvh login:`.
DEBIAN = Path(__file__).parent / "samples" / "debian12-systemd-pvh-2disks-2vifs.log"


def test_real_debian_console_passes_linux_pvh_offline() -> None:
    text = DEBIAN.read_text(errors="replace")
    assert "vif vif-0 enX0: renamed from eth0" in text and "debian12-pvh login:" in text
    assert "xenpvh-init" not in text  # not our guest kit
    v = check_file(DEBIAN, LINUX, vcpus=2, disks=2, vifs=2)
    assert v.verdict is VerdictValue.PASS, v.reason
    xenbus = stage(v, "xenbus")
    assert xenbus.evidence.startswith("blkfront: xvdb: flush diskcache")  # the second disk
    assert xenbus.detail.startswith("vifs: 2 unverified on the console")
    assert stage(v, "login").evidence == "debian12-pvh login:"
    # One disk short is still a failure; the vifs fail only when asked to.
    assert check_file(DEBIAN, LINUX, vcpus=2, disks=3, vifs=2).failed_stage == "xenbus"
    strict = check_file(DEBIAN, LINUX, vcpus=2, disks=2, vifs=2, strict_devices=True)
    assert strict.reason == "xenbus: 2 vif(s) unverified on the console (strict devices)"
    assert check_file(DEBIAN, LINUX, vcpus=4, disks=2, vifs=2).failed_stage == "ap-launch"
