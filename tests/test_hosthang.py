"""The host-hang judge (vCPU samples from QEMU's monitor) and the watched host command."""

from __future__ import annotations

import threading
import time

import pytest

from xenpvh.check.hosthang import (
    CODE_BYTES,
    HostHang,
    judge,
    parse_memory_dump,
    parse_registers,
)
from xenpvh.errors import BrokenError
from xenpvh.host.nested.hang import HostHung, watched_call


def cpu_dump(index: int, rip: int, cr0: int, efer: int, *, rcx: int = 0, hlt: int = 0) -> str:
    """One vCPU as QEMU 7.2's x86_cpu_dump_state prints it for a 64-bit code segment (the
    layout of target/i386/cpu-dump.c), under `info registers -a`'s CPU#n header."""
    return (
        f"\nCPU#{index}\n"
        f"RAX=0000000000000000 RBX=0000000000000000 RCX={rcx:016x} RDX=0000000000000000\n"
        "RSI=0000000000000000 RDI=0000000000000000 RBP=0000000000000000 RSP=ffff830000000f00\n"
        "R8 =0000000000000000 R9 =0000000000000000 R10=0000000000000000 R11=0000000000000000\n"
        "R12=0000000000000000 R13=0000000000000000 R14=0000000000000000 R15=0000000000000000\n"
        f"RIP={rip:016x} RFL=00000046 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT={hlt}\n"
        "ES =0000 0000000000000000 ffffffff 00c00000\n"
        "CS =e008 0000000000000000 ffffffff 00a09b00 DPL=0 CS64 [-RA]\n"
        "GDT=     ffff82d040600000 0000ffff\n"
        "IDT=     ffff82d040601000 00000fff\n"
        f"CR0={cr0:08x} CR2=0000000000000000 CR3=00000000bfc4b000 CR4=003506e0\n"
        "DR0=0000000000000000 DR1=0000000000000000 DR2=0000000000000000 DR3=0000000000000000 \n"
        "DR6=00000000ffff0ff0 DR7=0000000000000400\n"
        f"EFER={efer:016x}\n"
    )


XEN_RIP = 0xFFFF82D040234567
HEALTHY = cpu_dump(0, XEN_RIP, 0x80050033, 0xD01) + cpu_dump(1, XEN_RIP + 0x40, 0x80050033, 0xD01)


def test_parse_registers_reads_every_vcpu() -> None:
    cpus = parse_registers(HEALTHY + "CPU#7 not available\n")
    assert [(c.index, c.ip, c.cr0, c.efer, c.long_mode_code) for c in cpus] == [
        (0, XEN_RIP, 0x80050033, 0xD01, True),
        (1, XEN_RIP + 0x40, 0x80050033, 0xD01, True),
    ]
    assert parse_registers("garbage\n" * 10) == []


def test_long_mode_with_paging_off_is_a_hang() -> None:
    # The nested-SVM #VMEXIT bug, with the values a live run read from the frozen nested host
    # (Debian's QEMU 7.2 + 0001 only, FreeBSD 13.2 PVH guest at unpause): Xen's EFER
    # (SCE|LME|LMA|NXE|SVME), the guest's CR0 (PE|TS|ET, PG clear), the guest's RCX (MSR_EFER)
    # left in the register file, RIP in Xen's address space.
    frozen = cpu_dump(0, XEN_RIP, 0x80050033, 0xD01) + cpu_dump(
        1, 0xFFFF82D0405BD6FB, 0x19, 0x1D01, rcx=0xC0000080
    )
    cpus = parse_registers(frozen)
    finding = judge(cpus, cpus)
    assert isinstance(finding, HostHang)
    assert "vCPU 1" in finding.reason and "paging off" in finding.reason
    assert "RCX=0xc0000080" in finding.evidence
    # The same CPU with paging on is a working machine.
    assert judge(parse_registers(HEALTHY), parse_registers(HEALTHY)) is None


def test_walking_through_zeroed_memory_is_a_hang_code_is_not() -> None:
    first = parse_registers(cpu_dump(0, 0xFFFF82D0409A0000, 0x80050033, 0xD01))
    second = parse_registers(cpu_dump(0, 0xFFFF82D040AA0000, 0x80050033, 0xD01))
    zeros = bytes(CODE_BYTES)
    code = bytes.fromhex("f30f1efa55534889fb") + bytes(CODE_BYTES)
    found = judge(first, second, {0: (zeros, zeros)})
    assert found is not None and "zero-filled memory" in found.reason
    assert judge(first, second, {0: (zeros, code)}) is None  # real code at one sample
    assert judge(first, first, {0: (zeros, zeros)}) is None  # not moving: a spin, not this
    assert judge(second, first, {0: (zeros, zeros)}) is None  # backwards: not a walk
    assert judge(first, second, {0: (zeros[:4], zeros[:4])}) is None  # too little read


def test_parse_memory_dump_of_hmp_x() -> None:
    text = (
        "ffff82d0409a0000: 0x00 0x00 0x00 0x00 0x00 0x00 0x00 0x00\n"
        "ffff82d0409a0008: 0x0f 0x0b 0xc3 0x90 0x00 0x00 0x00 0x00\n"
    )
    assert parse_memory_dump(text) == bytes(8) + bytes.fromhex("0f0bc39000000000")


def test_watched_call_returns_quick_results_without_probing() -> None:
    probes: list[int] = []
    assert watched_call(lambda: 42, lambda: probes.append(1) or None, after=5.0) == 42
    assert probes == []


def test_watched_call_names_a_hang_fast_and_unblocks_the_call() -> None:
    released = threading.Event()
    finding = HostHang("vCPU 1 runs in long mode with paging off", "CPU#1 RIP=0x1")
    start = time.monotonic()
    with pytest.raises(HostHung, match="hung while `xl unpause` ran: vCPU 1") as info:
        watched_call(
            lambda: released.wait(30),
            lambda: finding,
            what=" while `xl unpause` ran",
            after=0.2,
            every=0.2,
            on_hang=released.set,
        )
    assert time.monotonic() - start < 5
    assert isinstance(info.value, BrokenError) and info.value.finding is finding
    assert released.is_set()


def test_watched_call_passes_on_the_commands_own_error_and_keeps_probing_a_live_host() -> None:
    probes: list[int] = []

    def slow_then_fail() -> None:
        time.sleep(0.5)
        raise BrokenError("ssh: timed out")

    with pytest.raises(BrokenError, match="timed out"):
        watched_call(slow_then_fail, lambda: probes.append(1) or None, after=0.1, every=0.1)
    assert len(probes) >= 2
