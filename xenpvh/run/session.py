"""The Session: one request, from input checks to written reports, for every front end.

    request ─► validate (blocked before any host is touched)
            ─► builds (Xen, guest kernel; cached)
            ─► host (nested: booted or reused; ssh; local)
            ─► hypervisor stage (when a built Xen is expected)
            ─► attempts (BootRun each; only a host-fault `broken` is retried)
            ─► decide (xenpvh.check.decide) ─► write (xenpvh.report, the one writer)

The CLI, the pytest plugin, plans and the developer loop all call `Session(request).run()`;
they present its events (`on_event`) and its result, and compose nothing themselves.  The
session never raises for a verdict: blocked, broken, fail and pass all come back as a
`SessionResult` with its reports written.  A bug of ours (any other exception) and Ctrl-C
still leave a `verdict.json` behind before they propagate.

Reports are written when the verdict is known (before the guest is destroyed, so a user or
a CI server sees it at once) and rewritten, atomically, once the destroy is done: with its
timing, and `broken` if the destroy failed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xenpvh.build.builder import build_linux, build_xen
from xenpvh.build.tree import TreeSpec
from xenpvh.check.checker import EventKind, StageEvent
from xenpvh.check.decide import decide_session, decide_unreached, retryable
from xenpvh.check.hostconsole import HostExpectation, check_hypervisor, read_expect_file
from xenpvh.check.verdict import StageResult, StageStatus, Verdict, VerdictValue
from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host import lock
from xenpvh.host.base import Host
from xenpvh.host.open import open_host
from xenpvh.host.request import HostRequest
from xenpvh.profile import load_profile
from xenpvh.profile.domain import DomainSpec
from xenpvh.profile.model import Profile
from xenpvh.report import Attempt, RunReport, write_reports
from xenpvh.report.history import write_history
from xenpvh.run.boot import BootRun
from xenpvh.run.events import AttemptEvent, BuildEvent, HostWaitEvent
from xenpvh.run.keep import KeepPolicy
from xenpvh.run.options import HostClients, RunHooks, RunLimits, RunOptions, new_run_id
from xenpvh.run.preflight import check_renderable
from xenpvh.run.request import BootRequest
from xenpvh.run.session_files import make_artifacts_dir, move_attempt
from xenpvh.toolstack.xl import Xl
from xenpvh.util.fs import atomic_write_text
from xenpvh.util.progress import ProgressSink

log = logging.getLogger(__name__)

EventCallback = Callable[[object], None]
HostOpener = Callable[[HostRequest, Path], AbstractContextManager[Host]]
DEFAULT_ARTIFACTS_ROOT = Path("artifacts")


@dataclass
class SessionResult:
    verdict: Verdict
    artifacts: Path
    reports: dict[str, Path] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return self.verdict.exit_code


def point_name(toolstack: str, point: DomainSpec) -> str:
    """Stable across attempts: the JUnit classname's last part (`xl-vcpus2-mem256`)."""
    return f"{toolstack}-vcpus{point.vcpus}-mem{point.memory_mb}"


