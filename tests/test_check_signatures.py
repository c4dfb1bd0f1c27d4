# ruff: noqa: E501  (sample console lines stay whole, as the kernel prints them)
"""Crash signatures, noise and not-PVH evidence: each sample line (a line Linux or FreeBSD
prints, in the format of the source cited in the profile) fails the boot with a reason that
names its pattern; noise is recorded, never failed."""

from __future__ import annotations

import jsonschema
import pytest
from linux_consoles import COMPLETING
from linux_consoles import lines as linux_lines

from xenpvh.check.checker import StageChecker
from xenpvh.check.verdict import Verdict, VerdictValue
from xenpvh.profile import load_profile
from xenpvh.report import load_schema

LINUX = load_profile("linux-pvh")


def linux_with(extra: list[str], before: str = COMPLETING["xenbus"]) -> Verdict:
    lines = linux_lines()
    i = next(k for k, x in enumerate(lines) if before in x)
    c = StageChecker(LINUX, vcpus=2, disks=1, vifs=1, clock=None)
    c.feed(("\n".join(lines[:i] + extra + lines[i:]) + "\n").encode())
    return c.finish()


# (the pattern's name, a line as the kernel prints it).  Several versions where the format
# changed.
LINUX_CRASHES = [
    (
        "kernel-panic",
        "[    9.1] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009",
    ),
    ("oops", "[    9.1] Oops: 0000 [#1] SMP"),  # 3.x-6.8 page fault die()
    ("oops", "[    9.1] Oops: 0002 [#1] PREEMPT SMP NOPTI"),
    ("oops", "[    9.1] Oops: Oops: 0000 [#1] PREEMPT SMP NOPTI"),  # 6.9+ __die_header
    ("kernel-bug", "[    9.1] BUG: kernel NULL pointer dereference, address: 0000000000000008"),
    ("kernel-bug", "[    9.1] BUG: unable to handle page fault for address: ffffffffc0a2e000"),
    ("kernel-bug", "[    9.1] BUG: unable to handle kernel paging request at ffff88000c9bc000"),
    ("kernel-bug", "[    9.1] BUG: scheduling while atomic: swapper/0/1/0x00000002"),
    ("kernel-bug", "[    9.1] BUG: KASAN: use-after-free in blkif_interrupt+0x41/0x3c0"),
    ("general-protection-fault", "[    9.1] general protection fault: 0000 [#1] SMP"),
    (
        "general-protection-fault",
        "[    9.1] general protection fault, probably for non-canonical address "
        "0xdead000000000100: 0000 [#1] PREEMPT SMP NOPTI",
    ),
    (
        "general-protection-fault",
        "[    9.1] Oops: general protection fault, probably for non-canonical address "
        "0xdffffc0000000000: 0000 [#1] PREEMPT SMP KASAN NOPTI",
    ),
    ("divide-error", "[    9.1] divide error: 0000 [#1] SMP"),
    ("divide-error", "[    9.1] Oops: divide error: 0000 [#1] PREEMPT SMP NOPTI"),
    ("soft-lockup", "[   48.1] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [kworker/1:1:42]"),
    ("soft-lockup", "[   48.1] BUG: soft lockup - CPU#0 stuck for 23s! [swapper/0:1]"),  # 3.x
    ("rcu-stall", "[   60.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:"),
    ("rcu-stall", "[   60.1] rcu: INFO: rcu_sched self-detected stall on CPU"),
    (
        "rcu-stall",
        "[   60.1] INFO: rcu_sched detected stalls on CPUs/tasks: { 1} (detected by 0, t=5252 jiffies)",
    ),
    (
        "rcu-stall",
        "[   60.1] rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { 1-... }",
    ),
    ("hung-task", "[  242.1] INFO: task systemd-udevd:97 blocked for more than 120 seconds."),
    (
        "hung-task",
        "[  242.1] INFO: task kworker/0:1:12 blocked for more than 122 seconds. [Warning #1]",
    ),
    ("kernel-die", "[    9.1] invalid opcode: 0000 [#1] PREEMPT SMP NOPTI"),
    ("kernel-die", "[    9.1] stack guard page: 0000 [#1] PREEMPT SMP NOPTI"),
    (
        "xenbus-timeout",
        "[  300.1] xenbus_probe_frontend: Timeout connecting to device: device/vif/0 (local state 3, remote state 1)",
    ),
    (
        "no-working-init",
        "[    1.1] Kernel panic - not syncing: No working init found.  Try passing init= option to kernel.",
    ),
    (
        "root-mount-failed",
        "[    1.1] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)",
    ),
    (
        "root-device-missing",
        '[    1.1] VFS: Cannot open root device "xvda9" or unknown-block(0,0): error -6',
    ),
]


