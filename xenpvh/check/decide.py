"""The one decider: every verdict source feeds one decision here.

Pure: facts in, a verdict out.  A run's facts are the checker's verdict (which already holds
the XenStore device check's outcome when the run made one), a host fault the judges
confirmed, the destroy's outcome and the hypervisor stage; a session's are the hypervisor
stage and its attempts.  The rules, in order:

0. Only a `fail` blames a stage: a `broken` or `blocked` verdict (an infrastructure error
   in mid-watch, our input refused) never carries a failed stage, whatever stage was in
   progress when it was decided; that stage shows `not-reached` with the reason in its detail.
1. Infrastructure beats the guest: a destroy that failed, a host fault a judge confirmed, or
   an infrastructure fault seen while the guest booted (xenstored not answering) makes the
   run `broken`; no guest stage is then blamed (`failed_stage` None, the stage
   that had failed shows `not-reached` with the guest's reason kept in its detail), and the
   guest's own verdict stays in the reason and in `meta.guest_verdict`.
2. A hypervisor stage that failed is the run's `fail` (the guest did not run on the Xen asked
   for); one that passed goes first in the stage list.
3. Retries: the last attempt decides; every attempt is listed in `meta.attempts`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from xenpvh.check.verdict import StageResult, StageStatus, Verdict, VerdictValue


@dataclass(frozen=True)
class HostFault:
    """A fault of the host confirmed from the console (see xenpvh.check.faults)."""

    name: str
    why: str
    evidence: str
    host: str


@dataclass(frozen=True)
class RunFacts:
    """What one boot run learned, for `decide_run`."""

    guest: Verdict  # the checker's (and device check's) verdict, or an error verdict
    host_fault: HostFault | None = None
    destroy_problem: str = ""
    # An infrastructure fault seen while the guest ran (e.g. xenstored stopped answering):
    # the guest's stage deadlines say nothing about the guest then.
    infrastructure_problem: str = ""


def _unblame(verdict: Verdict, value: VerdictValue, reason: str) -> Verdict:
    """`verdict` turned into an infrastructure verdict: no stage failed any more."""
    stages = [
        dataclasses.replace(
            s, status=StageStatus.NOT_REACHED, detail=s.detail or f"guest: {verdict.reason}"
        )
        if s.status is StageStatus.FAILED
        else s
        for s in verdict.stages
    ]
    meta = dict(verdict.meta)
    if verdict.verdict in (VerdictValue.FAIL, VerdictValue.PASS):
        meta.setdefault("guest_verdict", str(verdict.verdict))
        if verdict.failed_stage:
            meta.setdefault("guest_failed_stage", verdict.failed_stage)
    return Verdict(verdict=value, reason=reason, failed_stage=None, stages=stages, meta=meta)


def decide_run(facts: RunFacts) -> Verdict:
    """One boot run's verdict from its facts (rules 0 and 1)."""
    verdict = facts.guest
    if verdict.verdict in (VerdictValue.BROKEN, VerdictValue.BLOCKED) and (
        verdict.failed_stage or any(s.status is StageStatus.FAILED for s in verdict.stages)
    ):
        verdict = _unblame(verdict, verdict.verdict, verdict.reason)
    if facts.infrastructure_problem and verdict.verdict in (VerdictValue.FAIL, VerdictValue.PASS):
        was = f"{verdict.verdict}" + (f" at {verdict.failed_stage}" if verdict.failed_stage else "")
        verdict = _unblame(
            verdict,
            VerdictValue.BROKEN,
            f"{facts.infrastructure_problem} (guest verdict was {was}: {verdict.reason})",
        )
        verdict.meta["infrastructure_error"] = facts.infrastructure_problem
    if facts.host_fault is not None and verdict.verdict is VerdictValue.FAIL:
        f = facts.host_fault
        verdict = _unblame(
            verdict,
            VerdictValue.BROKEN,
            f"{f.name} on host {f.host}: {f.why}; console: {f.evidence!r} (guest verdict was "
            f"fail at {verdict.failed_stage}: {verdict.reason})",
        )
        verdict.meta["emulation_fault"] = f.name
        verdict.meta["retryable"] = True
    if facts.destroy_problem:
        verdict = _unblame(
            verdict,
            VerdictValue.BROKEN,
            f"{facts.destroy_problem} (guest verdict was {verdict.verdict}: {verdict.reason})",
        )
        verdict.meta["destroy_error"] = facts.destroy_problem
        verdict.meta.pop("retryable", None)
    return verdict


