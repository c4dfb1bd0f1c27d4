"""The one input of the report writers: everything a run's results say, typed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from xenpvh.check.verdict import StageResult, Verdict


@dataclass(frozen=True)
class Attempt:
    """One boot of a retried run (the final one included)."""

    number: int  # 1-based
    verdict: str  # "pass" | "fail" | "broken" | "blocked"
    reason: str
    emulation_fault: str | None = None
    # That attempt's directory relative to the run's artifacts dir ("attempt-1"); None for
    # the final attempt, whose files are the run directory itself.
    artifacts: str | None = None


@dataclass(frozen=True)
class RunReport:
    """A decided run, as the reports show it."""

    verdict: Verdict  # the final, decided verdict (its meta holds extra facts)
    profile: str  # e.g. "linux-pvh"
    point: str  # e.g. "xl-vcpus2-mem256" (stable across attempts)
    run_id: str
    host: str | None  # host name; None for an offline `xenpvh check`
    started_at: float  # epoch seconds
    finished_at: float
    artifacts: Path | None  # run directory (None: render only, e.g. `check` to stdout)
    attempts: tuple[Attempt, ...] = ()
    timings: Mapping[str, float | None] = field(default_factory=dict)
    console_log: str | None = "console.log"  # relative to artifacts
    # The `hypervisor` stage (xl dmesg / xl info on the host) that precedes the guest stages.
    hypervisor: StageResult | None = None

    @property
    def stages(self) -> list[StageResult]:
        """Every stage in boot order: the hypervisor stage first when there is one.

        A verdict whose stages already start with that very stage (the old callers inserted
        it themselves) does not get it twice.
        """
        guest = list(self.verdict.stages)
        if self.hypervisor is None:
            return guest
        if guest and guest[0] == self.hypervisor:
            guest = guest[1:]
        return [self.hypervisor, *guest]

    @property
    def console_path(self) -> Path | None:
        """Where the console log is on disk (None: no run directory or no console)."""
        if self.artifacts is None or self.console_log is None:
            return None
        return self.artifacts / self.console_log


__all__ = ["Attempt", "RunReport"]
