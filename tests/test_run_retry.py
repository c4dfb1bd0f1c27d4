"""A guest crash that the host's own emulation causes: `broken` and retried, never a hidden
`fail`; on a host that declares no such fault the same console stays a guest `fail`.

BootRun runs against the same boundary fake as test_run_boot (FakeXenHost answers like xl 4.17
and `xl console` is a real pty child); the console is a real crash from the nested host.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_run_boot import GOOD, _run
from test_toolstack_fakes import FakeXenHost

from xenpvh.check.verdict import Verdict, VerdictValue
from xenpvh.errors import BlockedError
from xenpvh.host.base import EmulationFault, emulation_faults
from xenpvh.host.nested import TCG_FAULTS, NestedHost
from xenpvh.profile import load_profile
from xenpvh.run.retry import retryable, run_with_retries

SAMPLES = Path(__file__).parent / "samples"
BOOT_START = (
    b"Booting paravirtualized kernel on Xen PVH\n"
    b"smp: Brought up 1 node, 2 CPUs\n"
    b"[    7.202339] Run /init as init process\n"
)
# A real crash of a linux-pvh guest on the nested host under Debian's QEMU 7.2 (Xen 4.17.5,
# Debian's 6.1 kernel): the upcall re-delivered with IF=0, the entry stack overflowing.
CRASH = BOOT_START + (SAMPLES / "tcg-double-upcall-linux-6.1.log").read_bytes()
# The same first lines without the evidence (no upcall frame over an IF=0 entry stub): a
# guest crash that merely looks alike.
LOOKALIKE = BOOT_START + (
    b"[   27.609286] BUG: ENTRY_TRAMPOLINE stack guard page was hit at (____ptrval____) "
    b"(stack is (____ptrval____)..(____ptrval____))\n"
    b"[   27.613106] stack guard page: 0000 [#1] PREEMPT SMP NOPTI\n"
    b"[   28.655130] Kernel panic - not syncing: Fatal exception in interrupt\n"
)
PROFILE = load_profile("linux-pvh")


class TcgHost(FakeXenHost):
    emulation_faults = TCG_FAULTS


@pytest.fixture
def kit(tmp_path: Path) -> tuple[str, str]:
    k, r = tmp_path / "vmlinuz", tmp_path / "initrd"
    k.write_bytes(b"kernel")
    r.write_bytes(b"initrd")
    return str(k), str(r)


def _boot(host: FakeXenHost, console: bytes, kit: tuple[str, str], tmp_path: Path) -> Verdict:
    """Boot one linux-pvh point on `host` whose guest prints `console`; the host is closed
    afterwards and must hold no guest."""
    host.console = console
    try:
        run, _ = _run(host, PROFILE.point(kernel=kit[0], ramdisk=kit[1]), tmp_path)
        return run.run()
    finally:
        host.close()
        assert list(host.domains) == ["Domain-0"]


def test_emulation_fault_on_a_tcg_host_is_broken_and_retryable(kit, tmp_path) -> None:
    v = _boot(TcgHost(), CRASH, kit, tmp_path)
    assert v.verdict == VerdictValue.BROKEN
    assert retryable(v)
    assert v.meta["emulation_fault"] == "tcg-svm-double-delivery"
    # Broken: no guest stage is blamed; the guest's own verdict is kept in the reason and
    # the meta, with the lines that gave it away.
    assert v.failed_stage is None and v.meta["guest_failed_stage"] == "login"
    assert "guest verdict was fail" in v.reason and "ENTRY_TRAMPOLINE" in v.reason
    assert "asm_sysvec_xen_hvm_callback+0x0/0x20 ran with IF=0" in v.reason
    saved = json.loads((tmp_path / "art" / "verdict.json").read_text())
    assert saved["verdict"] == "broken"


def test_lookalike_crash_without_the_evidence_stays_a_guest_fail_on_tcg(kit, tmp_path) -> None:
    v = _boot(TcgHost(), LOOKALIKE, kit, tmp_path)
    assert v.verdict == VerdictValue.FAIL
    assert not retryable(v)
    assert "emulation_fault" not in v.meta


def test_same_crash_on_a_host_without_faults_is_a_guest_fail(kit, tmp_path) -> None:
    v = _boot(FakeXenHost(), CRASH, kit, tmp_path)
    assert v.verdict == VerdictValue.FAIL
    assert not retryable(v)
    assert "emulation_fault" not in v.meta


def test_a_panic_without_the_signature_stays_a_fail_on_tcg(kit, tmp_path) -> None:
    panic = GOOD.replace(b"xenpvh-guest login: ", b"Kernel panic - not syncing: x\n")
    v = _boot(TcgHost(), panic, kit, tmp_path)
    assert v.verdict == VerdictValue.FAIL


def _verdict(value: VerdictValue, *, retry: bool = False) -> Verdict:
    v = Verdict(value, f"{value}", stages=[])
    if retry:
        v.meta["retryable"] = True
        v.meta["emulation_fault"] = "tcg-svm-lost-gs-base"
    return v


def test_retries_only_what_the_host_spoilt_and_keeps_every_attempt(tmp_path) -> None:
    seq = [_verdict(VerdictValue.BROKEN, retry=True), _verdict(VerdictValue.PASS)]
    seen: list[int] = []

    def boot(art: Path) -> Verdict:
        (art / "console.log").parent.mkdir(parents=True, exist_ok=True)
        (art / "console.log").write_text(f"attempt {len(seen) + 1}\n")
        seen.append(1)
        return seq.pop(0)

    # The host's files (written before the run, e.g. the nested host's serial log) stay.
    (tmp_path / "host-serial.log").write_text("Xen\n")
    (tmp_path / "host-xl-info.txt").write_text("xen_version: 4.17.5\n")
    v = run_with_retries(boot, tmp_path, attempts=3)
    assert v.verdict == VerdictValue.PASS
    assert [a["verdict"] for a in v.meta["attempts"]] == ["broken", "pass"]
    assert (tmp_path / "attempt-1" / "console.log").read_text() == "attempt 1\n"
    assert (tmp_path / "console.log").read_text() == "attempt 2\n"
    assert sorted(p.name for p in (tmp_path / "attempt-1").iterdir()) == ["console.log"]
    assert (tmp_path / "host-serial.log").read_text() == "Xen\n"
    assert (tmp_path / "host-xl-info.txt").is_file()


@pytest.mark.parametrize("value", [VerdictValue.FAIL, VerdictValue.BLOCKED, VerdictValue.BROKEN])
def test_other_verdicts_are_never_retried(tmp_path, value: VerdictValue) -> None:
    calls: list[Path] = []

    def boot(art: Path) -> Verdict:
        calls.append(art)
        return _verdict(value)

    v = run_with_retries(boot, tmp_path, attempts=3)
    assert v.verdict == value and len(calls) == 1 and "attempts" not in v.meta


def test_attempts_are_bounded(tmp_path) -> None:
    calls: list[Path] = []

    def boot(art: Path) -> Verdict:
        art.mkdir(parents=True, exist_ok=True)
        calls.append(art)
        return _verdict(VerdictValue.BROKEN, retry=True)

    v = run_with_retries(boot, tmp_path, attempts=2)
    assert v.verdict == VerdictValue.BROKEN and len(calls) == 2
    assert len(v.meta["attempts"]) == 2
    with pytest.raises(BlockedError, match="at least 1"):
        run_with_retries(boot, tmp_path, attempts=0)


def test_hosts_declare_faults() -> None:
    assert emulation_faults(object()) == ()
    # Debian's QEMU (or a binary of the user's) has the nested-SVM fault; the patched
    # build fixes it, so there the same console is the guest's failure again.
    assert emulation_faults(NestedHost(accel="tcg", qemu="system")) == TCG_FAULTS
    assert emulation_faults(NestedHost(accel="tcg", qemu="/usr/bin/qemu-system-x86_64")) == (
        TCG_FAULTS
    )
    assert emulation_faults(NestedHost(accel="tcg")) == ()
    assert emulation_faults(NestedHost(accel="kvm")) == ()
    assert all(isinstance(f, EmulationFault) for f in TCG_FAULTS)
