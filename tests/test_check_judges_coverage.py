"""Rules of the judges and deciders that no other test pinned (issue 25: each one's mutant,
in bench/mutants.py, fails here): the run and console deciders, verdict.json, the hypervisor
stage, the host-hang judge and the host-fault judge."""

from __future__ import annotations

import pytest

from xenpvh.check.decide import decide_devices_stuck, decide_error, decide_unreached, retryable
from xenpvh.check.decide_console import ConsoleFacts, StageFact, StageFailure, decide_console
from xenpvh.check.faults import xen_upcall_redelivered
from xenpvh.check.hostconsole import HostExpectation, check_hypervisor, read_expect_file
from xenpvh.check.hosthang import CODE_BYTES, MAX_WALK, CpuState, judge, parse_registers
from xenpvh.check.verdict import (
    StageResult,
    StageStatus,
    Verdict,
    VerdictValue,
    verdict_from_json_dict,
)

# ---------------------------------------------------------------- the deciders


def test_a_verdict_before_a_boot_is_never_a_fail_or_pass() -> None:
    for value in (VerdictValue.FAIL, VerdictValue.PASS):
        with pytest.raises(ValueError, match="blocked or broken"):
            decide_unreached(value, "x", ["one"])
        with pytest.raises(ValueError, match="blocked or broken"):
            decide_error(value, "x", [], ["one"])


def test_an_error_verdict_blames_no_stage_it_was_handed() -> None:
    failed = StageResult("one", StageStatus.FAILED, 1.0, "line", "")
    v = decide_error(VerdictValue.BROKEN, "xenstored gone", [failed], ["one"])
    assert v.failed_stage is None
    assert [(s.name, s.status) for s in v.stages] == [("one", StageStatus.NOT_REACHED)]
    assert decide_error(VerdictValue.BLOCKED, "bad", [], ["one", "two"]).stages == [
        StageResult("one"),
        StageResult("two"),
    ]


def test_stuck_devices_fail_their_stage_and_nothing_after_it_is_reached() -> None:
    base = Verdict(
        VerdictValue.PASS,
        "all stages passed",
        stages=[StageResult(n, StageStatus.PASSED, 1.0, n) for n in ("one", "two", "three")],
        meta={"profile": "rules"},
    )
    v = decide_devices_stuck(base, "vbd 51712: state 1", 10, "two")
    assert (v.verdict, v.failed_stage) == (VerdictValue.FAIL, "two")
    assert [s.status for s in v.stages] == [
        StageStatus.PASSED,
        StageStatus.FAILED,
        StageStatus.NOT_REACHED,
    ]
    assert v.meta == {"profile": "rules"}


def test_a_stage_failure_decides_even_when_every_stage_completed() -> None:
    facts = ConsoleFacts(
        profile="rules",
        vcpus=2,
        disks=0,
        vifs=0,
        stages=[StageFact("one", True), StageFact("two", True)],
        in_progress="two",
        failure=StageFailure(1, "two: AP id 5 outside 1..1 for 2 vCPUs", None, "APs: 5", "", 9),
    )
    v = decide_console(facts)
    assert (v.verdict, v.failed_stage) == (VerdictValue.FAIL, "two")


def test_stage_detail_and_line_round_trip_through_verdict_json() -> None:
    v = Verdict(
        VerdictValue.FAIL,
        "why",
        "one",
        [StageResult("one", StageStatus.FAILED, 1.5, "ev", "APs seen {}", line=7)],
    )
    d = v.to_json_dict()
    assert d["stages"][0]["detail"] == "APs seen {}" and d["stages"][0]["line"] == 7
    assert verdict_from_json_dict(d) == v


# ---------------------------------------------------------------- the hypervisor stage

XEN_DMESG = """\
(XEN) [    0.000000] Xen version 4.17.5-pre (root@) (gcc) debug=n Mon Jan  1 2024
(XEN) [    0.100000] marker: PATCH-ONE applied
"""


def test_hypervisor_stage_passes_on_prefixed_lines() -> None:
    exp = HostExpectation("4.17.5", ("marker: PATCH-ONE applied",))
    r = check_hypervisor(XEN_DMESG, "4.17.5-pre", exp)
    assert r.status is StageStatus.PASSED, r.detail
    # The (XEN) prefix and Xen's stamp are not evidence.
    assert r.evidence.startswith("Xen version 4.17.5-pre (root@)")
    assert r.evidence.endswith("| marker: PATCH-ONE applied")


