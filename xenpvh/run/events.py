"""Run states and the events a run reports while it goes through them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class RunState(StrEnum):
    """The states of one boot run, in order.  DESTROY always runs once CREATE was entered."""

    PREPARE = "prepare"  # resolve kit, upload kernel/ramdisk, make disks, render + upload cfg
    CREATE = "create"  # xl create -p, verify PVH, attach console, unpause
    WATCH = "watch"  # console -> checker, deadlines, XenStore device check
    DECIDE = "decide"  # turn checker + device facts into one verdict
    COLLECT = "collect"  # xl dmesg, xl info, xenstore dump (domain still exists)
    DESTROY = "destroy"  # xl destroy, remove the run dir on the host
    REPORT = "report"  # verdict.json, junit.xml, report.html (atomically)
    DONE = "done"


# Allowed transitions: a run may leave any state early for DESTROY/COLLECT on error, but it
# never goes backwards.  Checked so a refactoring cannot silently skip the destroy.
TRANSITIONS: dict[RunState | None, frozenset[RunState]] = {
    None: frozenset({RunState.PREPARE}),
    RunState.PREPARE: frozenset({RunState.CREATE, RunState.DESTROY}),
    RunState.CREATE: frozenset({RunState.WATCH, RunState.COLLECT, RunState.DESTROY}),
    RunState.WATCH: frozenset({RunState.DECIDE, RunState.COLLECT, RunState.DESTROY}),
    RunState.DECIDE: frozenset({RunState.COLLECT, RunState.DESTROY}),
    RunState.COLLECT: frozenset({RunState.DESTROY}),
    RunState.DESTROY: frozenset({RunState.REPORT}),
    RunState.REPORT: frozenset({RunState.DONE}),
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


__all__ = ["TRANSITIONS", "DeviceCheckEvent", "RunState", "RunStateEvent"]
