"""The 2013 seed console against freebsd-pvhv1, and mutants of it that must fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenpvh.check.checker import StageChecker, check_file
from xenpvh.check.verdict import StageStatus, Verdict, VerdictValue
from xenpvh.profile import load_profile

SEED = Path(__file__).parent / "seed_freebsd_pvhv1_2013.txt"
LINES = SEED.read_text().splitlines()
PANIC = "panic: page fault"


@pytest.fixture(scope="module")
def profile():
    return load_profile("freebsd-pvhv1")


def run(profile, lines: list[str], vcpus: int = 7) -> Verdict:
    checker = StageChecker(profile, vcpus=vcpus, disks=1, vifs=1, clock=None)
    checker.feed(("\n".join(lines) + "\n").encode())
    return checker.finish()


def index_of(lines: list[str], needle: str) -> int:
    hits = [i for i, line in enumerate(lines) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def xenbus_last(lines: list[str]) -> list[str]:
    """The seed with its xbd0 attach line moved after the AP block, so xenbus completes last.

    In the real seed the xenbus lines precede the AP launches, so xenbus is never the stage
    in progress; this ordering gives it a window of its own.
    """
    out = list(lines)
    xbd = out.pop(index_of(out, "xbd0: 20480MB"))
    out.insert(index_of(out, "SMP: AP CPU #4 Launched!") + 1, xbd)
    return out


# The line that completes each stage, in FreeBSD's order (devices attach before the APs are
# released): in the seed each stage has lines of its own while it is in progress.
COMPLETING = {
    "early-init": "Hypervisor: Origin",
    "xenbus": "xbd0: 20480MB",
    "ap-launch": "SMP: AP CPU #4 Launched!",
    "root-mount": "Trying to mount root",
    "login": "FreeBSD/amd64 (Amnesiac) (xc0)",
}


def base_for(stage: str) -> list[str]:
    return list(LINES)


def by_name(v: Verdict, name: str):
    return next(s for s in v.stages if s.name == name)


def test_seed_passes_with_7_vcpus(profile) -> None:
    v = check_file(SEED, profile, vcpus=7, disks=1, vifs=1)
    assert v.verdict is VerdictValue.PASS, v.reason
    assert [s.status for s in v.stages] == [StageStatus.PASSED] * 5
    by = {s.name: s for s in v.stages}
    assert by["ap-launch"].evidence == "SMP: AP CPU #4 Launched!"
    assert by["login"].evidence == "FreeBSD/amd64 (Amnesiac) (xc0)"
    assert v.to_json_dict()["verdict"] == "pass"


def test_reordered_seed_still_passes(profile) -> None:
    assert run(profile, xenbus_last(LINES)).verdict is VerdictValue.PASS


@pytest.mark.parametrize("vcpus", [8, 6, 2])
def test_seed_fails_ap_launch_with_other_vcpus(profile, vcpus: int) -> None:
    v = check_file(SEED, profile, vcpus=vcpus, disks=1, vifs=1)
    assert v.verdict is VerdictValue.FAIL
    assert v.failed_stage == "ap-launch"
    assert "guest reports 7 CPUs" in v.reason


def test_seed_fails_with_wrong_device_counts(profile) -> None:
    v = check_file(SEED, profile, vcpus=7, disks=2, vifs=1)
    assert (v.verdict, v.failed_stage) == (VerdictValue.FAIL, "xenbus")
    assert "disks seen {xbd0}, expected 2" in by_name(v, "xenbus").detail
    v = check_file(SEED, profile, vcpus=7, disks=1, vifs=0)
    assert (v.verdict, v.failed_stage) == (VerdictValue.FAIL, "xenbus")
    assert "1 vif devices seen, expected 0" in v.reason


REMOVE = {
    "early-init": ["The FreeBSD Project", "Hypervisor: Origin"],
    "ap-launch": ["Launched!"],
    "xenbus": ["xenbusb_front0: <Xen Frontend Devices>"],
    "root-mount": ["Trying to mount root"],
    "login": ["FreeBSD/amd64 (Amnesiac)"],
}


@pytest.mark.parametrize("stage", list(REMOVE))
def test_removing_a_stages_lines_blames_that_stage(profile, stage: str) -> None:
    lines = [x for x in LINES if not any(n in x for n in REMOVE[stage])]
    v = run(profile, lines)
    assert v.verdict is VerdictValue.FAIL
    assert v.failed_stage == stage
    assert v.reason == f"console ended before {stage}"
    statuses = {s.name: s.status for s in v.stages}
    assert statuses[stage] is StageStatus.FAILED


def test_one_ap_missing(profile) -> None:
    lines = [x for x in LINES if x != "SMP: AP CPU #3 Launched!"]
    v = run(profile, lines)
    assert (v.verdict, v.failed_stage) == (VerdictValue.FAIL, "ap-launch")
    assert "APs seen {1,2,4,5,6}, expected {1,2,3,4,5,6}" in by_name(v, "ap-launch").detail


def test_ap_id_out_of_range_fails_at_once(profile) -> None:
    lines = list(LINES)
    lines.insert(index_of(lines, "SMP: AP CPU #2 Launched!"), "SMP: AP CPU #7 Launched!")
    v = run(profile, lines)
    assert (v.verdict, v.failed_stage) == (VerdictValue.FAIL, "ap-launch")
    assert "AP id 7 outside 1..6" in v.reason


@pytest.mark.parametrize("stage", list(COMPLETING))
def test_panic_inside_each_stage_blames_it(profile, stage: str) -> None:
    lines = base_for(stage)
    lines.insert(index_of(lines, COMPLETING[stage]), PANIC)
    v = run(profile, lines)
    assert v.verdict is VerdictValue.FAIL
    assert v.failed_stage == stage
    assert v.reason == f"forbidden pattern 'panic' during {stage}"
    failed = next(s for s in v.stages if s.status is StageStatus.FAILED)
    assert failed.name == stage and failed.evidence == PANIC


@pytest.mark.parametrize("stage", list(COMPLETING))
def test_console_cut_inside_each_stage(profile, stage: str) -> None:
    lines = base_for(stage)
    v = run(profile, lines[: index_of(lines, COMPLETING[stage])])
    assert (v.verdict, v.failed_stage) == (VerdictValue.FAIL, stage)
    assert v.reason == f"console ended before {stage}"
    names = [s.name for s in v.stages]
    for s in v.stages[: names.index(stage)]:
        assert s.status is StageStatus.PASSED
    for s in v.stages[names.index(stage) + 1 :]:
        assert s.status is StageStatus.NOT_REACHED


def test_witness_backtrace_is_not_a_panic(profile) -> None:
    # The seed's WITNESS "lock order reversal" + "KDB: stack backtrace" must stay legal.
    assert any("KDB: stack backtrace" in x for x in LINES)
    assert run(profile, LINES).verdict is VerdictValue.PASS
    lines = list(LINES)
    lines.insert(index_of(lines, "Trying to mount root"), "KDB: enter: panic")
    assert run(profile, lines).failed_stage == "root-mount"


def test_root_mount_failure_is_forbidden(profile) -> None:
    # "Trying to mount root" completed root-mount; the failure that follows indicts it (a
    # positional blame would have said login).
    lines = list(LINES)
    i = index_of(lines, "Trying to mount root")
    lines[i + 1 : i + 1] = ["Mounting from ufs:/dev/xbd0p2 failed with error 19.", "mountroot> "]
    v = run(profile, lines)
    assert (v.verdict, v.failed_stage) == (VerdictValue.FAIL, "root-mount")
    assert v.reason == "forbidden pattern 'root-mount-failed' indicts root-mount"
    assert by_name(v, "login").status is StageStatus.NOT_REACHED
