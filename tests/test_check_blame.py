"""Causal blame: a failure is blamed on the stage it indicts, not on the stage that happens
to be in progress.  Panics are inserted inside each stage's lines of the 2013 seed console
(FreeBSD) and of a Linux PVH console; every stage is covered, both ways:

* positional: a crash that names no stage fails the stage in progress;
* causal: a line that names a stage (a forbidden pattern with `stage`, or a [[blame]] line
  of the panic's backtrace) fails that stage wherever it appears; stages before it that had
  not completed are "not reached", every stage after it too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeClock
from linux_consoles import BLKFRONT_FRAMES, GENERIC_FRAMES, oops
from linux_consoles import COMPLETING as LINUX_COMPLETING
from linux_consoles import lines as linux_lines

from xenpvh.check.checker import BLAME_WAIT, StageChecker
from xenpvh.check.verdict import StageStatus, Verdict, VerdictValue
from xenpvh.profile import load_profile

SEED = (Path(__file__).parent / "seed_freebsd_pvhv1_2013.txt").read_text().splitlines()
FREEBSD = load_profile("freebsd-pvhv1")
LINUX = load_profile("linux-pvh")
FREEBSD_ORDER = ["early-init", "xenbus", "ap-launch", "root-mount", "login"]
LINUX_ORDER = ["early-init", "ap-launch", "root-mount", "xenbus", "login"]
# The line that completes each stage of the seed (FreeBSD's order).
SEED_COMPLETING = {
    "early-init": "Hypervisor: Origin",
    "xenbus": "xbd0: 20480MB",
    "ap-launch": "SMP: AP CPU #4 Launched!",
    "root-mount": "Trying to mount root",
    "login": "FreeBSD/amd64 (Amnesiac) (xc0)",
}


def check(profile, lines: list[str], *, vcpus: int, chunk: int | None = None) -> Verdict:
    c = StageChecker(profile, vcpus=vcpus, disks=1, vifs=1, clock=None)
    data = ("\n".join(lines) + "\n").encode()
    step = chunk or len(data)
    for i in range(0, len(data), step):
        c.feed(data[i : i + step])
    return c.finish()


def at(lines: list[str], needle: str) -> int:
    hits = [i for i, x in enumerate(lines) if needle in x]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def insert(lines: list[str], before: str, block: list[str], *, cut: bool) -> list[str]:
    """`block` before the line containing `before`; `cut`: the console ends with the block
    (a guest that panicked prints nothing more)."""
    i = at(lines, before)
    return lines[:i] + block + ([] if cut else lines[i:])


def statuses(v: Verdict) -> dict[str, StageStatus]:
    return {s.name: s.status for s in v.stages}


def assert_blamed(v: Verdict, stage: str, order: list[str], completed: set[str]) -> None:
    """`stage` failed; stages before it passed iff completed, every later one not reached."""
    assert (v.verdict, v.failed_stage) == (VerdictValue.FAIL, stage), v.reason
    st = statuses(v)
    assert [s.name for s in v.stages] == order
    for name in order[: order.index(stage)]:
        want = StageStatus.PASSED if name in completed else StageStatus.NOT_REACHED
        assert st[name] is want, (name, st[name])
    assert st[stage] is StageStatus.FAILED
    for name in order[order.index(stage) + 1 :]:
        assert st[name] is StageStatus.NOT_REACHED, name


def freebsd_panic(message: str, frames: list[str]) -> list[str]:
    """sys/kern/kern_shutdown.c vpanic() + kdb_backtrace() + ddb, as FreeBSD prints them."""
    trace = [
        f"{f}() at {f}+0x{17 * (i + 3):x}/frame 0xfffffe00004b{i:04x}"
        for i, f in enumerate(["db_trace_self_wrapper", "vpanic", "panic", *frames])
    ]
    return [
        f"panic: {message}",
        "cpuid = 0",
        "time = 1",
        "KDB: stack backtrace:",
        *trace,
        "KDB: enter: panic",
        "[ thread pid 0 tid 100000 ]",
        "Stopped at      kdb_enter+0x37: movq    $0,0x1270d1e(%rip)",
        "db> ",
    ]


GENERIC_FREEBSD = ["vm_fault_trap", "trap_pfault", "trap", "calltrap", "mi_startup", "btext"]


def test_the_profiles_list_the_os_order() -> None:
    assert [s.name for s in FREEBSD.stages] == FREEBSD_ORDER
    assert [s.name for s in load_profile("freebsd-pvh").stages] == FREEBSD_ORDER
    assert [s.name for s in LINUX.stages] == LINUX_ORDER


# ------------------------------------------------------------------------------ positional


@pytest.mark.parametrize("cut", [True, False], ids=["console-ends", "console-goes-on"])
@pytest.mark.parametrize("stage", FREEBSD_ORDER)
def test_seed_generic_panic_blames_the_stage_in_progress(stage: str, cut: bool) -> None:
    block = freebsd_panic("page fault", GENERIC_FREEBSD)
    v = check(FREEBSD, insert(SEED, SEED_COMPLETING[stage], block, cut=cut), vcpus=7)
    assert v.reason == f"forbidden pattern 'panic' during {stage}"
    assert_blamed(v, stage, FREEBSD_ORDER, set(FREEBSD_ORDER[: FREEBSD_ORDER.index(stage)]))
    failed = next(s for s in v.stages if s.status is StageStatus.FAILED)
    assert failed.evidence == "panic: page fault"


@pytest.mark.parametrize("stage", LINUX_ORDER)
def test_linux_generic_oops_blames_the_stage_in_progress(stage: str) -> None:
    v = check(
        LINUX,
        insert(linux_lines(), LINUX_COMPLETING[stage], oops(GENERIC_FRAMES), cut=True),
        vcpus=2,
    )
    assert v.reason == f"forbidden pattern 'kernel-bug' during {stage}"
    assert_blamed(v, stage, LINUX_ORDER, set(LINUX_ORDER[: LINUX_ORDER.index(stage)]))
    failed = next(s for s in v.stages if s.status is StageStatus.FAILED)
    assert failed.evidence.startswith("BUG: kernel NULL pointer dereference")


# ------------------------------------------------------------------------------ causal

# stage indicted -> (inserted before this seed line, the block).  Each is inserted where
# another stage is in progress, as the OS prints it.
FREEBSD_CAUSES = {
    # An HVM boot: xenpci attaches among the devices, long after early-init.
    "early-init": (
        "xenbusb_front0: <Xen Frontend",
        [
            "xenpci0: <Xen Platform Device> port 0xc000-0xc0ff mem 0xf0000000-0xf0ffffff "
            "irq 28 at device 2.0 on pci0"
        ],
    ),
    # xbd attach crashes while the root mount is in progress (backtrace names xbd).
    "xenbus": (
        "start_init: trying",
        freebsd_panic(
            "page fault",
            [
                "xbd_connect",
                "xbd_backend_changed",
                "xenbusb_back_otherend_changed",
                "xs_watch",
                "fork_exit",
            ],
        ),
    ),
    # start_all_aps() runs at SI_SUB_CPU, before the devices attach: the panic comes while
    # xenbus is in progress (mp_x86.c: panic("AP #%d (PHY# %d) failed!")).
    "ap-launch": (
        "xenstore0: <XenStore>",
        freebsd_panic(
            "AP #3 (PHY# 6) failed!", ["start_all_aps", "cpu_mp_start", "mp_start", "mi_startup"]
        ),
    ),
    # vfs_mountroot panics while the last APs are still being announced.
    "root-mount": (
        "SMP: AP CPU #4 Launched!",
        freebsd_panic(
            "vfs_mountroot: cannot mount root", ["vfs_mountroot", "start_init", "fork_exit"]
        ),
    ),
    # A panic that names the driver in its message, while the APs launch.
    "xenbus-by-message": (
        "SMP: AP CPU #4 Launched!",
        freebsd_panic("xbd0: command failed", GENERIC_FREEBSD),
    ),
}


@pytest.mark.parametrize("case", list(FREEBSD_CAUSES))
def test_seed_panic_is_blamed_on_the_stage_it_names(case: str) -> None:
    stage = case.split("-by-")[0]
    before, block = FREEBSD_CAUSES[case]
    lines = insert(SEED, before, block, cut=stage != "early-init")
    v = check(FREEBSD, lines, vcpus=7)
    in_progress = lines[: at(lines, block[0])]
    completed = {
        s.name
        for s in check(FREEBSD, in_progress, vcpus=7).stages
        if s.status is StageStatus.PASSED
    }
    assert_blamed(v, stage, FREEBSD_ORDER, completed)
    assert "indicts " + stage in v.reason


def test_seed_causal_blame_leaves_earlier_incomplete_stages_not_reached() -> None:
    # An xbd crash during early-init: xenbus failed, early-init was never completed.
    block = freebsd_panic("page fault", ["xbd_connect", "fork_exit"])
    v = check(FREEBSD, insert(SEED, "Hypervisor: Origin", block, cut=True), vcpus=7)
    assert_blamed(v, "xenbus", FREEBSD_ORDER, completed=set())
    assert statuses(v)["early-init"] is StageStatus.NOT_REACHED
    assert "early-init was in progress" in next(s for s in v.stages if s.name == "xenbus").detail


LINUX_CAUSES = {
    # An HVM guest's firmware line, seen late: the mode is decided at early-init.
    "early-init": ("blkfront: xvda:", ["[    0.000000] DMI: Xen HVM domU, BIOS 4.17.5 12/01/2024"]),
    # A kernel with built-in front ends waits for its devices before /init
    # (xenbus_probe_frontend.c wait_for_devices): root-mount is in progress.
    "xenbus": (
        "Run /init as init process",
        [
            "[  300.1] xenbus_probe_frontend: Timeout connecting to device: device/vbd/51712 "
            "(local state 3, remote state 1)"
        ],
    ),
    # /init missing: "Run /init" completed root-mount, xenbus is in progress.
    "root-mount": (
        "blkfront: xvda:",
        [
            "[    0.95] Failed to execute /init (error -2)",
            "[    0.96] Kernel panic - not syncing: No working init found.  Try passing init= "
            "option to kernel. See Linux Documentation/admin-guide/init.rst for guidance.",
        ],
    ),
    # An Oops whose trace is blkfront's, while /init runs.
    "xenbus-by-trace": ("blkfront: xvda:", oops(BLKFRONT_FRAMES)),
    # An Oops in CPU bring-up code, printed while early-init is still in progress.
    "ap-launch-by-trace": (
        "Booting paravirtualized kernel on Xen PVH",
        oops(
            [
                "do_boot_cpu+0x12f/0x4d0",
                "native_cpu_up+0x21/0x60",
                "bringup_cpu+0x32/0x140",
                "cpuhp_invoke_callback+0x114/0x470",
                "_cpu_up+0x10b/0x220",
                "smp_init+0x2b/0x79",
            ]
        ),
    ),
}


@pytest.mark.parametrize("case", list(LINUX_CAUSES))
def test_linux_failure_is_blamed_on_the_stage_it_names(case: str) -> None:
    stage = case.split("-by-")[0]
    before, block = LINUX_CAUSES[case]
    lines = insert(linux_lines(), before, block, cut=stage != "early-init")
    v = check(LINUX, lines, vcpus=2)
    in_progress = lines[: at(lines, block[0])]
    completed = {
        s.name for s in check(LINUX, in_progress, vcpus=2).stages if s.status is StageStatus.PASSED
    }
    assert_blamed(v, stage, LINUX_ORDER, completed)
    assert "indicts " + stage in v.reason


def test_linux_no_working_init_is_root_mount_not_xenbus() -> None:
    before, block = LINUX_CAUSES["root-mount"]
    v = check(LINUX, insert(linux_lines(), before, block, cut=True), vcpus=2)
    assert v.reason == "forbidden pattern 'no-working-init' indicts root-mount"
    root = next(s for s in v.stages if s.name == "root-mount")
    assert root.evidence.startswith("Kernel panic - not syncing: No working init found")
    assert "root-mount had passed" in root.detail


# ------------------------------------------------------------------------------ the window


def test_blame_is_bounded_by_blame_lines() -> None:
    """A frame that names a stage counts only within blame_lines lines of the failure."""
    n = FREEBSD.blame_lines
    filler = [f"db_trace_filler_{i}() at 0x{i:x}" for i in range(n)]
    head = SEED[: at(SEED, "SMP: AP CPU #4 Launched!")]
    frame = "xbd_connect() at xbd_connect+0x1f/frame 0x1"
    inside = [*head, "panic: page fault", *filler[:-1], frame]
    outside = [*head, "panic: page fault", *filler, frame]
    assert check(FREEBSD, inside, vcpus=7).failed_stage == "xenbus"
    assert check(FREEBSD, outside, vcpus=7).failed_stage == "ap-launch"


def test_device_lines_after_a_panic_do_not_blame_the_driver() -> None:
    """Only panic messages and backtrace frames blame: an xn0 line the console prints after
    a generic panic (console goes on) does not make it a xenbus failure."""
    lines = insert(SEED, "Trying to mount root", ["panic: page fault"], cut=False)
    assert any(x.startswith("xn0: link state") for x in lines[at(lines, "panic: page") :])
    assert check(FREEBSD, lines, vcpus=7).failed_stage == "root-mount"


def test_witness_backtrace_is_not_a_crash() -> None:
    v = check(FREEBSD, SEED, vcpus=7)
    assert v.verdict is VerdictValue.PASS
    (notice,) = v.meta["notices"]
    assert (notice["name"], notice["stage"]) == ("witness-lock-order-reversal", "login")
    assert (
        notice["evidence"] == "lock order reversal:"
        and notice["line"] == at(SEED, "lock order") + 1
    )


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_blame_does_not_depend_on_chunking(chunk: int) -> None:
    before, block = FREEBSD_CAUSES["xenbus"]
    lines = insert(SEED, before, block, cut=True)
    whole = check(FREEBSD, lines, vcpus=7)
    parts = check(FREEBSD, lines, vcpus=7, chunk=chunk)
    assert (
        (parts.failed_stage, parts.reason)
        == (whole.failed_stage, whole.reason)
        == (
            "xenbus",
            "forbidden pattern 'panic' indicts xenbus (blamed by 'xen-driver-frame')",
        )
    )
    assert [(s.name, s.status, s.evidence, s.line) for s in parts.stages] == [
        (s.name, s.status, s.evidence, s.line) for s in whole.stages
    ]


def test_live_blame_waits_boundedly_for_the_backtrace() -> None:
    head = "\n".join(SEED[: at(SEED, "SMP: AP CPU #4 Launched!")]) + "\n"
    # The backtrace arrives within BLAME_WAIT: blamed by it.
    clock = FakeClock()
    c = StageChecker(FREEBSD, vcpus=7, disks=1, vifs=1, clock=clock)
    c.feed(head.encode() + b"panic: page fault\n")
    assert not c.done
    clock.now += BLAME_WAIT / 2
    assert c.poll() == [] and not c.done
    c.feed(b"cpuid = 0\nKDB: stack backtrace:\nxbd_connect() at xbd_connect+0x1f/frame 0x1\n")
    assert c.done and c.verdict.failed_stage == "xenbus"
    # Nothing more arrives: after BLAME_WAIT the stage in progress is blamed.
    clock = FakeClock()
    c = StageChecker(FREEBSD, vcpus=7, disks=1, vifs=1, clock=clock)
    c.feed(head.encode() + b"panic: page fault\n")
    clock.now += BLAME_WAIT
    events = c.poll()
    assert c.done and c.verdict.failed_stage == "ap-launch"
    assert [e.stage for e in events if e.kind == "failed"] == ["ap-launch"]
    assert c.verdict.stages[2].evidence == "panic: page fault"


# Real consoles (tests/samples), both from live runs on the nested host: the Debian 12
# systemd guest (2 disks, 2 vifs) and the guest kit (Debian's 6.1 kernel, busybox init, 1
# vCPU).  A generic Oops inside each stage's lines blames that stage; one whose trace is
# blkfront's blames xenbus wherever it comes.
SAMPLES = Path(__file__).parent / "samples"
REAL = {
    "debian12": (
        SAMPLES / "debian12-systemd-pvh-2disks-2vifs.log",
        {"vcpus": 2, "disks": 2, "vifs": 2},
        {
            "early-init": "Booting kernel on Xen PVH",
            "ap-launch": "smp: Brought up 1 node, 2 CPUs",
            "root-mount": "Run /init as init process",
            "xenbus": "blkfront: xvdb:",
            "login": "debian12-pvh login:",
        },
    ),
    "guestkit": (
        SAMPLES / "linux-pvh-guestkit-6.1-1vcpu.log",
        {"vcpus": 1, "disks": 1, "vifs": 1},
        {
            "early-init": "Booting kernel on Xen PVH",
            "ap-launch": "smp: Brought up 1 node, 1 CPU",
            "root-mount": "Run /init as init process",
            "xenbus": "blkfront: xvda:",
            "login": "xenpvh-guest login:",
        },
    ),
}


def check_real(name: str, lines: list[str] | None = None) -> Verdict:
    path, counts, _ = REAL[name]
    if lines is None:
        lines = path.read_text(errors="replace").splitlines()
    c = StageChecker(LINUX, **counts, clock=None)
    c.feed(("\n".join(lines) + "\n").encode())
    return c.finish()


def real_lines(name: str) -> list[str]:
    return REAL[name][0].read_text(errors="replace").splitlines()


@pytest.mark.parametrize("name", list(REAL))
def test_real_console_passes(name: str) -> None:
    assert check_real(name).verdict is VerdictValue.PASS


@pytest.mark.parametrize("stage", LINUX_ORDER)
@pytest.mark.parametrize("name", list(REAL))
def test_real_console_generic_oops_blames_the_stage_in_progress(name: str, stage: str) -> None:
    lines = insert(real_lines(name), REAL[name][2][stage], oops(GENERIC_FRAMES), cut=True)
    v = check_real(name, lines)
    assert v.reason == f"forbidden pattern 'kernel-bug' during {stage}"
    assert_blamed(v, stage, LINUX_ORDER, set(LINUX_ORDER[: LINUX_ORDER.index(stage)]))


@pytest.mark.parametrize("stage", ["ap-launch", "root-mount", "login"])
@pytest.mark.parametrize("name", list(REAL))
def test_real_console_blkfront_oops_blames_xenbus(name: str, stage: str) -> None:
    lines = insert(real_lines(name), REAL[name][2][stage], oops(BLKFRONT_FRAMES), cut=True)
    v = check_real(name, lines)
    reason = "forbidden pattern 'kernel-bug' indicts xenbus (blamed by 'xen-frontend-frame')"
    assert v.reason == reason
    head = lines[: at(lines, "BUG: kernel NULL")]
    done = {s.name for s in check_real(name, head).stages if s.status is StageStatus.PASSED}
    assert_blamed(v, "xenbus", LINUX_ORDER, done)