@pytest.mark.parametrize(
    ("exp", "xl_version", "missing"),
    [
        (HostExpectation(None, ("PATCH-TWO",)), "4.17.5", "'PATCH-TWO'"),
        (HostExpectation("4.17.5"), "4.16.0", "xl info xen_version '4.16.0'"),
        (HostExpectation("4.17.5"), None, "xl info xen_version None"),
    ],
)
def test_hypervisor_stage_fails_naming_the_missing_line(
    exp: HostExpectation, xl_version: str | None, missing: str
) -> None:
    r = check_hypervisor(XEN_DMESG, xl_version, exp)
    assert r.status is StageStatus.FAILED
    assert missing in r.detail


def test_hypervisor_version_dots_are_literal() -> None:
    r = check_hypervisor(XEN_DMESG.replace("4.17.5", "4x17x5"), "4.17.5", HostExpectation("4.17.5"))
    assert r.status is StageStatus.FAILED and "banner" in r.detail


def test_hypervisor_expect_file_skips_comments_and_blanks() -> None:
    assert read_expect_file("# c\n\n  marker one \n  # x\nmarker two\n") == (
        "marker one",
        "marker two",
    )


# ---------------------------------------------------------------- the host-hang judge

CPU32 = (
    "EAX=00000000 EBX=00000000 ECX=c0000080 EDX=00000000\n"
    "ESI=00000000 EDI=00000000 EBP=00000000 ESP=00007000\n"
    "EIP=0010f000 EFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0\n"
    "CR0=00000011 CR2=00000000 CR3=00000000 CR4=00000000\n"
    "EFER=0000000000000000\n"
)


def test_a_32_bit_register_dump_is_read_as_such() -> None:
    (cpu,) = parse_registers(CPU32)
    assert (cpu.index, cpu.ip, cpu.long_mode_code, cpu.rcx, cpu.cr0) == (
        0,
        0x10F000,
        False,
        0xC0000080,
        0x11,
    )


ZEROS = b"\x00" * CODE_BYTES


def _cpu(ip: int, *, halted: bool = False) -> CpuState:
    return CpuState(0, ip, True, halted, 0x80050033, 0xD01)


def test_a_cpu_walking_zeroed_memory_is_a_hang() -> None:
    assert judge([_cpu(0x1000)], [_cpu(0x1100)], {0: (ZEROS, ZEROS)}) is not None


@pytest.mark.parametrize(
    ("second", "code"),
    [
        pytest.param(_cpu(0x1100, halted=True), (ZEROS, ZEROS), id="halted"),
        pytest.param(_cpu(0x1000 + MAX_WALK), (ZEROS, ZEROS), id="jumped-too-far"),
        pytest.param(_cpu(0x1000), (ZEROS, ZEROS), id="did-not-move"),
        pytest.param(_cpu(0x1100), (ZEROS, ZEROS[:-1]), id="short-dump"),
        pytest.param(_cpu(0x1100), (ZEROS, b"\x90" * CODE_BYTES), id="one-sample-is-code"),
    ],
)
def test_a_cpu_not_walking_zeroed_memory_is_no_hang(
    second: CpuState, code: tuple[bytes, bytes]
) -> None:
    assert judge([_cpu(0x1000)], [second], {0: code}) is None


# ---------------------------------------------------------------- the fault judge

REDELIVERED = [
    "BUG: ENTRY_TRAMPOLINE stack guard page was hit at 000000001f0c0f6b",
    " sysvec_xen_hvm_callback+0xa/0x90",
    " asm_sysvec_xen_hvm_callback+0x16/0x20",
    "RIP: 0010:asm_sysvec_xen_hvm_callback+0x0/0x20",
    "Code: 90 90 90",
    "RSP: 0000:fffffe0000002fd8 EFLAGS: 00000016",
]


def test_the_fault_judge_needs_eflags_near_the_rip() -> None:
    assert xen_upcall_redelivered(REDELIVERED) is not None
    far = [*REDELIVERED[:4], *["Code: 90"] * 4, REDELIVERED[5]]
    assert xen_upcall_redelivered(far) is None


def test_the_fault_judge_takes_one_eflags_per_rip() -> None:
    """The RIP's own register line had IF set; a later EFLAGS line is another frame's."""
    lines = [*REDELIVERED[:4], "RSP: 0000:fffffe0000002fd8 EFLAGS: 00000216", REDELIVERED[5]]
    assert xen_upcall_redelivered(lines) is None


def test_only_a_broken_verdict_is_retried() -> None:
    assert retryable(Verdict(VerdictValue.BROKEN, "x", meta={"retryable": True}))
    assert not retryable(Verdict(VerdictValue.FAIL, "x", meta={"retryable": True}))
    assert not retryable(Verdict(VerdictValue.BROKEN, "x"))
