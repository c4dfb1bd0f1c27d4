"""Is the host itself hung?  Judged from its virtual CPUs, as QEMU's monitor shows them.

When a guest freezes the whole nested host (the hypervisor no longer schedules dom0: ssh,
xl and xenstored stop answering), the guest's console says nothing and a guest verdict
would be a lie.  The CPUs say what happened.  Two signatures no working hypervisor shows:

- a vCPU in long mode with paging off (EFER.LMA set, CR0.PG clear): architecturally
  impossible, so the emulated CPU lost its state (the QEMU nested-SVM #VMEXIT bug of
  guestcfg/patches/qemu/0002: Xen then runs its own virtual addresses as physical ones);
- a vCPU whose instruction pointer moved between two samples and sits, both times, on
  zero-filled memory (`00 00` is `add %al,(%rax)`: a CPU walking through empty memory,
  not code).

Pure: the monitor's text (`info registers -a`) and the bytes at each vCPU's RIP (`x/NNxb`)
in, a finding out.  The caller (the nested host) takes the samples.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CR0_PG = 1 << 31
EFER_LMA = 1 << 10
# Bytes read at RIP for the zero-memory test: an instruction stream of this many zero bytes
# is not code.
CODE_BYTES = 32
# How far a CPU executing `00 00` gets between two samples (~1 MB/s under TCG, measured).
MAX_WALK = 64 << 20
_MAX_TEXT = 256 * 1024
_CPU = re.compile(r"^CPU#(\d+)\s*$", re.M)
_IP = re.compile(r"\b(RIP|EIP)=([0-9a-f]+)\b.*?\bHLT=(\d)")
_REG = {
    name: re.compile(rf"\b{name}=([0-9a-f]+)\b")
    for name in ("CR0", "CR3", "CR4", "EFER", "RCX", "ECX")
}


@dataclass(frozen=True)
class CpuState:
    """The registers of one vCPU that the judge needs."""

    index: int
    ip: int
    long_mode_code: bool  # RIP= (64-bit code segment) rather than EIP=
    halted: bool
    cr0: int
    efer: int
    rcx: int | None = None

    def describe(self) -> str:
        rcx = f" RCX={self.rcx:#x}" if self.rcx is not None else ""
        return f"CPU#{self.index} RIP={self.ip:#x} CR0={self.cr0:#x} EFER={self.efer:#x}{rcx}"


@dataclass(frozen=True)
class HostHang:
    """What shows the host hung, in words, with the register evidence."""

    reason: str
    evidence: str


def parse_registers(text: str) -> list[CpuState]:
    """The vCPUs of an `info registers -a` dump (QEMU's x86 cpu-dump format)."""
    text = text[:_MAX_TEXT]
    heads = list(_CPU.finditer(text))
    if not heads:
        # `info registers` without -a: one CPU, no header.
        blocks = [(0, text)] if _IP.search(text) else []
    else:
        blocks = []
        for i, m in enumerate(heads):
            end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
            blocks.append((int(m.group(1)), text[m.end() : end]))
    cpus = []
    for index, block in blocks:
        ip = _IP.search(block)
        regs = {n: p.search(block) for n, p in _REG.items()}
        if ip is None or regs["CR0"] is None or regs["EFER"] is None:
            continue  # "CPU#n not available" or a truncated block
        rcx = regs["RCX"] or regs["ECX"]
        cpus.append(
            CpuState(
                index=index,
                ip=int(ip.group(2), 16),
                long_mode_code=ip.group(1) == "RIP",
                halted=ip.group(3) == "1",
                cr0=int(regs["CR0"].group(1), 16),
                efer=int(regs["EFER"].group(1), 16),
                rcx=int(rcx.group(1), 16) if rcx else None,
            )
        )
    return cpus


_HEX_BYTE = re.compile(r"\b0x([0-9a-f]{2})\b")


def parse_memory_dump(text: str) -> bytes:
    """The bytes of an HMP `x/NNxb ADDR` dump (`ffff...: 0x00 0x01 ...` lines)."""
    out = bytearray()
    for line in text[:_MAX_TEXT].splitlines():
        _, sep, values = line.partition(":")
        if sep:
            out.extend(int(h, 16) for h in _HEX_BYTE.findall(values))
    return bytes(out)


def judge(
    first: Sequence[CpuState],
    second: Sequence[CpuState],
    code_at_ip: Mapping[int, tuple[bytes, bytes]] | None = None,
) -> HostHang | None:
    """A hang finding from two register samples (and the code at each vCPU's RIP in each
    sample, by vCPU index), or None when the CPUs look like a working machine's."""
    for cpu in second:
        if cpu.efer & EFER_LMA and not cpu.cr0 & CR0_PG:
            return HostHang(
                f"vCPU {cpu.index} runs in long mode with paging off (EFER.LMA set, CR0.PG "
                "clear), a state no x86 CPU can be in: the emulated CPU lost the "
                "hypervisor's state",
                cpu.describe(),
            )
    before = {c.index: c for c in first}
    for cpu in second:
        old = before.get(cpu.index)
        code = (code_at_ip or {}).get(cpu.index)
        # Forward only: a CPU walking through memory (`add %al,(%rax)` is 2 bytes) never
        # jumps back, and a sample read through a guest's own paging (the monitor does not
        # apply nested paging) should not be mistaken for one.
        if old is None or code is None or cpu.halted or not 0 < cpu.ip - old.ip < MAX_WALK:
            continue
        if all(len(c) >= CODE_BYTES and not any(c) for c in code):
            return HostHang(
                f"vCPU {cpu.index} executes zero-filled memory (RIP moved {old.ip:#x} -> "
                f"{cpu.ip:#x}, {CODE_BYTES} zero bytes at both)",
                f"{old.describe()} | {cpu.describe()}",
            )
    return None


__all__ = [
    "CODE_BYTES",
    "CpuState",
    "HostHang",
    "judge",
    "parse_memory_dump",
    "parse_registers",
]
