"""The XenStore device check of a run: every vbd and vif the domain was given must reach
Connected (frontend and backend state 4) and its console tty appear, whatever the console
said, or the xenbus stage fails naming the stuck devices.

The check polls from the moment the xenbus stage is in progress or the console shows one of
its lines (so XenStore can prove the devices a kernel does not name on its console: Linux's
netfront); its grace period is armed once the console's own part of the stage is done (the
stage passed, or only XenStore-proven devices are missing).  A check that ends `stuck` is
turned into the xenbus stage's `fail` by the decider (xenpvh.check.decide's
`decide_devices_stuck`)."""

from __future__ import annotations

import dataclasses
import math
import time

from xenpvh.profile.model import DEVICE_CHECKS
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
        self,
        devices: list[DeviceState],
        tty: str | None,
        *,
        domid: int,
        disks: int,
        vifs: int,
        checks: tuple[str, ...] = DEVICE_CHECKS,
        exited: bool = False,
    ) -> list[str]:
        """Judge one XenStore reading: `connected` when every expected device is Connected
        and the console tty is there, `stuck` when not by the deadline.  Returns the
        problems ([] when connected).  `checks` are the profile's (`Profile.device_checks`);
        a guest that has `exited` (its console ended) is not asked for a console tty."""
        self.devices = devices
        problems = [d.describe() for d in devices if not d.connected and d.kind in checks]
        for kind, n in (("vbd", disks), ("vif", vifs)):
            have = sum(1 for d in devices if d.kind == kind)
            if have != n and kind in checks:
                problems.append(f"{kind}: {have} device(s) in xenstore, expected {n}")
        if not tty and "console-tty" in checks and not exited:
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


def device_facts(check: DeviceCheck | None, passed: bool) -> dict[str, object]:
    """What the device check found, for the verdict's meta: the devices XenStore listed and
    the check's result; a pass without a check says so rather than pretend the devices were
    checked (the profile has no xenbus stage)."""
    if check is not None:
        return {
            "xenstore_devices": [dataclasses.asdict(d) for d in check.devices],
            "xenstore_check": check.result,
        }
    if passed:
        return {"xenstore_check": "not run (no xenbus stage passed)"}
    return {}


__all__ = ["XENBUS_STAGE", "DeviceCheck", "device_facts"]
