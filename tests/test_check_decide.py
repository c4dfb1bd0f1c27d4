"""The one decider: infrastructure beats the guest and then blames no stage; a failed
hypervisor stage fails the run; the last attempt decides."""

from __future__ import annotations

import pytest

from xenpvh.check.decide import (
    HostFault,
    RunFacts,
    decide_run,
    decide_session,
    retryable,
    with_hypervisor,
)
from xenpvh.check.verdict import StageResult, StageStatus, Verdict, VerdictValue

FAULT = HostFault("tcg-svm-double-delivery", "QEMU's fault", "BUG: ...", "nested")


def _fail_at_login() -> Verdict:
    return Verdict(
        VerdictValue.FAIL,
        "login: Kernel panic",
        "login",
        [
            StageResult("early-init", StageStatus.PASSED, 0.1, "Booting"),
            StageResult("login", StageStatus.FAILED, 9.0, "Kernel panic", ""),
        ],
    )


def test_host_fault_makes_a_guest_fail_broken_retryable_and_unblamed() -> None:
    v = decide_run(RunFacts(_fail_at_login(), host_fault=FAULT))
    assert v.verdict is VerdictValue.BROKEN and retryable(v)
    assert v.failed_stage is None
    assert [s.status for s in v.stages] == [StageStatus.PASSED, StageStatus.NOT_REACHED]
    assert v.meta["guest_failed_stage"] == "login" and v.meta["guest_verdict"] == "fail"
    assert "guest verdict was fail at login" in v.reason


def test_a_host_fault_does_not_touch_a_pass() -> None:
    ok = Verdict(VerdictValue.PASS, "all stages passed", None, [])
    assert decide_run(RunFacts(ok, host_fault=FAULT)).verdict is VerdictValue.PASS


def test_failed_destroy_is_broken_and_not_retryable() -> None:
    v = decide_run(RunFacts(_fail_at_login(), host_fault=FAULT, destroy_problem="xl hung"))
    assert v.verdict is VerdictValue.BROKEN and not retryable(v)
    assert v.meta["destroy_error"] == "xl hung" and v.failed_stage is None
    assert all(s.status is not StageStatus.FAILED for s in v.stages)


def test_hypervisor_stage_first_and_its_failure_fails_the_run() -> None:
    ok = Verdict(VerdictValue.PASS, "ok", None, [StageResult("early-init", StageStatus.PASSED)])
    good = StageResult("hypervisor", StageStatus.PASSED, None, "Xen 4.17.5")
    v = with_hypervisor(ok, good)
    assert [s.name for s in v.stages] == ["hypervisor", "early-init"]
    assert v.verdict is VerdictValue.PASS
    bad = StageResult("hypervisor", StageStatus.FAILED, None, "", "marker line missing")
    v = decide_session([], bad)
    assert v.verdict is VerdictValue.FAIL and v.failed_stage == "hypervisor"
    assert "marker line missing" in v.reason
    with pytest.raises(ValueError):
        decide_session([], good)


def test_the_last_attempt_decides() -> None:
    broken = decide_run(RunFacts(_fail_at_login(), host_fault=FAULT))
    ok = Verdict(VerdictValue.PASS, "ok", None, [])
    assert decide_session([broken, ok]).verdict is VerdictValue.PASS
    assert decide_session([ok, broken]).verdict is VerdictValue.BROKEN


@pytest.mark.parametrize("value", [VerdictValue.BROKEN, VerdictValue.BLOCKED])
def test_an_error_verdict_never_carries_a_failed_stage(value: VerdictValue) -> None:
    """An infrastructure error in mid-watch (QEMU killed, xenstored gone) is decided while a
    stage is in progress: the stage in progress is not-reached, not failed, and JUnit
    counts one error, no failure."""
    err = Verdict(value, "xenstore: no reply within 10s", "xenbus", _fail_at_login().stages)
    v = decide_run(RunFacts(err))
    assert v.verdict is value and v.failed_stage is None
    assert [s.status for s in v.stages] == [StageStatus.PASSED, StageStatus.NOT_REACHED]
    assert v.reason == "xenstore: no reply within 10s"


def test_an_infrastructure_fault_seen_during_the_boot_makes_a_fail_broken() -> None:
    v = decide_run(RunFacts(_fail_at_login(), infrastructure_problem="xenstored not answering"))
    assert v.verdict is VerdictValue.BROKEN and not retryable(v) and v.failed_stage is None
    assert v.meta["infrastructure_error"] == "xenstored not answering"
    assert "guest verdict was fail at login" in v.reason
    assert all(s.status is not StageStatus.FAILED for s in v.stages)
    passed = Verdict(VerdictValue.PASS, "ok", None, [])
    v = decide_run(RunFacts(passed, infrastructure_problem="xenstored not answering"))
    assert v.verdict is VerdictValue.BROKEN
    blocked = Verdict(VerdictValue.BLOCKED, "bad input", None, [])
    v = decide_run(RunFacts(blocked, infrastructure_problem="xenstored not answering"))
    assert v.verdict is VerdictValue.BLOCKED  # our input stays the first thing to fix
