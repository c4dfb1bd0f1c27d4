"""The judge of nested SVM's re-delivered upcall: it confirms the real crash and nothing that
merely looks alike (a real guest bug must stay the guest's failure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenpvh.check.faults import find_fault, judge, xen_upcall_redelivered

SAMPLE = (Path(__file__).parent / "samples" / "tcg-double-upcall-linux-6.1.log").read_text()
LINES = SAMPLE.splitlines()
INNER_RIP = "RIP: 0010:asm_sysvec_xen_hvm_callback+0x0/0x20"
INNER_FLAGS = "RSP: 0000:fffffe0000002fd8 EFLAGS: 00000016"


def _edit(old: str, new: str) -> list[str]:
    assert SAMPLE.count(old) == 1
    return SAMPLE.replace(old, new).splitlines()


def test_the_real_crash_is_confirmed() -> None:
    f = xen_upcall_redelivered(LINES)
    assert f is not None and f.judge == "xen-upcall-redelivered"
    assert INNER_FLAGS in LINES[f.line]
    assert "asm_sysvec_xen_hvm_callback+0x0/0x20 ran with IF=0 (EFLAGS 00000016)" in f.evidence
    assert judge("xen-upcall-redelivered", LINES) == f
    assert find_fault(LINES) == f


def test_interrupts_on_at_the_stub_is_not_the_fault() -> None:
    # The same frame with IF set is an ordinary nested interrupt, which a CPU may take.
    assert xen_upcall_redelivered(_edit(INNER_FLAGS, INNER_FLAGS[:-8] + "00000216")) is None


def test_no_upcall_frame_over_the_stub_is_not_the_fault() -> None:
    lines = _edit(" asm_sysvec_xen_hvm_callback+0x16/0x20\n", " asm_exc_page_fault+0x22/0x30\n")
    assert xen_upcall_redelivered(lines) is None


def test_a_stub_rip_with_if_clear_outside_an_oops_is_not_the_fault() -> None:
    lines = [ln for ln in LINES if "BUG:" not in ln and "stack guard page" not in ln]
    lines = [ln for ln in lines if "end trace" not in ln and "Kernel panic" not in ln]
    assert xen_upcall_redelivered(lines) is None


@pytest.mark.parametrize(
    "oops",
    [
        # A guest's own bugs, with interrupt entry frames in their traces.
        [
            "[ 12.1] BUG: kernel NULL pointer dereference, address: 0000000000000008",
            "[ 12.1] RIP: 0010:xennet_poll+0x1f/0x400",
            "[ 12.1] RSP: 0018:ffffc90000003e80 EFLAGS: 00010246",
            "[ 12.1]  asm_sysvec_xen_hvm_callback+0x16/0x20",
            "[ 12.1] RIP: 0010:default_idle+0xb/0x10",
            "[ 12.1] RSP: 0018:ffffffff82003e98 EFLAGS: 00000246",
        ],
        [
            "[ 3.0] BUG: ENTRY_TRAMPOLINE stack guard page was hit at 0000 (stack is 0..1)",
            "[ 3.0] RIP: 0010:error_entry+0x10/0x130",
            "[ 3.0] RSP: 0000:fffffe0000002000 EFLAGS: 00000083",
            "[ 3.0] Kernel panic - not syncing: Fatal exception in interrupt",
        ],
    ],
)
def test_lookalike_guest_oopses_are_not_the_fault(oops: list[str]) -> None:
    assert xen_upcall_redelivered(oops) is None


# An oops's end clears what the judge had seen inside it: a frame and a stub RIP of one oops
# never pair with the register dump of the next (nor with lines outside any oops).
_FRAME = " asm_sysvec_xen_hvm_callback+0x16/0x20"
_IF_CLEAR = "RSP: 0018:ffffc9000001bd80 EFLAGS: 00010046"


@pytest.mark.parametrize(
    "end", ["---[ end trace 0000000000000000 ]---", "Kernel panic - not syncing: Fatal exception"]
)
def test_the_judge_forgets_an_ended_oops(end: str) -> None:
    first = ["BUG: unable to handle page fault for address: ffffffffff5fd000", _FRAME, INNER_RIP]
    second = ["BUG: kernel NULL pointer dereference, address: 0000000000000008", _IF_CLEAR]
    assert xen_upcall_redelivered([*first, end, *second]) is None
    # The same lines without the end between them are one oops: the fault.
    assert xen_upcall_redelivered([*first, *second]) is not None


def test_evidence_after_an_oops_ended_is_outside_any_oops() -> None:
    oops = ["Oops: 0000 [#1] PREEMPT SMP NOPTI", "---[ end trace 0000000000000000 ]---"]
    assert xen_upcall_redelivered([*oops, _FRAME, INNER_RIP, INNER_FLAGS]) is None
    assert xen_upcall_redelivered([oops[0], _FRAME, INNER_RIP, INNER_FLAGS]) is not None
