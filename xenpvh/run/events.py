"""Run states and the events a run reports while it goes through them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class RunState(StrEnum):
    """The states of one boot run, in order.  DESTROY always runs once PREPARE was entered."""

    PREPARE = "prepare"  # resolve kit, upload kernel/ramdisk, make disks, render + upload cfg
    CREATE = "create"  # xl create -p, verify PVH, attach console, unpause
    WATCH = "watch"  # console -> checker, deadlines, XenStore device check
    DECIDE = "decide"  # turn checker + device facts into one verdict
    COLLECT = "collect"  # xl dmesg, xenstore dump (domain still exists; xl info during boot)
    REPORT = "report"  # verdict.json, junit.xml, report.html, timing.json (atomically)
    DESTROY = "destroy"  # xl destroy, remove the run dir; a failure amends the reports
    DONE = "done"


# Allowed transitions: a run may leave any state early for COLLECT/REPORT on error, but it
# never goes backwards.  The verdict is reported before the destroy (the user sees it at
# once; the destroy takes seconds on a slow dom0), and DESTROY is the only way to DONE, so
# a refactoring cannot silently skip it.
TRANSITIONS: dict[RunState | None, frozenset[RunState]] = {
    None: frozenset({RunState.PREPARE}),
    RunState.PREPARE: frozenset({RunState.CREATE, RunState.REPORT}),
    RunState.CREATE: frozenset({RunState.WATCH, RunState.COLLECT, RunState.REPORT}),
    RunState.WATCH: frozenset({RunState.DECIDE, RunState.COLLECT, RunState.REPORT}),
    RunState.DECIDE: frozenset({RunState.COLLECT, RunState.REPORT}),
    RunState.COLLECT: frozenset({RunState.REPORT}),
    RunState.REPORT: frozenset({RunState.DESTROY}),
    RunState.DESTROY: frozenset({RunState.DONE}),
    RunState.DONE: frozenset(),
}


@dataclass(frozen=True)
class RunStateEvent:
    """The run entered `state` at `t` seconds after it started."""

    state: RunState
    t: float
    detail: str = ""


@dataclass(frozen=True)
class DeviceCheckEvent:
    """A XenStore device check result (kind "waiting" | "connected" | "stuck")."""

    kind: str
    t: float
    devices: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class VerdictEvent:
    """The run's verdict is known and its reports are written; the destroy comes next (a
    failed destroy turns it `broken` and the reports are rewritten)."""

    verdict: str
    reason: str
    failed_stage: str | None
    t: float


__all__ = ["TRANSITIONS", "DeviceCheckEvent", "RunState", "RunStateEvent", "VerdictEvent"]
