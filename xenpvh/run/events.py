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
# once; the destroy takes seconds on a slow dom0).  DESTROY is reachable from every state
# after PREPARE (whatever failed, the destroy runs) and is the only way to DONE, so a
# refactoring cannot silently skip it.
TRANSITIONS: dict[RunState | None, frozenset[RunState]] = {
    None: frozenset({RunState.PREPARE}),
    RunState.PREPARE: frozenset({RunState.CREATE, RunState.REPORT, RunState.DESTROY}),
    RunState.CREATE: frozenset(
        {RunState.WATCH, RunState.COLLECT, RunState.REPORT, RunState.DESTROY}
    ),
    RunState.WATCH: frozenset(
        {RunState.DECIDE, RunState.COLLECT, RunState.REPORT, RunState.DESTROY}
    ),
    RunState.DECIDE: frozenset({RunState.COLLECT, RunState.REPORT, RunState.DESTROY}),
    RunState.COLLECT: frozenset({RunState.REPORT, RunState.DESTROY}),
    RunState.REPORT: frozenset({RunState.DESTROY}),
    RunState.DESTROY: frozenset({RunState.DONE}),
    RunState.DONE: frozenset(),
}


class InvalidTransition(AssertionError):
    """A move the table does not allow: a bug of ours, never a verdict."""


def check_transition(current: RunState | None, target: RunState) -> None:
    """InvalidTransition unless TRANSITIONS allows `current` -> `target`."""
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(f"illegal transition {current} -> {target}")


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


# -- a session's events (xenpvh.run.session) ----------------------------------------------


@dataclass(frozen=True)
class BuildEvent:
    """A build the session made (or served from the cache) before booting."""

    what: str  # "xen" | "kernel"
    description: str  # the cache's one-line account (hit or built, key, time)
    path: str


@dataclass(frozen=True)
class AttemptEvent:
    """Attempt `number` ended `retryable`: another follows (its artifacts moved aside)."""

    number: int
    of: int
    reason: str
    kept_in: str


@dataclass(frozen=True)
class HostWaitEvent:
    """The host is leased to another owner; the session waits (`wait_host`)."""

    host: str
    holder: str  # HostLease.describe(): owner, reason, expiry


__all__ = [
    "TRANSITIONS",
    "AttemptEvent",
    "BuildEvent",
    "DeviceCheckEvent",
    "HostWaitEvent",
    "InvalidTransition",
    "RunState",
    "RunStateEvent",
    "VerdictEvent",
    "check_transition",
]
