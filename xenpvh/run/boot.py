"""One boot run: prepare -> create -> watch -> decide -> collect -> report -> destroy.

`BootRun` is a small state machine (`RunState`, `TRANSITIONS` in xenpvh.run.events; every
move goes through `transition()`, which checks it and reports it to `on_event`).  The work of
each state is done by a named part:

- the guest's inputs (kit, Debian guest, FreeBSD kernel and kit): xenpvh.run.guest_inputs;
- the host's preparation (render, lease, sweep, memory, uploads, disks): xenpvh.run.prepare;
- the console and XenStore device evidence: xenpvh.run.watch, xenpvh.run.devices;
- host-fault judging: xenpvh.run.host_faults; evidence collection: xenpvh.run.collect;
- keep or destroy: xenpvh.run.keep, xenpvh.run.teardown;
- the verdict itself: xenpvh.check.decide, from the facts the parts report.

Whatever happens after the first `xl create` was attempted -- a guest failure, an
infrastructure error, a deadline, Ctrl-C -- the domain is destroyed and the run directory on
the host removed before the run returns.  Errors map onto verdicts: BlockedError (our input:
missing kernel, unrenderable config, a domain that is not really PVH) -> `blocked`;
BrokenError (host, xl, xenstored) -> `broken`; guest misbehaviour is never an exception but a
`fail` from the checker or the device check.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from xenpvh.build.guestkit import GuestKit
from xenpvh.check.decide import RunFacts, decide_error, decide_run
from xenpvh.check.verdict import StageResult, Verdict, VerdictValue
from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.base import Host
from xenpvh.profile.domain import DomainSpec
from xenpvh.profile.model import Profile
from xenpvh.run import keep as keep_guest
from xenpvh.run.collect import collect
from xenpvh.run.devices import device_facts
from xenpvh.run.events import RunState, RunStateEvent, VerdictEvent, check_transition
from xenpvh.run.guest_inputs import GuestInputs
from xenpvh.run.host_faults import host_fault
from xenpvh.run.keep import KeptEvent, KeptGuest
from xenpvh.run.liveness import XenStoreProbe, xenstored_witness
from xenpvh.run.options import RunHooks, RunLimits, RunOptions, RunPlace, new_run_id
from xenpvh.run.prepare import HostPreparation
from xenpvh.run.teardown import destroy_run
from xenpvh.run.timings import Timings
from xenpvh.run.watch import Watch, WatchedGuest
from xenpvh.run.xenstore_link import XenStoreLink
from xenpvh.toolstack.base import Domain, Toolstack
from xenpvh.toolstack.console import ConsoleCapture
from xenpvh.toolstack.registry import get_toolstack
from xenpvh.toolstack.xenstore import XenStore

log = logging.getLogger(__name__)


class BootRun:
    """Boot one profile point on one host and decide its verdict."""

    def __init__(
        self,
        host: Host,
        profile: Profile,
        point: DomainSpec,
        *,
        artifacts: Path,
        guest_kit: GuestKit | Callable[[], GuestKit] | None = None,
        options: RunOptions | None = None,
        limits: RunLimits | None = None,
        hooks: RunHooks | None = None,
    ) -> None:
        options = options or RunOptions()
        self.limits = limits or RunLimits()
        hooks = hooks or RunHooks()
        self.host = host
        self.profile = profile
        self.point = point
        ts = options.toolstack
        self.toolstack: Toolstack = get_toolstack(ts, host) if isinstance(ts, str) else ts
        self.place = RunPlace.make(options, artifacts)
        self.keep = options.keep  # keep the guest of a `fail` running (xenpvh dev)
        self.on_event = hooks.on_event
        # Called with the decided verdict before the destroy (the Session writes the
        # reports then); a failure there is logged, it never skips the destroy.
        self.on_decided = hooks.on_decided
        self._checker_factory = hooks.checker_factory
        timeout = self.limits.xenstore_timeout
        factory = hooks.xenstore_factory or (lambda h: XenStore(h, timeout=timeout))

        self.state: RunState | None = None
        self.times = Timings(start=time.monotonic())
        self.inputs = GuestInputs(guest_kit)
        self.prep = HostPreparation(host, self.toolstack, self.place, self.limits.timeout)
        self.xenstore = XenStoreLink(host, factory)
        # xenstored answering, whichever stage is in progress (xenpvh.run.liveness).
        self._probe = XenStoreProbe(
            self.xenstore.get,
            host=getattr(host, "name", "host"),
            interval=self.limits.xenstore_probe_interval,
            timeout=timeout,
            witness=xenstored_witness(host),
        )
        self.domain: Domain | None = None
        self.capture: ConsoleCapture | None = None
        self.watch: Watch | None = None
        self.collect_errors: list[str] = []
        self.kept: KeptGuest | None = None
        self._create_attempted = False
        self._decided_pass = False
        self._destroy_started = False

    @property
    def run_id(self) -> str:
        return self.place.run_id

    @property
    def domain_name(self) -> str:
        return self.place.domain_name

    @property
    def run_dir(self) -> str:
        return self.place.run_dir

    @property
    def artifacts(self) -> Path:
        return self.place.artifacts

    # -- the state machine ------------------------------------------------------------------

    def transition(self, state: RunState, detail: str = "", *, quiet: bool = False) -> None:
        """The one way the run changes state: checked against TRANSITIONS, then reported
        (`quiet`: a failing event callback is ignored, as on the way to the destroy)."""
        check_transition(self.state, state)
        self.state = state
        log.debug("run %s: %s %s", self.run_id, state, detail)
        event = RunStateEvent(state, self._t(), detail)
        if not quiet:
            self._emit(event)
            return
        with contextlib.suppress(Exception):
            self._emit(event)

    def _emit(self, event: object) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def _t(self) -> float:
        return round(time.monotonic() - self.times.start, 3)

    def run(self) -> Verdict:
        verdict: Verdict | None = None
        pending: BaseException | None = None
        try:
            self.transition(RunState.PREPARE, self.domain_name)
            self.artifacts.mkdir(parents=True, exist_ok=True)
            self.prep.prepare(self.point, self.inputs.resolve_point(self.point))
            self.transition(RunState.CREATE, self.domain_name)
            self._create()
            self.transition(RunState.WATCH)
            outcome = self._watch()
            self.transition(RunState.DECIDE)
            verdict = self._decide(outcome)
            self._decided_pass = verdict.verdict == VerdictValue.PASS
        except BlockedError as e:
            verdict = self._error_verdict(VerdictValue.BLOCKED, str(e))
        except BrokenError as e:
            verdict = self._error_verdict(VerdictValue.BROKEN, str(e))
        except KeyboardInterrupt as e:
            verdict = self._error_verdict(VerdictValue.BROKEN, "interrupted (KeyboardInterrupt)")
            pending = e
        except Exception as e:  # a bug: still clean up, record it, then re-raise
            verdict = self._error_verdict(
                VerdictValue.BROKEN, f"internal error: {type(e).__name__}: {e}"
            )
            verdict.meta["traceback"] = traceback.format_exc(limit=20)
            pending = e
        if self.times.decided is None:
            self.times.decided = time.monotonic()
        try:
            verdict = self._finish(verdict)
        except KeyboardInterrupt as e:
            # Ctrl-C during cleanup: a destroy not yet tried is tried once; one that was under
            # way when it came is not started again (a frozen host would hold the user for
            # minutes more).  What is left, the next run's sweep reclaims at once: this
            # process's lease ends with it.
            if not self._destroy_started:
                self._destroy_quietly()
            pending = pending or e
        if pending is not None:
            raise pending
        return verdict

    def _finish(self, verdict: Verdict) -> Verdict:
        try:
            if self.domain is not None:
                self.transition(RunState.COLLECT)
                self._collect()
                self.times.collected = time.monotonic()
            fault = None
            if verdict.verdict == VerdictValue.FAIL:
                fault = host_fault(self.host, self.artifacts / "console.log")
            infra = self._infrastructure_problem(verdict)
            verdict = decide_run(
                RunFacts(guest=verdict, host_fault=fault, infrastructure_problem=infra)
            )
            self.transition(RunState.REPORT)
            verdict.meta.update(self._meta())
            if self.on_decided is not None:
                try:
                    self.on_decided(verdict)
                except Exception:
                    log.exception("run %s: reporting the verdict failed", self.run_id)
            with contextlib.suppress(Exception):  # a failing callback must not skip the destroy
                self._emit(
                    VerdictEvent(
                        str(verdict.verdict), verdict.reason, verdict.failed_stage, self._t()
                    )
                )
        finally:
            keeping = self._keeping(verdict)
            detail = self.domain_name + (" (a fail: keeping it)" if keeping else "")
            self.transition(RunState.DESTROY, detail, quiet=True)
            problem = self._keep(verdict) if keeping else self._destroy()
            self.times.destroyed = time.monotonic()
        verdict = decide_run(RunFacts(guest=verdict, destroy_problem=problem))
        verdict.meta.update(self._meta())
        self.transition(RunState.DONE, str(verdict.verdict))
        return verdict

    # -- the states' work -------------------------------------------------------------------

    def _create(self) -> None:
        self.times.create = time.monotonic()
        self._create_attempted = True
        cfg = self.prep.cfg_remote
        self.domain = self.toolstack.create(cfg, True, name=self.domain_name)
        self.times.created = time.monotonic()
        self.toolstack.verify_pvh(self.domain.name)
        self.capture = self.toolstack.console(
            self.domain,
            log_path=self.artifacts / "console.log",
            max_log_bytes=self.limits.max_console_bytes,
        )
        self.capture.start()
        self.times.attached = time.monotonic()
        self.toolstack.unpause(self.domain.name)
        self.times.unpaused = time.monotonic()

    def _watch(self) -> Verdict:
        assert self.prep.spec is not None and self.capture is not None and self.domain
        guest = WatchedGuest(self.profile, self.prep.spec, self.domain, self.capture)
        self.watch = Watch(
            guest,
            times=self.times,
            probe=self._probe,
            link=self.xenstore,
            limits=self.limits,
            emit=self._emit,
            checker_factory=self._checker_factory,
        )
        return self.watch.run()

    def _decide(self, verdict: Verdict) -> Verdict:
        """The guest's verdict with the facts the run adds to it: who decided it and what
        XenStore's device check found."""
        verdict.meta.setdefault("decided_by", "checker")
        check = self.watch.device_check if self.watch is not None else None
        verdict.meta.update(device_facts(check, verdict.verdict == VerdictValue.PASS))
        return verdict

    def _error_verdict(self, value: VerdictValue, reason: str) -> Verdict:
        stages: list[StageResult] = []
        if self.watch is not None:
            with contextlib.suppress(Exception):
                stages = self.watch.checker_verdict(reason).stages
        return decide_error(value, reason, stages, _stage_names(self.profile))

    def _infrastructure_problem(self, verdict: Verdict) -> str:
        """xenstored's death, when it may have stalled the guest: a fail decided by a
        deadline or an ended console (no console line as evidence) is asked about once
        more; any verdict is, when a probe already failed."""
        problem = self._probe.problem()
        if problem or verdict.verdict != VerdictValue.FAIL or self.domain is None:
            return problem
        failed = next((s for s in verdict.stages if s.name == verdict.failed_stage), None)
        if failed is not None and failed.evidence:
            return ""  # the guest's own console line decided it
        return self._probe.final()

    def _collect(self) -> None:
        assert self.domain is not None
        problem = self._probe.problem()
        if problem:
            # xl and XenStore would each wait out their deadlines before the verdict.
            self.collect_errors.append(f"skipped: {problem}")
            return
        early = self.watch.early_dump if self.watch is not None else None
        self.collect_errors += collect(
            self.toolstack,
            self.artifacts,
            self.domain.domid,
            self.xenstore.get,
            early,
            self._decided_pass,
        )

    # -- destroy or keep --------------------------------------------------------------------

    def _release(self) -> None:
        """Close what the run holds open on the host: the console (for a kept guest, its one
        console slot is `xenpvh attach`'s then) and the XenStore relay."""
        if self.capture is not None:
            self.capture.close()
        self.xenstore.close()

    def _destroy(self) -> str:
        """Tear everything down; returns a problem description ('' when clean)."""
        self._destroy_started = True
        self._release()
        return destroy_run(
            self.host,
            self.toolstack,
            self.place,
            create_attempted=self._create_attempted,
            run_dir_made=self.prep.run_dir_made,
        )

    def _destroy_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self._destroy()

    def _keeping(self, verdict: Verdict) -> bool:
        return (
            self.keep is not None
            and verdict.verdict == VerdictValue.FAIL
            and self.domain is not None
            and self.prep.run_dir_made
        )

    def _keep(self, verdict: Verdict) -> str:
        """Leave the failed guest running (see xenpvh.run.keep); a guest that is gone
        already, or a keep that cannot be recorded, is destroyed as usual."""
        assert self.keep is not None and self.domain is not None
        self._release()
        now = time.time()
        record = KeptGuest(
            run_id=self.run_id,
            domain=self.domain_name,
            domid=self.domain.domid,
            host=self.host.name,
            host_spec=dict(self.keep.host_spec),
            toolstack=self.toolstack.name,
            owner=self.keep.owner,
            since=now,
            expires=now + self.keep.keep_for,
            artifacts=str(self.artifacts.resolve()),
            console_log=str((self.artifacts / "console.log").resolve()),
            profile=getattr(self.profile, "name", ""),
            failed_stage=verdict.failed_stage,
            reason=verdict.reason,
            remote_root=self.place.remote_root,
        )
        if not keep_guest.keep_if_alive(self.host, record):
            return self._destroy()
        self.kept = record
        with contextlib.suppress(Exception):
            self._emit(KeptEvent(record))
        return ""

    # -- the verdict's meta -----------------------------------------------------------------

    def _meta(self) -> dict[str, object]:
        spec = self.prep.spec or self.point
        prepared = self.prep.prepared
        meta: dict[str, object] = {
            "run_id": self.run_id,
            "host": self.host.name,
            "toolstack": self.toolstack.name,
            "profile": getattr(self.profile, "name", str(self.profile)),
            "domain": self.domain_name,
            "domid": self.domain.domid if self.domain else None,
            "vcpus": spec.vcpus,
            "memory_mb": spec.memory_mb,
            "xen_version": prepared.xen_version if prepared else None,
            **self.times.meta(),
        }
        describe = getattr(self.host, "describe", None)
        if callable(describe):
            # Which machine ran it (for the nested host: which QEMU, which Xen image).
            with contextlib.suppress(Exception):
                meta["host_details"] = describe()
        if self.capture is not None:
            meta["console"] = {
                "bytes": self.capture.bytes_total,
                "saved": self.capture.bytes_logged,
                "truncated": self.capture.truncated,
                "source": str(self.capture.source),
                "fallback_reason": self.capture.fallback_reason,
            }
        # How hard XenStore was to reach: the probe's questions and timeouts, the relay's
        # restarts and late replies.
        health = {"probes": self._probe.probes, "timeouts": self._probe.timeouts}
        meta["xenstore_health"] = {**health, **self.xenstore.counters()}
        if self.prep.swept:
            meta["swept_stale_domains"] = self.prep.swept
        if self.prep.disk_copies:
            meta["disk_copies"] = self.prep.disk_copies
        if self.prep.uploads:
            # Bytes sent per upload (0: the host had the content-addressed file already).
            meta["uploads"] = self.prep.upload_summary()
            meta["uploaded_bytes"] = sum(self.prep.uploads.values())
        if self.kept is not None:
            meta["kept"] = keep_guest.as_dict(self.kept)
        if self.collect_errors:
            meta["collect_errors"] = self.collect_errors
        return meta


def _stage_names(profile: Profile) -> list[str]:
    return [getattr(s, "name", s) for s in getattr(profile, "stages", ())]


__all__ = ["BootRun", "RunHooks", "RunLimits", "RunOptions", "new_run_id"]
