"""The WATCH state of a boot run: console bytes into the stage checker, the run's deadline,
and the XenStore device check (xenpvh.run.devices) that proves what the console cannot.

The watch returns the guest's verdict: the checker's, or the device check's `fail` of the
xenbus stage (built by the decider from the stuck devices).  The liveness probe raises
BrokenError out of it once xenstored stopped answering."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from xenpvh.check.checker import EventKind, StageChecker, StageEvent
from xenpvh.check.decide import decide_devices_stuck
from xenpvh.check.verdict import Verdict, VerdictValue
from xenpvh.profile.domain import DomainSpec
from xenpvh.profile.model import DEVICE_CHECKS, Profile
from xenpvh.run.collect import EarlyDump
from xenpvh.run.devices import XENBUS_STAGE, DeviceCheck
from xenpvh.run.events import DeviceCheckEvent
from xenpvh.run.liveness import XenStoreProbe
from xenpvh.run.options import EventCallback, RunLimits
from xenpvh.run.timings import Timings
from xenpvh.run.xenstore_link import XenStoreLink
from xenpvh.toolstack.base import Domain
from xenpvh.toolstack.console import ConsoleCapture
from xenpvh.toolstack.xenstore import XenStoreTimeout

log = logging.getLogger(__name__)

# After a fail, console.log keeps the rest of the crash dump: until this quiet, this long at most.
CRASH_QUIET = 1.0
CRASH_TAIL = 5.0
# Seconds between XenStore device readings while the guest still probes its devices.
XENSTORE_POLL_WAITING = 2.0


@dataclass(frozen=True)
class WatchedGuest:
    """The guest under watch: its profile, its domain's spec as created, the domain and its
    console."""

    profile: Profile
    spec: DomainSpec
    domain: Domain
    capture: ConsoleCapture


class Watch:
    def __init__(
        self,
        guest: WatchedGuest,
        *,
        times: Timings,
        probe: XenStoreProbe,
        link: XenStoreLink,
        limits: RunLimits,
        emit: EventCallback,
        checker_factory: Callable[..., StageChecker] | None = None,
    ) -> None:
        self.guest = guest
        self.times = times
        self.probe = probe
        self.link = link
        self.limits = limits
        self.emit = emit
        spec = guest.spec
        # xenstore_proof: this run's XenStore check proves the devices a kernel does not
        # name on its console (prove_devices in _poll_devices).
        self.checker = (checker_factory or StageChecker)(
            guest.profile,
            vcpus=spec.vcpus,
            disks=len(spec.disks),
            vifs=len(spec.vifs),
            xenstore_proof=True,
        )
        self.device_check: DeviceCheck | None = None
        self.early_dump = EarlyDump()

    def _t(self) -> float:
        return round(time.monotonic() - self.times.start, 3)

    def run(self) -> Verdict:
        checker, capture, grace = self.checker, self.guest.capture, self.limits.xenbus_grace
        deadline = self.times.start + self.limits.timeout
        while True:
            self.probe.check()  # BrokenError once xenstored stopped answering
            # The read doubles as the loop's pacing (it waits up to 0.1 s for bytes).
            data = capture.read(0.1)
            arrival = time.monotonic()
            if data and self.times.first_byte is None:
                self.times.first_byte = arrival
            if not checker.done:
                events = checker.feed(data) if data else []
                events.extend(checker.poll())
                for ev in events:
                    self.emit(ev)
                    if self.device_check is None and _xenbus_begun(ev):
                        # Poll XenStore from the moment xenbus is in progress or shows a
                        # line: it alone proves devices the kernel does not print.
                        self.device_check = DeviceCheck(arrival)
                    if _is_pass(ev, XENBUS_STAGE):
                        self.device_check = self.device_check or DeviceCheck(arrival)
                        self.device_check.arm(arrival, grace)
                if self.device_check is not None and checker.awaiting_xenstore(XENBUS_STAGE):
                    self.device_check.arm(arrival, grace)
                if checker.done:
                    self.times.deciding_arrival = arrival if data else None
                    self.times.decided = time.monotonic()
            check = self.device_check
            if check is not None and check.result == "pending":
                self._poll_devices(check)
                if check.result == "stuck":
                    self.times.decided = time.monotonic()
                    base = self.checker_verdict("xenbus device check failed")
                    return decide_devices_stuck(base, check.problem, grace, XENBUS_STAGE)
                if check.result == "connected" and checker.done:
                    self.times.decided = time.monotonic()
            if checker.done:
                if checker.verdict.verdict != VerdictValue.PASS:
                    self._drain_console(capture)
                    return checker.verdict
                if check is None or check.result != "pending":
                    return checker.verdict
                check.arm(arrival, grace)  # never unbounded
                continue  # a pass waits for the device check (bounded by its grace)
            if capture.ended:
                self.times.decided = time.monotonic()
                why = f"; {capture.fallback_reason}" if capture.fallback_reason else ""
                return checker.finish(f"console ended (domain gone{why})")
            if arrival > deadline:
                self.times.decided = time.monotonic()
                return checker.finish(f"run deadline of {self.limits.timeout:g}s exceeded")

    def checker_verdict(self, reason: str) -> Verdict:
        """The checker's verdict, finished with `reason` when it has not decided yet."""
        return self.checker.verdict if self.checker.done else self.checker.finish(reason)

    def _drain_console(self, capture: ConsoleCapture) -> None:
        """A guest that failed is usually still printing its crash (an Oops decides at its
        first line; the backtrace follows): keep it for console.log -- the user's triage and
        the host-fault judges read the whole dump -- until the console is quiet for
        CRASH_QUIET s or ends, CRASH_TAIL s at most.  The verdict is already decided."""
        end = time.monotonic() + CRASH_TAIL
        quiet_since = time.monotonic()
        while not capture.ended and time.monotonic() < end:
            if capture.read(0.1):
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= CRASH_QUIET:
                return

    def _poll_devices(self, check: DeviceCheck) -> None:
        now = time.monotonic()
        if now < check.next_poll:
            return
        # Before the grace is armed the guest is still probing its devices and dom0 is busy
        # with their hotplug: read XenStore gently then, briskly once only it is awaited.
        check.next_poll = now + (XENSTORE_POLL_WAITING if check.deadline == math.inf else 0.5)
        guest = self.guest
        domid = guest.domain.domid
        xs = self.link.get()
        try:
            devices = xs.device_states(domid)
            tty = xs.console_tty(domid)
        except XenStoreTimeout as e:
            # Slow or dead: the liveness probe asks again at once and decides which.
            self.probe.suspect(e, now)
            return
        disks, vifs = len(guest.spec.disks), len(guest.spec.vifs)
        problems = check.judge(
            devices,
            tty,
            domid=domid,
            disks=disks,
            vifs=vifs,
            checks=getattr(guest.profile, "device_checks", DEVICE_CHECKS),
            exited=guest.capture.ended,
        )
        if check.result == "connected":
            # The watch loop does not use XenStore any more from here on; the collect
            # waits for this dump.
            self.early_dump.start(xs, domid, self._t())
            self.emit(
                DeviceCheckEvent("connected", self._t(), tuple(d.describe() for d in devices))
            )
        elif check.result == "stuck":
            self.emit(DeviceCheckEvent("stuck", self._t(), tuple(problems)))
        checker = self.checker
        if not checker.done:
            # XenStore's proof completes what the console cannot show (Linux's vifs).
            checker.xenstore_problem = "; ".join(problems)
            for kind, ids in check.connected_kinds(devices, disks=disks, vifs=vifs).items():
                for ev in checker.prove_devices(kind, ids):
                    self.emit(ev)
                    if _is_pass(ev, XENBUS_STAGE):
                        check.arm(now, self.limits.xenbus_grace)


def _is_pass(ev: object, stage: str) -> bool:
    return isinstance(ev, StageEvent) and ev.stage == stage and ev.kind == EventKind.PASSED


def _xenbus_begun(ev: object) -> bool:
    """The xenbus stage is in progress, or the console showed one of its lines."""
    return (
        isinstance(ev, StageEvent)
        and ev.stage == XENBUS_STAGE
        and ev.kind in (EventKind.STARTED, EventKind.MATCHED, EventKind.PASSED)
    )


__all__ = ["CRASH_QUIET", "CRASH_TAIL", "XENSTORE_POLL_WAITING", "Watch", "WatchedGuest"]