@pytest.mark.parametrize(("name", "line"), LINUX_CRASHES)
def test_linux_crash_line_fails_naming_its_pattern(name: str, line: str) -> None:
    v = linux_with([line])
    assert v.verdict is VerdictValue.FAIL
    assert f"forbidden pattern {name!r}" in v.reason, v.reason
    failed = next(s for s in v.stages if s.name == v.failed_stage)
    assert line.endswith(failed.evidence)


def test_userland_traps_are_not_kernel_crashes() -> None:
    # arch/x86/kernel/traps.c show_signal(): a user process's fault, logged by the kernel.
    noise = [
        "[   12.1] traps: badprog[312] general protection fault ip:7f3b2c1 sp:7ffd9 error:0 in libc.so.6",
        "[   12.2] traps: calc[313] trap divide error ip:401126 sp:7ffc8 error:0 in calc[401000+1000]",
    ]
    assert linux_with(noise).verdict is VerdictValue.PASS


def test_linux_warning_is_a_notice_not_a_failure() -> None:
    warn = [
        "[    3.1] ------------[ cut here ]------------",
        "[    3.1] WARNING: CPU: 0 PID: 1 at drivers/block/xen-blkfront.c:1234 blkif_interrupt+0x41/0x3c0 [xen_blkfront]",
        "[    3.2] WARNING: at kernel/sched/core.c:1234 try_to_wake_up+0x1f/0x80()",  # 3.x form
    ]
    v = linux_with(warn, before=COMPLETING["login"])
    assert v.verdict is VerdictValue.PASS, v.reason
    names = [(n["name"], n["stage"], n["t"]) for n in v.meta["notices"]]
    assert names == [("kernel-warning", "login", 3.1), ("kernel-warning", "login", 3.2)]
    # The verdict document with its notices is valid against the published schema.
    from xenpvh.report import RunReport, render_verdict_json

    doc = render_verdict_json(
        RunReport(
            verdict=v,
            profile="linux-pvh",
            point="x",
            run_id="r",
            host=None,
            started_at=0.0,
            finished_at=1.0,
            artifacts=None,
            console_log=None,
        )
    )
    jsonschema.validate(doc, load_schema())
    assert doc["meta"]["notices"][0]["name"] == "kernel-warning"
    # JUnit states them as properties, the HTML page in its own table (escaped).
    from xenpvh.report import render_html
    from xenpvh.report.junit_xml import render_junit

    report = RunReport(
        verdict=v,
        profile="linux-pvh",
        point="x",
        run_id="r",
        host=None,
        started_at=0.0,
        finished_at=1.0,
        artifacts=None,
        console_log=None,
    )
    junit = render_junit(report)
    assert 'name="notices" value="2"' in junit
    assert "kernel-warning (line " in junit and "WARNING: CPU: 0 PID: 1 at drivers/block" in junit
    page = render_html(report, [])
    assert 'id="notices"' in page and "WARNING: at kernel/sched/core.c:1234" in page


def test_notices_are_bounded() -> None:
    many = [f"[    3.{i:03d}] WARNING: CPU: 0 PID: 1 at x.c:{i} f+0x1/0x2" for i in range(200)]
    v = linux_with(many, before=COMPLETING["login"])
    assert v.verdict is VerdictValue.PASS
    assert len(v.meta["notices"]) == 64 and v.meta["notices_total"] == 200


