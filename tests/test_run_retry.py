"""A guest crash that the host's own emulation causes: `broken` and retried, never a hidden
`fail`; on a host that declares no such fault the same console stays a guest `fail`.

BootRun runs against the same boundary fake as test_run_boot (FakeXenHost answers like xl 4.17
and `xl console` is a real pty child); the console is a real crash from the nested host.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_run_boot import GOOD, FakeXenStore, _run
from test_toolstack_fakes import FakeXenHost

from xenpvh.check.decide import retryable
from xenpvh.check.verdict import Verdict, VerdictValue
from xenpvh.host.base import EmulationFault, emulation_faults
from xenpvh.host.nested import TCG_FAULTS, NestedHost
from xenpvh.profile import load_profile
from xenpvh.run.events import VerdictEvent
from xenpvh.run.options import HostClients
from xenpvh.run.request import BootRequest
from xenpvh.run.session import AttemptEvent, Session

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
# Every guest crash below is decided at its panic line, not by a deadline: a test that
# reached its verdict through the run deadline would prove nothing about the panic.
# The crash consoles' first crash line is `BUG: ENTRY_TRAMPOLINE ...` (Linux's `BUG:`
# signature); the plain panic console below has only `Kernel panic - not syncing`.
PANIC = "forbidden pattern 'kernel-bug'"
PLAIN_PANIC = "forbidden pattern 'kernel-panic'"


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
    assert f"guest verdict was fail at login: {PANIC}" in v.reason
    assert "asm_sysvec_xen_hvm_callback+0x0/0x20 ran with IF=0" in v.reason


def test_lookalike_crash_without_the_evidence_stays_a_guest_fail_on_tcg(kit, tmp_path) -> None:
    v = _boot(TcgHost(), LOOKALIKE, kit, tmp_path)
    assert v.verdict == VerdictValue.FAIL and PANIC in v.reason, v.reason
    assert not retryable(v)
    assert "emulation_fault" not in v.meta


def test_same_crash_on_a_host_without_faults_is_a_guest_fail(kit, tmp_path) -> None:
    v = _boot(FakeXenHost(), CRASH, kit, tmp_path)
    assert v.verdict == VerdictValue.FAIL and PANIC in v.reason, v.reason
    assert not retryable(v)
    assert "emulation_fault" not in v.meta


def test_a_panic_without_the_signature_stays_a_fail_on_tcg(kit, tmp_path) -> None:
    panic = GOOD.replace(b"xenpvh-guest login: ", b"Kernel panic - not syncing: x\n")
    v = _boot(TcgHost(), panic, kit, tmp_path)
    assert v.verdict == VerdictValue.FAIL and PLAIN_PANIC in v.reason, v.reason


def _session(host: FakeXenHost, kit, tmp_path: Path, attempts: int = 3, on_event=None):
    request = BootRequest(
        profile="linux-pvh",
        kernel=str(kit[0]),
        ramdisk=str(kit[1]),
        attempts=attempts,
        artifacts=tmp_path / "art",
    )
    xs = FakeXenStore({"vbd": 4, "vif": 4})
    clients = HostClients(xenstore_factory=lambda h: xs)
    return Session(request, host=host, on_event=on_event, clients=clients)


def test_retries_only_what_the_host_spoilt_and_keeps_every_attempt(kit, tmp_path) -> None:
    """Attempt 1 dies of the host's fault, attempt 2 passes: the session passes, lists both
    attempts in verdict.json, keeps attempt 1 in attempt-1/ with its own reports, and the
    host's files stay where they were."""
    host = TcgHost()
    host.console = CRASH
    art = tmp_path / "art"
    art.mkdir()
    (art / "host-serial.log").write_text("Xen\n")

    at_verdict: list[dict] = []

    def on_event(e: object) -> None:
        if isinstance(e, AttemptEvent):
            host.console = GOOD  # the next attempt's guest boots fine
        if isinstance(e, VerdictEvent) and e.verdict == "pass":
            # Written before the destroy, it already lists every attempt.
            at_verdict.append(json.loads((art / "verdict.json").read_text()))

    try:
        result = _session(host, kit, tmp_path, on_event=on_event).run()
    finally:
        host.close()
    v = result.verdict
    assert v.verdict == VerdictValue.PASS, v.reason
    assert [a["verdict"] for a in v.meta["attempts"]] == ["broken", "pass"]
    assert v.meta["attempts"][0]["emulation_fault"] == "tcg-svm-double-delivery"
    saved = json.loads((art / "verdict.json").read_text())
    assert saved["verdict"] == "pass"
    assert [a["verdict"] for a in at_verdict[0]["attempts"]] == ["broken", "pass"]
    assert [a["verdict"] for a in saved["attempts"]] == ["broken", "pass"]
    assert b"ENTRY_TRAMPOLINE" in (art / "attempt-1" / "console.log").read_bytes()
    assert json.loads((art / "attempt-1" / "verdict.json").read_text())["verdict"] == "broken"
    assert b"login:" in (art / "console.log").read_bytes()
    assert (art / "host-serial.log").read_text() == "Xen\n"
    assert list(host.domains) == ["Domain-0"]
    # verdict.json, junit.xml and report.html tell the same story.
    import xml.etree.ElementTree as ET

    suite = ET.parse(art / "junit.xml").getroot()
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props.get("verdict") == "pass"
    assert "broken" in " ".join(v or "" for k, v in props.items() if "attempt" in (k or ""))
    classnames = {c.get("classname") for c in suite.iter("testcase")}
    attempt_suite = ET.parse(art / "attempt-1" / "junit.xml").getroot()
    assert classnames == {c.get("classname") for c in attempt_suite.iter("testcase")}
    page = (art / "report.html").read_text()
    assert "attempt-1" in page and "tcg-svm-double-delivery" in page
    assert saved["run_id"] in page


@pytest.mark.parametrize(
    "console", [GOOD.replace(b"login: ", b"Kernel panic - not syncing: x\n"), LOOKALIKE]
)
def test_a_guest_fail_is_never_retried(kit, tmp_path, console: bytes) -> None:
    signature = PANIC if console is LOOKALIKE else PLAIN_PANIC
    host = TcgHost()
    host.console = console
    events: list[object] = []
    try:
        v = _session(host, kit, tmp_path, on_event=events.append).run().verdict
    finally:
        host.close()
    assert v.verdict == VerdictValue.FAIL and signature in v.reason, v.reason
    assert "attempts" not in v.meta
    assert not [e for e in events if isinstance(e, AttemptEvent)]


def test_attempts_are_bounded(kit, tmp_path) -> None:
    host = TcgHost()
    host.console = CRASH
    try:
        v = _session(host, kit, tmp_path, attempts=2).run().verdict
    finally:
        host.close()
    assert v.verdict == VerdictValue.BROKEN and len(v.meta["attempts"]) == 2
    assert v.failed_stage is None  # broken: no guest stage blamed
    assert (tmp_path / "art" / "attempt-1").is_dir()
    assert not (tmp_path / "art" / "attempt-2").exists()  # the last attempt stays on top


def test_zero_attempts_is_blocked_before_the_host_is_touched(kit, tmp_path) -> None:
    host = TcgHost()
    v = _session(host, kit, tmp_path, attempts=0).run().verdict
    assert v.verdict == VerdictValue.BLOCKED and "attempts" in v.reason
    assert host.calls == []


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