class Session:
    """Run one BootRequest.  `host` (a Host the caller already holds, e.g. the pytest
    session's) skips opening one; `open_host` replaces how one is opened (front ends pass
    one that shows progress).  `guest_kit` and `progress` go to the builders; `clients`
    are the host's service clients the caller holds (a toolstack, a XenStore factory)."""

    def __init__(
        self,
        request: BootRequest,
        *,
        on_event: EventCallback | None = None,
        host: Host | None = None,
        open_host: HostOpener | None = None,
        guest_kit: Any = None,
        progress: ProgressSink | None = None,
        artifacts_root: Path = DEFAULT_ARTIFACTS_ROOT,
        clients: HostClients | None = None,
    ) -> None:
        self.request = request
        self.on_event = on_event
        self.host = host
        self._open_host = open_host
        self.guest_kit = guest_kit
        self.progress = progress
        self.artifacts_root = artifacts_root
        # A toolstack instance the caller holds (and closes), else one per run by name; a
        # XenStore factory (tests: a fake at the boundary), else the real XenStore.
        self.clients = clients or HostClients()
        self.run_id = new_run_id()
        self.started_at = time.time()
        self.profile: Profile | None = None
        self.point: DomainSpec | None = None
        self.artifacts: Path | None = None
        self.hypervisor: StageResult | None = None
        self.attempts: list[Verdict] = []
        self.attempt_dirs: list[str | None] = []
        self.host_name: str | None = None
        self._expect: HostExpectation | None = None
        self._xen_image: Path | None = request.host.xen_image
        self._kernel: str | None = request.kernel
        # Build ids and tree commits, for the history (xen_build, guest_build, tree_commit).
        self._build_facts: dict[str, str] = {}

    # -- the pipeline -----------------------------------------------------------------------

    def run(self) -> SessionResult:
        try:
            self._validate()
        except BlockedError as e:
            return self._without_boot(VerdictValue.BLOCKED, str(e))
        try:
            self._build()
            with self._host() as host:
                self.host_name = getattr(host, "name", None)
                self._check_host_lock(host)
                self.hypervisor = self._hypervisor_stage(host)
                if self.hypervisor is None or self.hypervisor.status is not StageStatus.FAILED:
                    self._attempts(host)
        except (BlockedError, BrokenError) as e:
            if not self.attempts:
                value = VerdictValue.BLOCKED if isinstance(e, BlockedError) else VerdictValue.BROKEN
                return self._without_boot(value, str(e))
            # The host went away after the runs (closing it failed): the runs stand.
            log.warning("after the runs: %s", e)
        except KeyboardInterrupt as e:
            # A front end may say what interrupted it (the CLI's SIGTERM does).
            self._write_interrupted(str(getattr(e, "reason", "interrupted (KeyboardInterrupt)")))
            raise
        except Exception as e:
            self._write_interrupted(f"internal error: {type(e).__name__}: {e}", bug=True)
            raise
        return self._finish()

    def _validate(self) -> None:
        """Everything the input alone decides, before any build or host."""
        req = self.request
        req.validate()
        self.profile = load_profile(req.profile)
        base = self.profile.point()
        cmdline = base.cmdline
        if req.cmdline_append:
            cmdline = f"{cmdline} {req.cmdline_append}".strip()
        self.point = self.profile.point(
            vcpus=req.vcpus,
            memory_mb=req.memory_mb,
            kernel=req.kernel,
            ramdisk=req.ramdisk,
            cmdline=cmdline,
            disks=_repeat(base.disks, req.disks, "disk", self.profile.name),
            vifs=_repeat(base.vifs, req.vifs, "vif", self.profile.name),
        )
        check_renderable(self.point, req.toolstack)  # a hostile cmdline: blocked, no host
        if req.xen_build is not None:
            # Parsing the spec checks the tree, patches and fragment paths (blocked if bad).
            TreeSpec.from_cli(req.xen_build.tree, list(req.xen_build.patches), req.xen_build.config)
        self.artifacts = make_artifacts_dir(req.artifacts, self.artifacts_root, self.profile.name)
        self._write_provisional()

    def _build(self) -> None:
        req = self.request
        if req.xen_build is not None:
            xb = req.xen_build
            spec = TreeSpec.from_cli(xb.tree, list(xb.patches), xb.config)
            built = build_xen(spec, rebuild=xb.rebuild or req.rebuild, progress=self.progress)
            self._emit(BuildEvent("xen", built.cache.describe(), str(built.image)))
            self._xen_image = built.image
            self._build_facts["xen_build"] = built.cache.key
            if built.state.identity.get("commit"):
                self._build_facts["tree_commit"] = built.state.identity["commit"]
            lines: tuple[str, ...] = ()
            for p in xb.patches:
                series_dir = Path(p) if Path(p).is_dir() else Path(p).parent
                expect_file = series_dir / "expect-console"
                if expect_file.is_file():
                    lines += read_expect_file(expect_file.read_text())
            self._expect = HostExpectation(xen_version=built.version, lines=lines)
        if req.kernel_tree:
            kbuilt = build_linux(
                TreeSpec.from_cli(req.kernel_tree, [], None),
                rebuild=req.rebuild,
                progress=self.progress,
            )
            self._emit(BuildEvent("kernel", kbuilt.cache.describe(), str(kbuilt.image)))
            # The bzImage boots as a PVH guest (as Debian's vmlinuz does on the nested host).
            self._kernel = str(kbuilt.image)
            self._build_facts["guest_build"] = kbuilt.cache.key
            assert self.point is not None
            self.point = dataclasses.replace(self.point, kernel=self._kernel)

    @contextlib.contextmanager
    def _host(self) -> Iterator[Host]:
        if self.host is not None:
            yield self.host
            return
        hreq = dataclasses.replace(self.request.host, xen_image=self._xen_image)
        assert self.artifacts is not None
        opener = self._open_host or _default_opener
        with opener(hreq, self.artifacts) as host:
            yield host

    def _check_host_lock(self, host: Host) -> None:
        """Before any domain is made: another owner's lease on the host (`xenpvh host lock`,
        a nightly pool) makes us wait (up to `wait_host`) or refuse, naming the holder."""

        def waiting(holder: lock.HostLease) -> None:
            self._emit(HostWaitEvent(host.name, holder.describe()))

        owner = self.request.owner or lock.default_owner()
        lock.check(host, owner=owner, wait=self.request.wait_host, on_wait=waiting)

    def _keep_policy(self) -> KeepPolicy | None:
        if not self.request.keep_on_fail:
            return None

        h = self.request.host
        spec = {
            "spec": h.spec,
            "inventory": str(h.inventory) if h.inventory else None,
            "identity": str(h.identity) if h.identity else None,
            "known_hosts": str(h.known_hosts) if h.known_hosts else None,
        }
        return KeepPolicy(
            keep_for=self.request.keep_for,
            owner=self.request.owner or lock.default_owner(),
            host_spec=spec,
        )

    def _hypervisor_stage(self, host: Host) -> StageResult | None:
        """The `hypervisor` stage on a live host: `xl dmesg` + `xl info` against what the
        build promised."""
        if self._expect is None:
            return None
        assert self.artifacts is not None
        xl = Xl(host)
        dmesg = xl.dmesg()
        info = xl.info()
        atomic_write_text(self.artifacts / "host-xl-dmesg.txt", dmesg)
        atomic_write_text(
            self.artifacts / "host-xl-info.txt", "".join(f"{k}: {v}\n" for k, v in info.items())
        )
        stage = check_hypervisor(dmesg, info.get("xen_version"), self._expect)
        self._emit(_stage_event(stage))
        return stage

    def _attempts(self, host: Host) -> None:
        assert self.profile is not None and self.point is not None and self.artifacts is not None
        before = {p.name for p in self.artifacts.iterdir()}
        total = self.request.attempts
        for n in range(1, total + 1):

            def decided(verdict: Verdict, n: int = n) -> None:
                # The verdict is known and the guest not yet destroyed: if no other attempt
                # follows, the reports are written now.
                if not retryable(verdict) or n == total:
                    attempts = [*self.attempts, verdict]
                    self._write(self._decide(attempts), attempts)

            run = BootRun(
                host,
                self.profile,
                self.point,
                artifacts=self.artifacts,
                guest_kit=self.guest_kit,
                options=RunOptions(
                    toolstack=self.clients.toolstack or self.request.toolstack,
                    keep=self._keep_policy(),
                ),
                limits=RunLimits(timeout=self.request.timeout),
                hooks=RunHooks(
                    on_event=self.on_event,
                    on_decided=decided,
                    xenstore_factory=self.clients.xenstore_factory,
                ),
            )
            verdict = run.run()
            self.attempts.append(verdict)
            if not retryable(verdict) or n == total:
                self.attempt_dirs.append(None)
                return
            kept = self.artifacts / f"attempt-{n}"
            move_attempt(self.artifacts, kept, before)
            self.attempt_dirs.append(kept.name)
            self._write_attempt(verdict, n, kept)
            self._emit(AttemptEvent(n, total, verdict.reason, str(kept)))

    # -- decide and write -------------------------------------------------------------------

    def _decide(self, attempts: list[Verdict]) -> Verdict:
        verdict = decide_session(attempts, self.hypervisor)
        if len(attempts) > 1:
            verdict.meta["attempts"] = [
                {
                    "attempt": a.number,
                    "verdict": a.verdict,
                    "reason": a.reason,
                    "emulation_fault": a.emulation_fault,
                    "artifacts": a.artifacts,
                }
                for a in self._attempt_records(attempts)
            ]
        if self.artifacts is not None:
            verdict.meta["artifacts"] = str(self.artifacts)
        verdict.meta.setdefault("session_id", self.run_id)
        return verdict

    def _attempt_records(self, attempts: list[Verdict]) -> tuple[Any, ...]:
        """Each attempt as the reports list it (`xenpvh.report.Attempt`); the last one's
        files are the run directory itself, earlier ones' are in `attempt-N/`."""
        return tuple(
            Attempt(
                number=i,
                verdict=str(v.verdict),
                reason=v.reason,
                emulation_fault=v.meta.get("emulation_fault"),  # type: ignore[arg-type]
                artifacts=self.attempt_dirs[i - 1] if i - 1 < len(self.attempt_dirs) else None,
            )
            for i, v in enumerate(attempts, start=1)
        )

    def _finish(self) -> SessionResult:
        # run() gets here with attempts, or with a failed hypervisor stage and none.
        verdict = self._decide(self.attempts)
        reports = self._write(verdict, self.attempts)
        assert self.artifacts is not None
        return SessionResult(verdict, self.artifacts, reports)

    def _unreached(self, value: VerdictValue, reason: str) -> Verdict:
        """A verdict with the profile's stages, none reached (nothing of the guest ran)."""
        names = [s.name for s in self.profile.stages] if self.profile else []
        return decide_unreached(value, reason, names)

    def _without_boot(self, value: VerdictValue, reason: str) -> SessionResult:
        """Blocked or broken before any guest ran: the profile's stages, none reached."""
        verdict = self._unreached(value, reason)
        if self.hypervisor is not None:
            verdict.stages.insert(0, self.hypervisor)
        if self.artifacts is None:
            if self.request.artifacts is None:
                # Nothing ran and nothing was made: no directory is left behind.
                return SessionResult(verdict, Path(), {})
            # The caller named a results directory (a CI job reads it): it gets a verdict.
            self.artifacts = Path(self.request.artifacts)
            self.artifacts.mkdir(parents=True, exist_ok=True)
        verdict.meta["artifacts"] = str(self.artifacts)
        verdict.meta["session_id"] = self.run_id
        return SessionResult(verdict, self.artifacts, self._write(verdict))

    def _write_interrupted(self, reason: str, *, bug: bool = False) -> None:
        """Ctrl-C or a bug of ours: the run dir still ends with a verdict.json."""
        if self.artifacts is None:
            return
        with contextlib.suppress(Exception):
            v = self._unreached(VerdictValue.BROKEN, reason)
            if bug:
                v.meta["traceback"] = traceback.format_exc(limit=30)
            self._write(v)

    def _write_provisional(self) -> None:
        """The run dir holds a verdict.json from the start: if this process is killed
        (SIGKILL, OOM, power) before a verdict, the one it leaves says so."""
        reason = (
            f"no verdict: the run (pid {os.getpid()} on {socket.gethostname()}) was killed or "
            "is still running"
        )
        v = self._unreached(VerdictValue.BROKEN, reason)
        v.meta["provisional"] = True
        with contextlib.suppress(Exception):  # a run dir we cannot write fails later, loudly
            self._write(v)

    @property
    def point_name(self) -> str:
        if self.request.point_name:
            return self.request.point_name
        if self.point is not None:
            return point_name(self.request.toolstack, self.point)
        return f"{self.request.toolstack}-point"

    def report_for(
        self,
        verdict: Verdict,
        attempts: list[Verdict] | None = None,
        *,
        run_id: str | None = None,
        artifacts: Path | None = None,
    ) -> Any:
        """The one writer's input for `verdict` (a `xenpvh.report.RunReport`); `attempts`
        are the verdicts it was decided from (default: the attempts so far)."""
        records = self._attempt_records(self.attempts if attempts is None else attempts)
        timings = {
            k: v for k, v in verdict.meta.items() if k.endswith("_s") and isinstance(v, float)
        }
        return RunReport(
            verdict=verdict,
            profile=self.profile.name if self.profile else str(self.request.profile),
            point=self.point_name,
            run_id=run_id or self.run_id,
            host=self.host_name,
            started_at=self.started_at,
            finished_at=time.time(),
            artifacts=artifacts or self.artifacts,
            attempts=records if len(records) > 1 else (),
            timings=timings,
        )

    def _write(self, verdict: Verdict, attempts: list[Verdict] | None = None) -> dict[str, Path]:
        assert self.artifacts is not None
        report = self.report_for(verdict, attempts)
        written = write_reports(report)
        if self.request.history is not None:
            target = self.request.history
            facts = {**self._build_facts, **target.facts}  # type: ignore[attr-defined]
            write_history(dataclasses.replace(target, facts=facts), report, written)  # type: ignore
        return written

    def _write_attempt(self, verdict: Verdict, n: int, where: Path) -> None:
        """An earlier attempt's directory gets its own reports, so it reads on its own."""
        write_reports(
            self.report_for(verdict, [], run_id=f"{self.run_id}-attempt{n}", artifacts=where)
        )

    # -- helpers ----------------------------------------------------------------------------

    def _emit(self, event: object) -> None:
        if self.on_event is not None:
            self.on_event(event)


def _repeat(
    template: tuple[Any, ...], n: tuple[Any, ...] | int | None, what: str, profile: str
) -> Any:
    """`n` devices like the profile's first one (None: the profile's own; a tuple: those
    devices); disks get their own vdev names (xvda, xvdb, ...)."""
    if n is None or isinstance(n, tuple):
        return n
    if n and not template:
        raise BlockedError(f"profile {profile!r} has no {what} to repeat")
    if what != "disk":
        return tuple(template[0] for _ in range(n))
    return tuple(dataclasses.replace(template[0], vdev=f"xvd{chr(ord('a') + i)}") for i in range(n))


def _default_opener(request: HostRequest, artifacts: Path) -> AbstractContextManager[Host]:
    return open_host(request, artifacts=artifacts)


def _stage_event(stage: StageResult) -> object:
    kind = EventKind.PASSED if stage.status is StageStatus.PASSED else EventKind.FAILED
    return StageEvent(kind, stage.name, stage.t, stage.evidence or stage.detail)


__all__ = [
    "AttemptEvent",
    "BuildEvent",
    "HostWaitEvent",
    "Session",
    "SessionResult",
    "point_name",
]