def retryable(verdict: Verdict) -> bool:
    """Only a run the host's own known fault spoiled is worth another attempt."""
    return verdict.verdict is VerdictValue.BROKEN and verdict.meta.get("retryable") is True


def with_hypervisor(verdict: Verdict, hypervisor: StageResult | None) -> Verdict:
    """Rule 2: the hypervisor stage first; if it failed, the run failed there."""
    if hypervisor is None:
        return verdict
    stages = [hypervisor, *(s for s in verdict.stages if s.name != hypervisor.name)]
    if hypervisor.status is StageStatus.FAILED:
        return dataclasses.replace(
            verdict,
            verdict=VerdictValue.FAIL,
            reason=f"{hypervisor.name}: {hypervisor.detail}",
            failed_stage=hypervisor.name,
            stages=stages,
        )
    return dataclasses.replace(verdict, stages=stages)


def decide_session(attempts: Sequence[Verdict], hypervisor: StageResult | None = None) -> Verdict:
    """The session's verdict (rules 2 and 3).  `attempts` may be empty only when the
    hypervisor stage failed (no guest was booted)."""
    if not attempts:
        if hypervisor is None or hypervisor.status is not StageStatus.FAILED:
            raise ValueError("a session without attempts needs a failed hypervisor stage")
        return with_hypervisor(Verdict(VerdictValue.FAIL, "", stages=[]), hypervisor)
    final = attempts[-1]
    return with_hypervisor(final, hypervisor)


# --------------------------------------------------------------------------- verdicts without a
# finished console: every verdict is built here, the other rooms hand in facts.


def decide_unreached(
    value: VerdictValue, reason: str, stage_names: Sequence[str], meta: dict | None = None
) -> Verdict:
    """Blocked or broken before any guest ran (bad input, a host that could not be reached):
    the profile's stages, none reached, none blamed."""
    if value not in (VerdictValue.BLOCKED, VerdictValue.BROKEN):
        raise ValueError(f"a verdict before a boot is blocked or broken, not {value}")
    return Verdict(
        value, reason, stages=[StageResult(n) for n in stage_names], meta=dict(meta or {})
    )


def decide_error(
    value: VerdictValue,
    reason: str,
    stages: Sequence[StageResult],
    stage_names: Sequence[str],
) -> Verdict:
    """An infrastructure error (or refused input) in mid-run: the stages seen so far are kept
    (none blamed: rule 0), else the profile's, none reached."""
    if value not in (VerdictValue.BLOCKED, VerdictValue.BROKEN):
        raise ValueError(f"an error verdict is blocked or broken, not {value}")
    verdict = Verdict(value, reason, stages=list(stages) or [StageResult(n) for n in stage_names])
    return decide_run(RunFacts(guest=verdict))


def decide_devices_stuck(base: Verdict, problem: str, grace: float, stage: str) -> Verdict:
    """The XenStore device check's failure: `stage` (xenbus) fails naming the stuck devices,
    later stages are not reached, earlier ones keep what the console proved."""
    reason = (
        f"{stage}: device(s) not Connected {grace:g}s after the {stage} stage's console "
        f"lines: {problem}"
    )
    stages: list[StageResult] = []
    seen = False
    for s in base.stages:
        if s.name == stage:
            seen = True
            stages.append(dataclasses.replace(s, status=StageStatus.FAILED, detail=problem))
        elif seen:
            stages.append(StageResult(name=s.name))
        else:
            stages.append(s)
    return Verdict(
        verdict=VerdictValue.FAIL,
        reason=reason,
        failed_stage=stage,
        stages=stages,
        meta=dict(base.meta),
    )


__all__ = [
    "HostFault",
    "RunFacts",
    "decide_devices_stuck",
    "decide_error",
    "decide_run",
    "decide_session",
    "decide_unreached",
    "retryable",
    "with_hypervisor",
]
