"""The XenStore device check of a run: every vbd and vif the domain was given must reach
Connected (frontend and backend state 4) and its console tty appear, whatever the console
said, or the xenbus stage fails naming the stuck devices.

The check polls from the moment the xenbus stage is in progress or the console shows one of
its lines (so XenStore can prove the devices a kernel does not name on its console: Linux's
netfront); its grace period is armed once the console's own part of the stage is done (the
stage passed, or only XenStore-proven devices are missing)."""

from __future__ import annotations

import dataclasses
import math
import time

from xenpvh.check.verdict import StageResult, StageStatus, Verdict, VerdictValue
from xenpvh.toolstack.xenstore import DeviceState

XENBUS_STAGE = "xenbus"


@dataclasses.dataclass
class DeviceCheck:
    """The XenStore check of one run; `deadline` is inf until the grace period is armed."""

    started: float
    deadline: float = math.inf
    next_poll: float = 0.0
    result: str = "pending"  # "pending" | "connected" | "stuck"
    devices: list[DeviceState] = dataclasses.field(default_factory=list)
    problem: str = ""

    def judge(
        self, devices: list[DeviceState], tty: str | None, *, domid: int, disks: int, vifs: int
    ) -> list[str]:
        """Judge one XenStore reading: `connected` when every expected device is Connected
        and the console tty is there, `stuck` when not by the deadline.  Returns the
        problems ([] when connected)."""
        self.devices = devices
        problems = [d.describe() for d in devices if not d.connected]
        for kind, n in (("vbd", disks), ("vif", vifs)):
            have = sum(1 for d in devices if d.kind == kind)
            if have != n:
                problems.append(f"{kind}: {have} device(s) in xenstore, expected {n}")
        if not tty:
            problems.append(f"/local/domain/{domid}/console/tty missing")
        if not problems:
            self.result = "connected"
            return []
        self.problem = "; ".join(problems)
        if time.monotonic() >= self.deadline:
            self.result = "stuck"
        return problems

    def arm(self, now: float, grace: float) -> None:
        """Start the grace period (once): the console's part of the xenbus stage is done."""
        if self.deadline == math.inf:
            self.deadline = now + grace

    @staticmethod
    def connected_kinds(
        devices: list[DeviceState], *, disks: int, vifs: int
    ) -> dict[str, tuple[str, ...]]:
        """Kind -> device ids, for each kind whose expected devices are all Connected."""
        out: dict[str, tuple[str, ...]] = {}
        for kind, n in (("vbd", disks), ("vif", vifs)):
            mine = [d for d in devices if d.kind == kind]
            if n and len(mine) == n and all(d.connected for d in mine):
                out[kind] = tuple(f"{kind}/{d.devid}" for d in mine)
        return out


def device_failure(base: Verdict, problem: str, grace: float) -> Verdict:
    """Fail the xenbus stage naming the stuck devices; later stages are not reached."""
    reason = (
        f"xenbus: device(s) not Connected {grace:g}s after the xenbus stage's console "
        f"lines: {problem}"
    )
    stages: list[StageResult] = []
    seen_xenbus = False
    for s in base.stages:
        if s.name == XENBUS_STAGE:
            seen_xenbus = True
            stages.append(dataclasses.replace(s, status=StageStatus.FAILED, detail=problem))
        elif seen_xenbus:
            stages.append(StageResult(name=s.name))
        else:
            stages.append(s)
    return Verdict(
        verdict=VerdictValue.FAIL,
        reason=reason,
        failed_stage=XENBUS_STAGE,
        stages=stages,
        meta=dict(base.meta),
    )
