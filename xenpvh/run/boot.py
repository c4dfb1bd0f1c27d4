"""One boot run: prepare -> create -> watch -> decide -> collect -> destroy -> report.

The run is an explicit state machine (`RunState`); every transition is checked and reported
to `on_event`.  Whatever happens after the first `xl create` was attempted -- a guest
failure, an infrastructure error, a deadline, Ctrl-C -- the domain is destroyed and the
run directory on the host removed before the run returns.

Errors map onto verdicts: BlockedError (our input: missing kernel, unrenderable config, a
domain that is not really PVH) -> `blocked`; BrokenError (host, xl, xenstored) -> `broken`;
guest misbehaviour is never an exception but a `fail` from the checker or the device check.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import math
import re
import secrets
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xenpvh.check.checker import EventKind, StageChecker, StageEvent
from xenpvh.check.decide import HostFault, RunFacts, decide_run
from xenpvh.check.faults import judge as judge_fault
from xenpvh.check.verdict import StageResult, Verdict, VerdictValue
from xenpvh.errors import BlockedError, BrokenError, CommandFailed, XenpvhError
from xenpvh.host.base import Host, emulation_faults
from xenpvh.host.hotplug import HotplugScript, hotplug_scripts
from xenpvh.profile.domain import DomainSpec
from xenpvh.profile.model import DEVICE_CHECKS, Profile
from xenpvh.run import guest_disk, lease, remote
from xenpvh.run import keep as keep_guest
from xenpvh.run.devices import XENBUS_STAGE, DeviceCheck, device_failure
from xenpvh.run.events import (
    TRANSITIONS,
    DeviceCheckEvent,
    RunState,
    RunStateEvent,
    VerdictEvent,
)
from xenpvh.run.keep import KeepPolicy, KeptEvent, KeptGuest
from xenpvh.run.lease import DOMAIN_PREFIX, LEASE_FIND, LEASE_SLACK, RUN_ID, parse_leases
from xenpvh.run.liveness import XenStoreProbe, xenstored_witness
from xenpvh.run.preflight import check_host_memory
from xenpvh.run.remote import (
    MISSING_SCRIPT,
    REMOTE_ROOT,
    SCRATCH_FS,
    SCRATCH_SCRIPT,
    remote_paths,
)
from xenpvh.run.timings import Timings
from xenpvh.toolstack.base import Domain, Prepared, Toolstack, xl_domain_exists
from xenpvh.toolstack.console import MAX_LOG_BYTES, ConsoleCapture
from xenpvh.toolstack.registry import get_toolstack
from xenpvh.toolstack.xenstore import XenStore, XenStoreTimeout
from xenpvh.util.fs import atomic_write_text, sha256_file

if TYPE_CHECKING:
    from xenpvh.build.debian_guest import DebianGuest
    from xenpvh.build.guestkit import GuestKit

log = logging.getLogger(__name__)

GUESTKIT_PREFIX = "@guestkit:"
# After a fail, console.log keeps the rest of the crash dump: until this quiet, this long at most.
CRASH_QUIET = 1.0
CRASH_TAIL = 5.0
# Seconds between XenStore device readings while the guest still probes its devices.
XENSTORE_POLL_WAITING = 2.0
# Files of the Debian guest (xenpvh.build.debian_guest): vmlinuz, initrd, grub, disk.
DEBIAN_GUEST_PREFIX = "@debian-guest:"
# The newest FreeBSD kernel the build room made (or $XENPVH_FREEBSD_KERNEL): `@freebsd:kernel`;
# the FreeBSD guest kit's root (xenpvh.build.freebsdkit), a disk target: `@freebsd-kit:rootfs`.
FREEBSD_KERNEL_REF = "@freebsd:kernel"
FREEBSD_KIT_ROOTFS_REF = "@freebsd-kit:rootfs"
# Console lines longer than this are split when looking for a host's emulation faults.
MAX_FAULT_LINE = 64 * 1024

EventCallback = Callable[[object], None]


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


class BootRun:
    """Boot one profile point on one host and decide its verdict."""

    def __init__(
        self,
        host: Host,
        profile: Profile,
        point: DomainSpec,
        *,
        toolstack: str | Toolstack = "xl",
        artifacts: Path,
        guest_kit: GuestKit | Callable[[], GuestKit] | None = None,
        on_event: EventCallback | None = None,
        run_id: str | None = None,
        timeout: float = 900.0,
        xenbus_grace: float = 30.0,
        xenstore_timeout: float = 10.0,
        max_console_bytes: int = MAX_LOG_BYTES,
        remote_root: str = REMOTE_ROOT,
        on_decided: Callable[[Verdict], None] | None = None,
        checker_factory: Callable[..., StageChecker] | None = None,
        xenstore_factory: Callable[[Host], XenStore] | None = None,
        xenstore_probe_interval: float = 5.0,
        keep: KeepPolicy | None = None,
    ) -> None:
        self.host = host
        self.profile = profile
        self.point = point
        self.toolstack = get_toolstack(toolstack, host) if isinstance(toolstack, str) else toolstack
        self.artifacts = Path(artifacts)
        self.guest_kit = guest_kit
        self.on_event = on_event
        if run_id is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,47}", run_id):
            raise BlockedError(f"run id {run_id!r}: use 1-48 of [A-Za-z0-9_-]")
        self.run_id = run_id or new_run_id()
        self.domain_name = f"{DOMAIN_PREFIX}{self.run_id}"
        self.timeout = timeout
        self.xenbus_grace = xenbus_grace
        self.max_console_bytes = max_console_bytes
        self.remote_root = remote_root.rstrip("/")
        self.run_dir = f"{self.remote_root}/runs/{self.run_id}"
        # Called with the decided verdict before the destroy (the Session writes the
        # reports then); a failure there is logged, it never skips the destroy.
        self.on_decided = on_decided
        self._checker_factory = checker_factory
        self._xenstore_factory = xenstore_factory or (
            lambda h: XenStore(h, timeout=xenstore_timeout)
        )

        self.state: RunState | None = None
        self.times = Timings(start=time.monotonic())
        self.spec: DomainSpec | None = None
        self.prepared: Prepared | None = None
        self.domain: Domain | None = None
        self.capture: ConsoleCapture | None = None
        self.checker: StageChecker | None = None
        self.device_check: DeviceCheck | None = None
        self.collect_errors: list[str] = []
        self.swept: list[str] = []
        self._create_attempted = False
        self._xs: XenStore | None = None
        self._xs_opened: XenStore | None = None
        self._exits = contextlib.ExitStack()
        self._run_dir_made = False
        self._scripts: dict[str, tuple[HotplugScript, str]] = {}
        self._early_dump: tuple[float, str] | None = None
        self._early_dump_thread: threading.Thread | None = None
        self._decided_pass = False
        self._debian_guest: DebianGuest | None = None
        # vdev -> seconds the per-run copy of a built disk image took (and its first send).
        self.disk_copies: dict[str, dict[str, float]] = {}
        self._destroy_started = False
        self._xs_lock = threading.Lock()  # the probe's thread may open the connection
        # xenstored answering, whichever stage is in progress (xenpvh.run.liveness).
        self._probe = XenStoreProbe(
            self._xenstore,
            host=getattr(host, "name", "host"),
            interval=xenstore_probe_interval,
            timeout=xenstore_timeout,
            witness=xenstored_witness(host),
        )
        # Keep the guest of a `fail` running instead of destroying it (xenpvh dev).
        self.keep = keep
        self.kept: KeptGuest | None = None
        self.uploads: dict[str, int] = {}

    # -- state machine ----------------------------------------------------------------------

    def _enter(self, state: RunState, detail: str = "") -> None:
        if state not in TRANSITIONS[self.state]:
            raise AssertionError(f"run {self.run_id}: illegal transition {self.state} -> {state}")
        self.state = state
        t = round(time.monotonic() - self.times.start, 3)
        log.debug("run %s: %s %s", self.run_id, state, detail)
        self._emit(RunStateEvent(state, t, detail))

    def _emit(self, event: object) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def run(self) -> Verdict:
        verdict: Verdict | None = None
        pending: BaseException | None = None
        try:
            self._enter(RunState.PREPARE, self.domain_name)
            self.artifacts.mkdir(parents=True, exist_ok=True)
            self._prepare()
            self._enter(RunState.CREATE, self.domain_name)
            self._create()
            self._enter(RunState.WATCH)
            outcome = self._watch()
            self._enter(RunState.DECIDE)
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
                self._enter(RunState.COLLECT)
                self._collect()
                self.times.collected = time.monotonic()
            fault = self._host_fault() if verdict.verdict == VerdictValue.FAIL else None
            infra = self._infrastructure_problem(verdict)
            verdict = decide_run(
                RunFacts(guest=verdict, host_fault=fault, infrastructure_problem=infra)
            )
            self._enter(RunState.REPORT)
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
            self.state = RunState.DESTROY
            with contextlib.suppress(Exception):
                keeping = " (a fail: keeping it)" if self._keeping(verdict) else ""
                self._emit(RunStateEvent(RunState.DESTROY, self._t(), self.domain_name + keeping))
            problem = self._keep(verdict) if self._keeping(verdict) else self._destroy()
            self.times.destroyed = time.monotonic()
        verdict = decide_run(RunFacts(guest=verdict, destroy_problem=problem))
        verdict.meta.update(self._meta())
        self._enter(RunState.DONE, str(verdict.verdict))
        return verdict

    # -- prepare ----------------------------------------------------------------------------

    def _resolve(self, value: str | None, what: str) -> Path | None:
        if value is None or value == "":
            return None
        if value.startswith(GUESTKIT_PREFIX):
            kit = self._guest_kit()
            key = value[len(GUESTKIT_PREFIX) :]
            paths = {"vmlinuz": kit.kernel, "kernel": kit.kernel, "initrd": kit.ramdisk}
            if key not in paths:
                raise BlockedError(
                    f"{what} {value!r}: unknown guest kit item {key!r} (known: vmlinuz, initrd)"
                )
            return Path(paths[key])
        if value.startswith(DEBIAN_GUEST_PREFIX):
            return self._debian_guest_files().item(value[len(DEBIAN_GUEST_PREFIX) :])
        if value == FREEBSD_KERNEL_REF:
            from xenpvh.live_inputs import NO_FREEBSD_KERNEL, freebsd_kernel

            found = freebsd_kernel()
            if found is None or not found.is_file():
                raise BlockedError(f"{what} {value!r}: {NO_FREEBSD_KERNEL}")
            return found
        return Path(value).expanduser()

    def _debian_guest_files(self) -> DebianGuest:
        if self._debian_guest is None:
            from xenpvh.build.debian_guest import ensure_debian_guest

            self._debian_guest = ensure_debian_guest()
        return self._debian_guest

    def _disk_image(self, target: str, vdev: str) -> guest_disk.PackedImage:
        """The built image a disk's `@...` target names: the Debian guest's disk, or the
        FreeBSD guest kit's root (a small ISO, sent as it is)."""
        if target == FREEBSD_KIT_ROOTFS_REF:
            from xenpvh.build.freebsdkit import build_freebsd_kit

            kit = build_freebsd_kit()
            return guest_disk.PackedImage(kit.rootfs, "", kit.key, name="freebsd-kit.iso")
        if target != f"{DEBIAN_GUEST_PREFIX}disk":
            raise BlockedError(
                f"disk {vdev}: target {target!r} names no built image "
                f"(known: {DEBIAN_GUEST_PREFIX}disk, {FREEBSD_KIT_ROOTFS_REF})"
            )
        guest = self._debian_guest_files()
        return guest_disk.PackedImage(guest.disk_pack, guest.disk.name, guest.disk_sha256)

    def _guest_kit(self) -> GuestKit:
        if callable(self.guest_kit):
            self.guest_kit = self.guest_kit()
        if self.guest_kit is None:
            try:
                from xenpvh.build.guestkit import build_linux_guest_kit
            except ImportError as e:
                raise BlockedError(
                    f"profile needs the guest kit but xenpvh.build.guestkit is unavailable: {e}"
                ) from e
            self.guest_kit = build_linux_guest_kit()
        return self.guest_kit

    def _prepare(self) -> None:
        point = self.point
        # 1. Our input, checked before anything touches the host.
        kernel = self._resolve(point.kernel, "kernel")
        if kernel is None:
            raise BlockedError("the profile point has no kernel")
        ramdisk = self._resolve(point.ramdisk, "ramdisk")
        for what, p in (("kernel", kernel), ("ramdisk", ramdisk)):
            if p is not None and not p.is_file():
                raise BlockedError(f"{what} {p} does not exist (or is not a file)")
        for d in point.disks:
            if not d.target and d.size_mb is None:
                raise BlockedError(f"disk {d.vdev}: neither a target nor a size_mb")
            if not d.target and d.fs is not None and d.fs not in SCRATCH_FS:
                raise BlockedError(
                    f"disk {d.vdev}: cannot make a scratch {d.fs!r} filesystem "
                    f"(supported: {', '.join(SCRATCH_FS)}, or none)"
                )
            if d.size_mb is not None and not 1 <= d.size_mb <= 64 * 1024:
                raise BlockedError(f"disk {d.vdev}: size_mb {d.size_mb} out of range 1-65536")
        images = {
            d.vdev: self._disk_image(d.target, d.vdev)
            for d in point.disks
            if remote.is_image_ref(d.target)
        }

        kernels_dir = f"{self.remote_root}/kernels"
        spec = remote_paths(
            dataclasses.replace(point, name=self.domain_name),
            run_id=self.run_id,
            kernel=kernel,
            ramdisk=ramdisk,
            kernel_id=lambda p: sha256_file(p)[:16],
            remote_root=self.remote_root,
        )
        scripts = self._hotplug_scripts()
        disks, vifs = spec.disks, spec.vifs
        if "vbd" in scripts:
            disks = tuple(dataclasses.replace(d, script=scripts["vbd"]) for d in disks)
        if "vif" in scripts:
            vifs = tuple(dataclasses.replace(v, script=scripts["vif"]) for v in vifs)
        self.spec = dataclasses.replace(spec, disks=disks, vifs=vifs)
        uploads = [(kernel, self.spec.kernel)]
        if ramdisk is not None and self.spec.ramdisk is not None:
            uploads.append((ramdisk, self.spec.ramdisk))
        disks = self.spec.disks
        # 2. Render for the Xen this host runs (RenderError: blocked, still nothing made).
        self.prepared = self.toolstack.prepare(self.spec)
        atomic_write_text(self.artifacts / self.prepared.filename, self.prepared.config)
        # 3. Side effects on the host, once it is known to have every vif's bridge (a bridge
        # the host lacks is our input being wrong for this host: blocked, nothing made).
        bridges = sorted({v.bridge for v in self.spec.vifs})
        lacking = remote.missing_interfaces(self.host, bridges)
        if lacking:
            raise BlockedError(
                f"vif bridge(s) {', '.join(lacking)} do not exist on host {self.host.name} "
                f"(no such network interface; vifs: {', '.join(v.bridge for v in self.spec.vifs)})"
            )
        dirs = [kernels_dir, self.run_dir, "/var/lock"]
        if self._scripts:
            dirs.append(f"{self.remote_root}/scripts")
        self.host.run(["mkdir", "-p", "--", *dirs], check=True)
        self._run_dir_made = True
        self._write_lease()
        self._sweep()
        # After the sweep (dead runs' domains gave their memory back), before any upload.
        info = self.prepared.host_info if not self.swept else self._xl_info()
        check_host_memory(info, self.spec.memory_mb, host=self.host.name)
        self.uploads = remote.upload(self.host, uploads, list(self._scripts.values()))
        for orig, d in zip(point.disks, disks, strict=True):
            if d.vdev in images:
                base, took = guest_disk.ensure_on_host(self.host, images[d.vdev], self.remote_root)
                copied = guest_disk.copy_for_run(self.host, base, d.target)
                self.disk_copies[d.vdev] = {**took, "copy_s": round(copied, 3)}
                continue
            if orig.target:
                if not self.host.run(["test", "-e", d.target]).ok:
                    raise BlockedError(f"disk {d.vdev}: target {d.target} does not exist")
                continue
            remote.make_scratch(self.host, d, orig)
        self.host.put_bytes(self.prepared.config.encode(), self.cfg_remote, mode=0o644)

    def _xl_info(self) -> str:
        from xenpvh.toolstack.xl import Xl

        return Xl(self.host).info_text()

    def _hotplug_scripts(self) -> dict[str, str]:
        """Device kind -> script path on the host, for the scripts the host declares
        (uploaded content-addressed in `_prepare`; xl only: libvirt keeps its own)."""
        if getattr(self.toolstack, "name", "") != "xl":
            return {}
        self._scripts = {
            s.kind: (s, s.remote_path(self.remote_root)) for s in hotplug_scripts(self.host)
        }
        return {kind: path for kind, (_, path) in self._scripts.items()}

    def _write_lease(self) -> None:
        lease.write_lease(
            self.host,
            self.run_dir,
            domain=self.domain_name,
            run_id=self.run_id,
            timeout=self.timeout,
        )

    def _sweep(self) -> None:
        """Destroy `xenpvh-` domains of runs whose lease expired (or that have none), and
        remove the expired runs' directories."""
        live, stale_dirs = lease.live_and_stale(
            self.host, self.remote_root, run_id=self.run_id, domain=self.domain_name
        )
        self.swept = self.toolstack.sweep(DOMAIN_PREFIX, keep=live)
        if stale_dirs:
            self.host.run(["rm", "-rf", "--", *stale_dirs], check=True)

    @property
    def cfg_remote(self) -> str:
        name = self.prepared.filename if self.prepared else "domain.cfg"
        return f"{self.run_dir}/{name}"

    # -- create -----------------------------------------------------------------------------

    def _create(self) -> None:
        self.times.create = time.monotonic()
        self._create_attempted = True
        self.domain = self.toolstack.create(self.cfg_remote, True, name=self.domain_name)
        self.times.created = time.monotonic()
        self.toolstack.verify_pvh(self.domain.name)
        self.capture = self.toolstack.console(
            self.domain,
            log_path=self.artifacts / "console.log",
            max_log_bytes=self.max_console_bytes,
        )
        self.capture.start()
        self.times.attached = time.monotonic()
        self.toolstack.unpause(self.domain.name)
        self.times.unpaused = time.monotonic()

    # -- watch ------------------------------------------------------------------------------

    def _make_checker(self, spec: DomainSpec) -> StageChecker:
        factory = self._checker_factory or StageChecker
        # xenstore_proof: this run's XenStore check proves the devices a kernel does not
        # name on its console (prove_devices in _poll_devices).
        return factory(
            self.profile,
            vcpus=spec.vcpus,
            disks=len(spec.disks),
            vifs=len(spec.vifs),
            xenstore_proof=True,
        )

    def _watch(self) -> Verdict:
        assert self.spec is not None and self.capture is not None and self.domain is not None
        checker = self.checker = self._make_checker(self.spec)
        deadline = self.times.start + self.timeout
        capture = self.capture
        while True:
            self._probe.check()  # BrokenError once xenstored stopped answering
            # The read doubles as the loop's pacing (it waits up to 0.1 s for bytes).
            data = capture.read(0.1)
            arrival = time.monotonic()
            if data and self.times.first_byte is None:
                self.times.first_byte = arrival
            if not checker.done:
                events = checker.feed(data) if data else []
                events.extend(checker.poll())
                for ev in events:
                    self._emit(ev)
                    if self.device_check is None and _xenbus_begun(ev):
                        # Poll XenStore from the moment xenbus is in progress or shows a
                        # line: it alone proves devices the kernel does not print.
                        self.device_check = DeviceCheck(arrival)
                    if _is_pass(ev, XENBUS_STAGE):
                        self.device_check = self.device_check or DeviceCheck(arrival)
                        self.device_check.arm(arrival, self.xenbus_grace)
                if self.device_check is not None and checker.awaiting_xenstore(XENBUS_STAGE):
                    self.device_check.arm(arrival, self.xenbus_grace)
                if checker.done:
                    self.times.deciding_arrival = arrival if data else None
                    self.times.decided = time.monotonic()
            check = self.device_check
            if check is not None and check.result == "pending":
                self._poll_devices(check)
                if check.result == "stuck":
                    self.times.decided = time.monotonic()
                    return self._device_failure(check)
                if check.result == "connected" and checker.done:
                    self.times.decided = time.monotonic()
            if checker.done:
                if checker.verdict.verdict != VerdictValue.PASS:
                    self._drain_console(capture)
                    return checker.verdict
                if check is None or check.result != "pending":
                    return checker.verdict
                check.arm(arrival, self.xenbus_grace)  # never unbounded
                continue  # a pass waits for the device check (bounded by its grace)
            if capture.ended:
                self.times.decided = time.monotonic()
                why = f"; {capture.fallback_reason}" if capture.fallback_reason else ""
                return checker.finish(f"console ended (domain gone{why})")
            if arrival > deadline:
                self.times.decided = time.monotonic()
                return checker.finish(f"run deadline of {self.timeout:g}s exceeded")

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
        assert self.domain is not None and self.spec is not None
        xs = self._xenstore()
        try:
            devices = xs.device_states(self.domain.domid)
            tty = xs.console_tty(self.domain.domid)
        except XenStoreTimeout as e:
            # Slow or dead: the liveness probe asks again at once and decides which.
            self._probe.suspect(e, now)
            return
        disks, vifs = len(self.spec.disks), len(self.spec.vifs)
        problems = check.judge(
            devices,
            tty,
            domid=self.domain.domid,
            disks=disks,
            vifs=vifs,
            checks=getattr(self.profile, "device_checks", DEVICE_CHECKS),
            exited=self.capture is not None and self.capture.ended,
        )
        if check.result == "connected":
            self._start_early_dump()
            self._emit(
                DeviceCheckEvent("connected", self._t(), tuple(d.describe() for d in devices))
            )
        elif check.result == "stuck":
            self._emit(DeviceCheckEvent("stuck", self._t(), tuple(problems)))
        checker = self.checker
        if checker is not None and not checker.done:
            # XenStore's proof completes what the console cannot show (Linux's vifs).
            checker.xenstore_problem = "; ".join(problems)
            for kind, ids in check.connected_kinds(devices, disks=disks, vifs=vifs).items():
                for ev in checker.prove_devices(kind, ids):
                    self._emit(ev)
                    if _is_pass(ev, XENBUS_STAGE):
                        check.arm(now, self.xenbus_grace)

    def _start_early_dump(self) -> None:
        """Dump the domain's XenStore while the guest boots on (the devices just connected):
        on a slow dom0 the walk takes seconds that would otherwise follow the verdict.  The
        watch loop does not use XenStore any more from here on; `_collect` joins this."""
        assert self.domain is not None
        domid, xs = self.domain.domid, self._xenstore()

        def dump() -> None:
            try:
                self._early_dump = (self._t(), xs.domain_dump(domid))
            except (XenpvhError, OSError) as e:
                log.debug("early XenStore dump failed: %s", e)

        self._early_dump_thread = threading.Thread(target=dump, name="xenstore-dump", daemon=True)
        self._early_dump_thread.start()

    def _xenstore(self) -> XenStore:
        """One XenStore connection for the whole run: starting the relay costs an ssh
        channel and a python3 start on a slow dom0, too much to repeat every poll."""
        with self._xs_lock:
            if self._xs is None:
                self._xs = self._exits.enter_context(self._xenstore_factory(self.host))
                self._xs_opened = self._xs  # kept past the close, for its counters
            return self._xs

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

    def _t(self) -> float:
        return round(time.monotonic() - self.times.start, 3)

    def _device_failure(self, check: DeviceCheck) -> Verdict:
        """Fail the xenbus stage naming the stuck devices; later stages are not reached."""
        base = self._checker_verdict("xenbus device check failed")
        return device_failure(base, check.problem, self.xenbus_grace)

    def _checker_verdict(self, reason: str) -> Verdict:
        return self.checker.verdict if self.checker.done else self.checker.finish(reason)

    # -- decide -----------------------------------------------------------------------------

    def _decide(self, verdict: Verdict) -> Verdict:
        verdict.meta.setdefault("decided_by", "checker")
        if self.device_check is not None:
            verdict.meta["xenstore_devices"] = [
                dataclasses.asdict(d) for d in self.device_check.devices
            ]
            verdict.meta["xenstore_check"] = self.device_check.result
        elif verdict.verdict == VerdictValue.PASS:
            # A pass without the xenbus stage ever passing means the profile has no xenbus
            # stage; say so rather than pretend the devices were checked.
            verdict.meta["xenstore_check"] = "not run (no xenbus stage passed)"
        return verdict

    def _error_verdict(self, value: VerdictValue, reason: str) -> Verdict:
        stages: list[StageResult] = []
        if self.checker is not None:
            with contextlib.suppress(Exception):
                stages = self._checker_verdict(reason).stages
        if not stages:
            stages = [StageResult(name=n) for n in _stage_names(self.profile)]
        return Verdict(verdict=value, reason=reason, stages=stages)

    def _host_fault(self) -> HostFault | None:
        """One of the host's own emulation faults, when the console shows its trigger and
        (for a fault with a judge) the judge confirms it from the whole console."""
        faults = emulation_faults(self.host)
        log_path = self.artifacts / "console.log"
        if not faults or not log_path.is_file():
            return None
        compiled = [(f, re.compile(f.pattern)) for f in faults]
        lines = self._console_lines(log_path)
        for i, line in enumerate(lines):
            for fault, pat in compiled:
                if not pat.search(line):
                    continue
                evidence = line.strip()[:200]
                if fault.confirm is not None:
                    finding = judge_fault(fault.confirm, lines[i:])
                    if finding is None:
                        continue  # looks alike, but the evidence is not there: the guest's
                    evidence = f"{evidence}; {finding.evidence}"
                return HostFault(fault.name, fault.why, evidence, self.host.name)
        return None

    @staticmethod
    def _console_lines(log: Path) -> list[str]:
        # console.log is capped by the capture; lines are bounded here too.
        with log.open("rb") as f:
            return [
                raw.decode("utf-8", errors="replace")
                for raw in iter(lambda: f.readline(MAX_FAULT_LINE), b"")
            ]

    # -- collect / destroy / report ---------------------------------------------------------

    def _collect(self) -> None:
        assert self.domain is not None
        domid = self.domain.domid
        problem = self._probe.problem()
        if problem:
            # xl and XenStore would each wait out their deadlines before the verdict.
            self.collect_errors.append(f"skipped: {problem}")
            return
        # Best effort: evidence that cannot be fetched is noted in the verdict's meta, it
        # does not change what the guest did.  The hypervisor log (an ssh exec) and the
        # XenStore dump (the relay's own channel) are fetched side by side: on a TCG dom0
        # each costs a second or more.

        def toolstack() -> None:
            self.toolstack.collect(self.artifacts)

        def xenstore() -> None:
            if self._early_dump_thread is not None:
                self._early_dump_thread.join(timeout=60)
            early = self._early_dump
            if early is not None and self._decided_pass:
                t, dump = early
                dump = f"# dumped when the devices connected, t={t:.1f}s into the run\n{dump}"
            else:
                dump = self._xenstore().domain_dump(domid)
            atomic_write_text(self.artifacts / "xenstore.txt", dump)

        with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="collect") as pool:
            jobs = {"toolstack": pool.submit(toolstack), "xenstore": pool.submit(xenstore)}
            for what, job in jobs.items():
                try:
                    job.result()
                except (XenpvhError, OSError) as e:
                    self.collect_errors.append(f"{what}: {e}")

    def _destroy(self) -> str:
        """Tear everything down; returns a problem description ('' when clean)."""
        self._destroy_started = True
        problems: list[str] = []
        if self.capture is not None:
            self.capture.close()
        with contextlib.suppress(Exception):
            self._exits.close()  # the XenStore relay; its failure must not stop the destroy
        self._xs = None
        if self._create_attempted:
            try:
                self.toolstack.destroy(self.domain_name)
            except Exception as e:
                problems.append(f"destroying {self.domain_name} failed: {e}")
                if isinstance(e, BrokenError) and not isinstance(e, CommandFailed):
                    return "; ".join(problems)  # the host does not answer: no more waiting
        if self._run_dir_made:
            try:
                console_log = f"/var/log/xen/console/guest-{self.domain_name}.log"
                self.host.run(["rm", "-rf", "--", self.run_dir, console_log], check=True)
            except Exception as e:
                problems.append(f"removing {self.run_dir} failed: {e}")
        return "; ".join(problems)

    def _upload_summary(self) -> dict[str, int]:
        """Bytes sent this run: kernel, ramdisk, hotplug scripts."""
        kinds = {}
        if self.spec is not None:
            kinds = {self.spec.kernel: "kernel", self.spec.ramdisk: "ramdisk"}
        out: dict[str, int] = {}
        for path, n in self.uploads.items():
            kind = kinds.get(path, "scripts")
            out[kind] = out.get(kind, 0) + n
        return out

    def _keeping(self, verdict: Verdict) -> bool:
        return (
            self.keep is not None
            and verdict.verdict == VerdictValue.FAIL
            and self.domain is not None
            and self._run_dir_made
        )

    def _keep(self, verdict: Verdict) -> str:
        """Leave the failed guest running (see xenpvh.run.keep); a guest that is gone
        already, or a keep that cannot be recorded, is destroyed as usual."""
        assert self.keep is not None and self.domain is not None
        if self.capture is not None:
            self.capture.close()  # frees the guest's one console slot for `xenpvh attach`
        with contextlib.suppress(Exception):
            self._exits.close()
        self._xs = None
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
            remote_root=self.remote_root,
        )
        try:
            if not xl_domain_exists(self.host, self.domain_name):
                log.info("run %s: the failed guest is gone already; nothing to keep", self.run_id)
                return self._destroy()
            keep_guest.keep(self.host, record)
        except Exception as e:
            log.warning("run %s: cannot keep the guest (%s); destroying it", self.run_id, e)
            return self._destroy()
        self.kept = record
        with contextlib.suppress(Exception):
            self._emit(KeptEvent(record))
        return ""

    def _destroy_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self._destroy()

    def _meta(self) -> dict[str, object]:
        spec = self.spec or self.point
        meta: dict[str, object] = {
            "run_id": self.run_id,
            "host": self.host.name,
            "toolstack": self.toolstack.name,
            "profile": getattr(self.profile, "name", str(self.profile)),
            "domain": self.domain_name,
            "domid": self.domain.domid if self.domain else None,
            "vcpus": spec.vcpus,
            "memory_mb": spec.memory_mb,
            "xen_version": self.prepared.xen_version if self.prepared else None,
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
        meta["xenstore_health"] = self._xenstore_health()
        if self.swept:
            meta["swept_stale_domains"] = self.swept
        if self.disk_copies:
            meta["disk_copies"] = self.disk_copies
        if self.uploads:
            # Bytes sent per upload (0: the host had the content-addressed file already).
            meta["uploads"] = self._upload_summary()
            meta["uploaded_bytes"] = sum(self.uploads.values())
        if self.kept is not None:
            meta["kept"] = keep_guest.as_dict(self.kept)
        if self.collect_errors:
            meta["collect_errors"] = self.collect_errors
        return meta

    def _xenstore_health(self) -> dict[str, int]:
        """How hard XenStore was to reach: the probe's questions and timeouts, and the
        relays the run's XenStore started and late replies it skipped (a slow dom0 shows
        timeouts and late replies; a dropped connection one more relay)."""
        health = {"probes": self._probe.probes, "timeouts": self._probe.timeouts}
        connection = getattr(self._xs_opened, "connection", None)
        for key in ("relays", "late_replies"):
            value = getattr(connection, key, None)
            if isinstance(value, int):
                health[key] = value
        return health


def _is_pass(ev: object, stage: str) -> bool:
    return isinstance(ev, StageEvent) and ev.stage == stage and ev.kind == EventKind.PASSED


def _xenbus_begun(ev: object) -> bool:
    """The xenbus stage is in progress, or the console showed one of its lines."""
    return (
        isinstance(ev, StageEvent)
        and ev.stage == XENBUS_STAGE
        and ev.kind in (EventKind.STARTED, EventKind.MATCHED, EventKind.PASSED)
    )


def _stage_names(profile: Any) -> list[str]:
    return [getattr(s, "name", s) for s in getattr(profile, "stages", ())]


__all__ = [
    "DEBIAN_GUEST_PREFIX",
    "DOMAIN_PREFIX",
    "GUESTKIT_PREFIX",
    "LEASE_FIND",
    "LEASE_SLACK",
    "MISSING_SCRIPT",
    "REMOTE_ROOT",
    "RUN_ID",
    "SCRATCH_FS",
    "SCRATCH_SCRIPT",
    "XENBUS_STAGE",
    "BootRun",
    "Timings",
    "new_run_id",
    "parse_leases",
    "remote_paths",
]