# ------------------------------------------------------------------------------ not PVH

LINUX_NOT_PVH = [
    ("pv-boot", "[    0.000000] Booting paravirtualized kernel on Xen"),
    ("pv-boot", "[    0.000000] Booting kernel on Xen"),  # newer banner
    ("hvm-boot", "[    0.000000] Booting kernel on Xen HVM"),
    ("pv-hypervisor", "[    0.000000] Hypervisor detected: Xen PV"),
    ("hvm-boot", "[    0.000000] Booting paravirtualized kernel on Xen HVM"),
    ("hvm-firmware", "[    0.000000] DMI: Xen HVM domU, BIOS 4.17.5 01/01/2024"),
]


@pytest.mark.parametrize(("name", "line"), LINUX_NOT_PVH)
def test_linux_not_pvh_fails_at_early_init(name: str, line: str) -> None:
    lines = linux_lines()
    banner = next(i for i, x in enumerate(lines) if "kernel on Xen PVH" in x)
    if name.endswith("-boot"):
        lines[banner] = line  # the banner a PV / HVM kernel prints instead of PVH's
    else:
        lines.insert(banner, line)  # an extra line only that mode prints
    c = StageChecker(LINUX, vcpus=2, disks=1, vifs=1, clock=None)
    c.feed(("\n".join(lines) + "\n").encode())
    v = c.finish()
    assert (v.verdict, v.failed_stage) == (VerdictValue.FAIL, "early-init")
    assert v.reason == f"forbidden pattern {name!r} indicts early-init"


def test_linux_pvh_prints_hypervisor_detected_xen_hvm_and_passes() -> None:
    # enlighten_hvm.c xen_platform_hvm() detects PVH guests as "Xen HVM": not evidence.
    assert any("Hypervisor detected: Xen HVM" in x for x in linux_lines())
    assert linux_with([]).verdict is VerdictValue.PASS


FREEBSD_CRASHES = [
    ("panic", "panic: page fault"),
    ("fatal-trap", "Fatal trap 12: page fault while in kernel mode"),
    ("kdb-enter", "KDB: enter: panic"),
    ("mountroot-prompt", "mountroot> "),
    ("root-mount-failed", "Mounting from ufs:/dev/xbd0p2 failed with error 19."),
    ("ap-failed", "panic: AP #1 (PHY# 2) failed!"),
    (
        "xenbus-hang",
        "run_interrupt_driven_hooks: still waiting after 60 seconds for xenbusb_nop_confighook_cb",
    ),
    (
        "hvm-boot",
        "xenpci0: <Xen Platform Device> port 0xc000-0xc0ff mem 0xf0000000-0xf0ffffff irq 28 at device 2.0 on pci0",
    ),
    ("hvm-unplug", "XEN: Disabling emulated block and network devices"),
    (
        "hvm-callback",
        "Xen HVM callback vector registration failed (-22). Falling back to emulated device interrupt",
    ),
]


@pytest.mark.parametrize("profile_name", ["freebsd-pvh", "freebsd-pvhv1"])
@pytest.mark.parametrize(("name", "line"), FREEBSD_CRASHES)
def test_freebsd_crash_line_fails_naming_its_pattern(
    profile_name: str, name: str, line: str
) -> None:
    from test_check_samples import freebsd_pvh

    text = freebsd_pvh(2, verbose=True).replace("Trying to mount", line + "\nTrying to mount")
    c = StageChecker(load_profile(profile_name), vcpus=2, disks=1, vifs=1, clock=None)
    c.feed(text.encode())
    v = c.finish()
    assert v.verdict is VerdictValue.FAIL
    assert f"forbidden pattern {name!r}" in v.reason, v.reason
    if name.startswith("hvm-"):
        assert v.failed_stage == "early-init"
