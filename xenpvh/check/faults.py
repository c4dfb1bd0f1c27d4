"""Judges of host faults: console evidence that a guest crash was the host's doing.

Pure: console lines in, a finding out.  A host declares what it may be blamed for
(`xenpvh.host.base.EmulationFault`: a quick trigger pattern plus the name of a judge here);
the judge decides from the whole oops whether the evidence really is that fault, so a guest
crash that merely looks alike stays the guest's failure.

The one judge so far: QEMU TCG's nested SVM re-delivers an interrupt that VMRUN injected
(the stale `exception_index`, see guestcfg/patches/qemu/).  On a Linux PVH guest under Xen,
the injected interrupt is Xen's upcall (HYPERVISOR_CALLBACK_VECTOR 0xf3).  The re-delivery
lands on the first instructions of the upcall's own entry stub, where interrupts are still
off and `swapgs` has not run yet; the entry code then runs with the user's GS base, every
per-CPU access faults, and the entry stack overflows:

    BUG: ENTRY_TRAMPOLINE stack guard page was hit at ...
    ...
     sysvec_xen_hvm_callback+0xa/0x90
     asm_sysvec_xen_hvm_callback+0x16/0x20           <- the second delivery
    RIP: 0010:asm_sysvec_xen_hvm_callback+0x0/0x20   <- interrupted: the first one's stub
    RSP: 0000:fffffe0000002fd8 EFLAGS: 00000016      <- with IF (0x200) clear

A maskable interrupt taken with IF clear cannot happen on a real CPU: that frame is the
evidence.  Linux prints these lines from `show_regs`/`show_trace_log_lvl`
(arch/x86/kernel/dumpstack.c): a `RIP: <cs>:<sym>+<off>/<size>` line, then
`RSP: <ss>:<rsp> EFLAGS: <8 hex digits>`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# The oops that such a re-delivery ends in (and where a search for its evidence starts).
OOPS_START = re.compile(
    r"BUG: ENTRY_TRAMPOLINE stack guard page was hit|BUG: |Oops: |general protection fault"
)
OOPS_END = re.compile(r"---\[ end trace|Kernel panic - not syncing")
# Entry stubs of the upcall: the interrupted context of a re-delivery.  error_entry is where
# the stub goes next, still before swapgs.
_STUBS = r"(?:asm_sysvec_xen_hvm_callback|xen_asm_exc_xen_hypervisor_callback|error_entry)"
CALLBACK_FRAME = re.compile(r"^(?:\[[ \d.]+\])?\s+(asm_sysvec_xen_hvm_callback)\+0x[0-9a-f]+/")
KERNEL_RIP = re.compile(r"RIP: 0010:(" + _STUBS + r")\+0x([0-9a-f]+)/0x[0-9a-f]+")
EFLAGS = re.compile(r"EFLAGS: ([0-9a-f]{8})")
X86_EFLAGS_IF = 0x200
# Lines a frame's register dump may sit below its frame line (Code: and RSP: come between).
NEAR = 3


@dataclass(frozen=True)
class FaultFinding:
    """Evidence that a crash was the host's: which judge, where and the deciding lines."""

    judge: str
    line: int  # 0-based index of the deciding line
    evidence: str


def xen_upcall_redelivered(lines: Iterable[str]) -> FaultFinding | None:
    """The re-delivered upcall: inside an oops, a delivery of Xen's upcall whose interrupted
    context is an upcall entry stub running with interrupts off."""
    in_oops = False
    frame_at = -(NEAR + 1)
    rip_at = -(NEAR + 1)
    rip_text = ""
    for i, raw in enumerate(lines):
        line = raw.rstrip("\r\n")
        if OOPS_START.search(line):
            in_oops = True
        if not in_oops:
            continue
        if CALLBACK_FRAME.search(line):
            frame_at = i
            continue
        rip = KERNEL_RIP.search(line)
        if rip is not None and i - frame_at <= NEAR:
            rip_at, rip_text = i, rip.group(0)
            continue
        flags = EFLAGS.search(line)
        if flags is not None and i - rip_at <= NEAR and rip_text:
            if not int(flags.group(1), 16) & X86_EFLAGS_IF:
                return FaultFinding(
                    "xen-upcall-redelivered",
                    i,
                    f"upcall delivered while {rip_text} ran with IF=0 (EFLAGS {flags.group(1)})",
                )
            rip_text = ""
        if OOPS_END.search(line):
            in_oops = False
            frame_at = rip_at = -(NEAR + 1)
            rip_text = ""
    return None


JUDGES: dict[str, Callable[[Iterable[str]], FaultFinding | None]] = {
    "xen-upcall-redelivered": xen_upcall_redelivered,
}


def judge(name: str, lines: Iterable[str]) -> FaultFinding | None:
    """Run the judge `name` over console lines (KeyError: no such judge, a bug of ours)."""
    return JUDGES[name](lines)


def find_fault(lines: Iterable[str]) -> FaultFinding | None:
    """The first finding of any judge (benchmarks count faults with this)."""
    text = list(lines)
    for fn in JUDGES.values():
        finding = fn(text)
        if finding is not None:
            return finding
    return None


__all__ = ["JUDGES", "FaultFinding", "find_fault", "judge", "xen_upcall_redelivered"]
