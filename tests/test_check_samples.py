"""freebsd-pvh and linux-pvh sample consoles, written from the guests' real printf formats."""

from __future__ import annotations

import pytest

from xenpvh.check.checker import EventKind, StageChecker
from xenpvh.check.verdict import StageStatus, Verdict, VerdictValue
from xenpvh.profile import load_profile


def stage(v: Verdict, name: str):
    return next(s for s in v.stages if s.name == name)


def check(profile_name: str, text: str, vcpus: int, disks: int = 1, vifs: int = 1) -> Verdict:
    c = StageChecker(load_profile(profile_name), vcpus=vcpus, disks=disks, vifs=vifs, clock=None)
    c.feed(text.encode())
    return c.finish()


# ------------------------------------------------------------------------------ FreeBSD


def freebsd_pvh(vcpus: int, *, verbose: bool, hvm: bool = False, disks: int = 1) -> str:
    """A FreeBSD 14 PVHv2 boot (hvm.c, identcpu.c, subr_smp.c, mp_x86.c, blkfront, netfront)."""
    ids = list(range(1, vcpus))
    aps = ids[1::2] + ids[0::2]  # APs announce themselves in no particular order
    out = [
        "XEN: Hypervisor version 4.17 detected.",
        "Copyright (c) 1992-2023 The FreeBSD Project.",
        "FreeBSD 14.0-RELEASE #0 releng/14.0-n265380-f9716eee8ab4: Fri Nov 10 05:57:23 UTC 2023",
        'Hypervisor: Origin = "XenVMMXenVMM"',
    ]
    if vcpus > 1:
        out.append(f"FreeBSD/SMP: Multiprocessor System Detected: {vcpus} CPUs")
    if hvm:
        out.append("xenpci0: <Xen Platform Device> port 0xc000-0xc0ff mem 0xf0000000 at device 2.0")
    out += [
        "xenstore0: <XenStore> on xenpv0",
        "xenbusb_front0: <Xen Frontend Devices> on xenstore0",
    ]
    out.append("xn0: <Virtual Network Interface> at device/vif/0 on xenbusb_front0")
    for i in range(disks):
        out.append(
            f"xbd{i}: 10240MB <Virtual Block Device> at device/vbd/{51712 + 16 * i} "
            "on xenbusb_front0"
        )
    if vcpus > 1:
        if verbose:
            out += [f"SMP: AP CPU #{a} Launched!" for a in aps]
        else:
            out.append("Launching APs: " + " ".join(map(str, aps)))
    out += [
        "Trying to mount root from ufs:/dev/xbd0p2 [rw]...",
        "",
        "FreeBSD/amd64 (fbsd) (xc0)",
        "",
    ]
    return "\n".join(out) + "\nlogin: "


@pytest.mark.parametrize("verbose", [False, True])
@pytest.mark.parametrize("vcpus", [1, 2, 4, 8])
def test_freebsd_pvh_passes(vcpus: int, verbose: bool) -> None:
    v = check("freebsd-pvh", freebsd_pvh(vcpus, verbose=verbose), vcpus)
    assert v.verdict is VerdictValue.PASS, v.reason


def test_freebsd_pvh_ap_forms_mix_and_duplicates() -> None:
    text = freebsd_pvh(4, verbose=False).replace(
        "Launching APs: 2 1 3",
        "Launching APs: 3 1\nSMP: AP CPU #1 Launched!\nSMP: AP CPU #3 Launched!",
    )
    v = check("freebsd-pvh", text, 4)
    assert (v.verdict, v.failed_stage) == (VerdictValue.FAIL, "ap-launch")  # AP 2 never came
    assert "APs seen {1,3}, expected {1,2,3}" in stage(v, "ap-launch").detail
    text = text.replace("SMP: AP CPU #3 Launched!", "SMP: AP CPU #2 Launched!")
    assert check("freebsd-pvh", text, 4).verdict is VerdictValue.PASS


def test_freebsd_pvh_hvm_boot_fails() -> None:
    # The mode is decided at early-init, whatever stage the xenpci0 line appears in.
    v = check("freebsd-pvh", freebsd_pvh(2, verbose=False, hvm=True), 2)
    assert (v.verdict, v.failed_stage) == (VerdictValue.FAIL, "early-init")
    assert v.reason == "forbidden pattern 'hvm-boot' indicts early-init"
    assert stage(v, "early-init").evidence.startswith("xenpci0: <Xen Platform Device>")
    assert all(s.status is StageStatus.NOT_REACHED for s in v.stages[1:])


def test_freebsd_pvh_needs_each_disk() -> None:
    assert check("freebsd-pvh", freebsd_pvh(2, verbose=True, disks=2), 2, disks=2).verdict is (
        VerdictValue.PASS
    )
    v = check("freebsd-pvh", freebsd_pvh(2, verbose=True, disks=1), 2, disks=2)
    assert (v.verdict, v.failed_stage) == (VerdictValue.FAIL, "xenbus")


def test_freebsd_pvh_xenbus_hang_is_forbidden() -> None:
    text = freebsd_pvh(2, verbose=True).replace(
        "xn0: <Virtual",
        "run_interrupt_driven_hooks: still waiting after 60 seconds for xenbusb_nop_confighook_cb"
        "\nxn0: <Virtual",
    )
    v = check("freebsd-pvh", text, 2)
    assert v.verdict is VerdictValue.FAIL and "xenbus-hang" in v.reason


