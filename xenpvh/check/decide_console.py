"""The decider for console facts: what the stage checker saw, turned into a verdict.

Pure: the checker reports typed facts (each stage's outcome, the failure or blocked line that
decided the console, the notices) and `decide_console` builds the verdict from them.  The
rules, in order:

1. A blocked line (the guest says it cannot run its test here) is `blocked`; no stage failed.
2. A stage failure is `fail` naming that stage; every stage after it is not reached, an
   earlier one keeps what the console proved (a passed stage the guest then failed in shows
   `failed`).
3. Every stage complete is `pass`.
4. Anything else is an undecided console: a provisional `fail` naming the stage in progress.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xenpvh.check.verdict import StageResult, StageStatus, Verdict, VerdictValue


@dataclass(frozen=True)
class StageFact:
    """One stage as the console left it."""

    name: str
    complete: bool
    t: float | None = None
    evidence: str = ""
    line: int | None = None  # console line number of the evidence (1-based)
    devices: str = ""  # the XenStore / unverified device detail of a stage that passed


@dataclass(frozen=True)
class StageFailure:
    """What failed a stage: its index, the reason, time, console line and its number."""

    stage: int
    reason: str
    t: float | None
    line: str
    detail: str
    line_no: int | None


@dataclass(frozen=True)
class ConsoleFacts:
    """Everything the checker learned from one console."""

    profile: str
    vcpus: int
    disks: int
    vifs: int
    stages: Sequence[StageFact]
    in_progress: str  # the stage in progress (the last one once every stage completed)
    failure: StageFailure | None = None
    blocked: str = ""  # the reason of a blocked line ("" if none)
    notices: Sequence[dict[str, object]] = ()
    notices_total: int = 0
    strict_devices: bool = False

    @property
    def decided(self) -> bool:
        return bool(self.blocked) or self.failure is not None or self.all_passed

    @property
    def all_passed(self) -> bool:
        return all(s.complete for s in self.stages)


def _stage_results(facts: ConsoleFacts) -> list[StageResult]:
    failed = facts.failure
    results: list[StageResult] = []
    for i, st in enumerate(facts.stages):
        if failed is not None and i > failed.stage:
            results.append(StageResult(st.name))  # after the failed stage: not reached
        elif failed is not None and failed.stage == i:
            results.append(
                StageResult(
                    st.name,
                    StageStatus.FAILED,
                    failed.t,
                    failed.line,
                    failed.detail,
                    line=failed.line_no,
                )
            )
        elif st.complete:
            results.append(
                StageResult(st.name, StageStatus.PASSED, st.t, st.evidence, st.devices, st.line)
            )
        else:
            results.append(StageResult(st.name))
    return results


def _meta(facts: ConsoleFacts) -> dict[str, object]:
    meta: dict[str, object] = {
        "profile": facts.profile,
        "vcpus": facts.vcpus,
        "disks": facts.disks,
        "vifs": facts.vifs,
    }
    if facts.notices_total:
        meta["notices"] = list(facts.notices)
        if facts.notices_total > len(facts.notices):
            meta["notices_total"] = facts.notices_total
    if facts.strict_devices:
        meta["strict_devices"] = True
    return meta


def decide_console(facts: ConsoleFacts) -> Verdict:
    """The console's verdict from the checker's facts (rules 1-4 above)."""
    stages = _stage_results(facts)
    meta = _meta(facts)
    if facts.blocked:
        return Verdict(VerdictValue.BLOCKED, facts.blocked, None, stages, meta)
    if facts.failure is not None:
        name = facts.stages[facts.failure.stage].name
        return Verdict(VerdictValue.FAIL, facts.failure.reason, name, stages, meta)
    if facts.all_passed:
        return Verdict(VerdictValue.PASS, "all stages passed", None, stages, meta)
    return Verdict(
        VerdictValue.FAIL, f"undecided: {facts.in_progress} in progress", None, stages, meta
    )


__all__ = ["ConsoleFacts", "StageFact", "StageFailure", "decide_console"]