def test_freebsd_pvh_root_mount_waiting_is_not_forbidden() -> None:
    text = freebsd_pvh(2, verbose=True).replace(
        "Trying to mount", "Root mount waiting for: CAM\nTrying to mount"
    )
    assert check("freebsd-pvh", text, 2).verdict is VerdictValue.PASS


# ------------------------------------------------------------------------------ Linux


def linux_pvh(vcpus: int, *, maxcpus: int | None = None, disks: int = 1, vifs: int = 1) -> str:
    """A Debian 6.1 PVH boot; blkfront's line comes after Run /init (a modular initramfs).
    netfront prints no line per device: the vifs are not on this console."""
    cpus = vcpus if maxcpus is None else maxcpus
    plural = "s" if cpus > 1 else ""
    out = [
        "[    0.000000] Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) "
        "(gcc-12 (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) "
        "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)",
        "[    0.000000] Command line: console=hvc0",
        "[    0.000000] \x1b[33mBooting paravirtualized kernel on Xen PVH\x1b[0m",
        "[    0.051234] smp: Bringing up secondary CPUs ...",
        f"[    0.081234] smp: Brought up 1 node, {cpus} CPU{plural}",
        "[    0.401234] xen_netfront: Initialising Xen virtual ethernet driver",
        "[    0.912345] Run /init as init process",
    ]
    for i in range(disks):
        dev = "xvd" + "abcdefgh"[i]
        out.append(
            f"[    1.0{i}0000] blkfront: {dev}: flush diskcache: enabled; persistent grants: "
            "enabled; indirect descriptors: enabled; bounce buffer: enabled"
        )
    return "\r\n".join(out) + "\r\n\r\nxenpvh login: "


@pytest.mark.parametrize("vcpus", [1, 4])
def test_linux_pvh_passes(vcpus: int) -> None:
    v = check("linux-pvh", linux_pvh(vcpus), vcpus)
    assert v.verdict is VerdictValue.PASS, v.reason
    by = {s.name: s for s in v.stages}
    assert by["early-init"].evidence == "Booting paravirtualized kernel on Xen PVH"
    assert by["root-mount"].t == pytest.approx(0.912345)  # Run /init
    assert by["xenbus"].t == pytest.approx(1.0)  # blkfront after Run /init
    assert by["xenbus"].evidence.startswith("blkfront: xvda: flush diskcache")
    assert "vifs: 1 unverified on the console" in by["xenbus"].detail


def test_linux_pvh_device_counts() -> None:
    assert check("linux-pvh", linux_pvh(2, disks=2, vifs=0), 2, 2, 0).verdict is VerdictValue.PASS
    v = check("linux-pvh", linux_pvh(2, disks=1, vifs=0), 2, 2, 0)
    assert (v.verdict, v.failed_stage) == (VerdictValue.FAIL, "xenbus")
    assert "disks seen {xvda}, expected 2" in stage(v, "xenbus").detail


def test_linux_maxcpus_1_fails_ap_launch_at_once() -> None:
    c = StageChecker(load_profile("linux-pvh"), vcpus=4, disks=1, vifs=1, clock=None)
    lines = linux_pvh(4, maxcpus=1).split("\r\n")
    events = []
    for line in lines[:5]:  # up to and including "smp: Brought up 1 node, 1 CPU"
        events += c.feed((line + "\r\n").encode())
    assert c.done
    v = c.verdict
    assert (v.verdict, v.failed_stage) == (VerdictValue.FAIL, "ap-launch")
    assert v.reason == "ap-launch: guest reports 1 CPUs, expected 4"
    assert events[-1].kind is EventKind.FAILED and "Brought up 1 node, 1 CPU" in events[-1].line


def test_linux_no_working_init_fails_fast_naming_the_pattern() -> None:
    c = StageChecker(load_profile("linux-pvh"), vcpus=2, disks=1, vifs=1, clock=None)
    head = linux_pvh(2).split("[    1.000000] blkfront")[0]
    c.feed(head.encode())
    assert not c.done
    c.feed(b"[    1.1] Kernel panic - not syncing: No working init found.  Try passing init=\n")
    assert c.done
    v = c.verdict
    assert v.verdict is VerdictValue.FAIL
    # Causal: /init is what failed; root-mount had passed at "Run /init", xenbus follows it.
    assert v.reason == "forbidden pattern 'no-working-init' indicts root-mount"
    failed = [s for s in v.stages if s.status is StageStatus.FAILED]
    assert [s.name for s in failed] == ["root-mount"]
    assert failed[0].evidence.startswith("Kernel panic - not syncing")
    assert stage(v, "xenbus").status is StageStatus.NOT_REACHED


def test_linux_hvm_boot_fails() -> None:
    v = check("linux-pvh", linux_pvh(2).replace("on Xen PVH", "on Xen HVM"), 2)
    assert v.verdict is VerdictValue.FAIL and "hvm-boot" in v.reason
    assert v.failed_stage == "early-init"


def test_linux_xenbus_timeout_fails() -> None:
    text = linux_pvh(2).replace(
        "\r\n\r\nxenpvh login",
        "\r\n[    6.0] xenbus_probe_frontend: Timeout connecting to device: device/vif/0 "
        "(local state 3, remote state 1)\r\n\r\nxenpvh login",
    )
    v = check("linux-pvh", text, 2)
    assert v.reason == "forbidden pattern 'xenbus-timeout' indicts xenbus"
