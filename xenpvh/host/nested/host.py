"""NestedHost: the lifecycle of a Xen host under QEMU (boot cold or warm, stop, adopt a
detached one) and the Host protocol, delegated to an SSHHost on the forwarded port.

The QEMU process itself is `process`, the wait for ssh and `xl list` is `ready`; what the
host does meanwhile goes to its progress sink (and the log)."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from xenpvh.build.qemu import QemuBinary, resolve_qemu
from xenpvh.check.hosthang import HostHang
from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.base import EmulationFault
from xenpvh.host.hotplug import LEAN_SCRIPTS, HotplugScript
from xenpvh.host.image import DomImage, ImageBuilder
from xenpvh.host.image_recipe import ImageRecipe
from xenpvh.host.nested.delegate import DelegatedToDom0
from xenpvh.host.nested.process import (
    BIND_GRACE,
    qemu_alive,
    running_qemu_settings,
    serial_tail,
    start_qemu,
    stop_qemu,
)
from xenpvh.host.nested.qemu import DEFAULT_XEN_CMDLINE, TCG_FAULTS, QemuConfig, detect_accel
from xenpvh.host.nested.ready import SERIAL_TAIL, BootTimes, Machine, ssh_options, wait_ready
from xenpvh.host.nested.reap import make_run_dir, reap_stale_run_dirs
from xenpvh.host.nested.record import NestedRecord, NestedState, NestedStatus, state_dir
from xenpvh.host.nested.warm import (
    WARM_SNAPSHOT,
    copy_sparse,
    savevm,
    warm_key,
    warm_snapshot,
)
from xenpvh.host.ssh import SSHAddress, SSHHost
from xenpvh.util.progress import Note, ProgressSink, emit

log = logging.getLogger(__name__)


@dataclass
class NestedHost(DelegatedToDom0):
    """A Xen host under QEMU.  Use as a context manager, or up()/down()."""

    name: str = "nested"
    artifacts: Path | None = None
    xen_image: Path | None = None
    xen_cmdline: str = DEFAULT_XEN_CMDLINE
    dom0_cmdline: str | None = None
    recipe: ImageRecipe | None = None
    memory: str = "3G"
    cpus: int = 2
    accel: str | None = None
    # Multi-threaded TCG makes nested-SVM PVH guests triple-fault at random early in boot
    # (2 of 2 runs); single-threaded TCG booted 4 of 4.  Slower (~70 s vs ~40 s to ssh)
    # but a nested host that kills guests at random is worthless.
    # Still so with both QEMU patches (2026-12-03): 2-vCPU kit guests 30 % faster, but a
    # 4-vCPU kit and a 1-vCPU Debian guest triple-faulted (`d4v2 Triple fault`), 2 of 6 boots.
    tcg_thread: str | None = "single"
    boot_timeout: float = 300.0
    # Resume a saved, booted machine (a qcow2 snapshot beside the image, made on first use)
    # instead of booting cold: ~5 s instead of ~75 s.  Falls back to a cold boot if the
    # resume fails.
    warm: bool = True
    warm_timeout: float = 90.0
    # Which qemu-system-x86_64 runs the host: "patched" (xenpvh's build of Debian's QEMU with
    # the nested-SVM interrupt fix, built on first use), "system" (Debian's binary) or a path.
    qemu: str = "patched"
    # The resolved binary; set by up() (or by a caller that resolved it already).
    qemu_binary: QemuBinary | None = None
    # xenpvh's lean hotplug scripts instead of Debian's (6 s of every create and 3 s of
    # every destroy under TCG; see xenpvh.host.hotplug).  The guest sees the same devices.
    lean_hotplug: bool = True
    # Where the host reports what it does (QEMU and image builds, the wait for ssh); None:
    # only the log.
    progress: ProgressSink | None = None
    state_file: Path = field(default_factory=lambda: state_dir() / "state.json")

    state: NestedState = field(default=NestedState.ABSENT, init=False)
    times: BootTimes = field(default_factory=BootTimes, init=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _record: NestedRecord | None = field(default=None, init=False, repr=False)
    _ssh: SSHHost | None = field(default=None, init=False, repr=False)
    _image: DomImage | None = field(default=None, init=False, repr=False)
    _detached: bool = field(default=False, init=False, repr=False)
    _tmp: Path | None = field(default=None, init=False, repr=False)
    # Set when a command found the machine hung (xenpvh.host.nested.hang); cleared by a boot.
    _hung: HostHang | None = field(default=None, init=False, repr=False)

    # -- properties -----------------------------------------------------------------------

    @property
    def emulation_faults(self) -> tuple[EmulationFault, ...]:
        """Guest crashes that are QEMU's doing on this host (see EmulationFault).

        The patched QEMU fixes the fault TCG_FAULTS describes, so on it the signature is the
        guest's again: were the fix incomplete, the bench would count it as a failure
        instead of a retry hiding it."""
        if (self.accel or detect_accel()) != "tcg" or self.qemu == "patched":
            return ()
        return TCG_FAULTS

    @property
    def hotplug_scripts(self) -> tuple[HotplugScript, ...]:
        return LEAN_SCRIPTS if self.lean_hotplug else ()

    def describe(self) -> dict[str, object]:
        """What this host is, for `verdict.json` (`host_details`)."""
        details: dict[str, object] = {
            "kind": "nested",
            "accel": self.accel or detect_accel(),
            "cpus": self.cpus,
            "memory": self.memory,
            "tcg_thread": self.tcg_thread,
            "xen_image": str(self.xen_image or "") or None,
            "hotplug_scripts": "xenpvh-lean" if self.lean_hotplug else "debian",
        }
        if self.qemu_binary is not None:
            details["qemu"] = self.qemu_binary.describe()
        elif self._record is not None:
            details["qemu"] = {"path": self._record.qemu}
            # An attached host (started by another process) is described by what its QEMU
            # runs with, not by this object's defaults.
            details.update(running_qemu_settings(self._record.pid))
        return details

    @property
    def serial_log(self) -> Path:
        if self._record is None:
            raise BrokenError(f"nested host {self.name} is {self.state.value}: no serial log")
        return Path(self._record.serial_log)

    @property
    def ssh_port(self) -> int:
        if self._record is None:
            raise BrokenError(f"nested host {self.name} is {self.state.value}: no ssh port")
        return self._record.ssh_port

    @property
    def ssh(self) -> SSHHost:
        if self.state is not NestedState.READY or self._ssh is None:
            raise BrokenError(f"nested host {self.name} is {self.state.value}, not ready")
        return self._ssh

    def ssh_command(self) -> list[str]:
        """An OpenSSH command line reaching the dom0 (host key verified)."""
        return self._require_record().ssh_command()

    # -- lifecycle ------------------------------------------------------------------------

    def up(self, *, detach: bool = False) -> NestedHost:
        if self.state in (NestedState.BOOTING, NestedState.READY):
            return self
        if detach:
            old = NestedRecord.load(self.state_file)
            if old is not None and old.alive():
                raise BlockedError(
                    f"a detached nested host already runs (pid {old.pid}, port "
                    f"{old.ssh_port}); `down()` it first"
                )
        self._ensure_qemu()
        image = self._ensure_image()
        reap_stale_run_dirs()
        self.state = NestedState.BOOTING
        if self.warm:
            try:
                # Making the snapshot is a cold boot: if that fails, so would the fallback.
                snap = self._warm_snapshot(image)
            except BaseException:
                self.state = NestedState.FAILED
                raise
            if snap is not None:
                try:
                    self._boot(image, detach, warm_from=snap)
                    self.state = NestedState.READY
                    return self
                except BlockedError:
                    raise
                except Exception as e:
                    # An unusable snapshot must not cost a run: boot cold instead.
                    self._log(f"nested host: warm start failed ({e}); booting cold")
                    self.state = NestedState.BOOTING
        self._boot(image, detach, warm_from=None)
        self.state = NestedState.READY
        return self

    def _boot(self, image: DomImage, detach: bool, *, warm_from: Path | None) -> None:
        try:
            self._tmp = make_run_dir()
            if warm_from is None:
                self._start_qemu(image, detach, disk=image.disk)
                self._wait_ready(self.boot_timeout)
            else:
                disk = self._tmp / "warm.qcow2"
                self._log("nested host: copying the saved machine state")
                copy_sparse(warm_from, disk)
                self._start_qemu(image, detach, disk=disk, loadvm=WARM_SNAPSHOT)
                self.times.warm = True
                self._wait_ready(self.warm_timeout)
                # The resumed dom0's clock stands at the moment of the save; setting it also
                # updates Xen's wallclock, which guests read at boot.
                assert self._ssh is not None
                self._ssh.run(["date", "-u", "-s", f"@{int(time.time())}"], timeout=30, check=True)
        except BaseException:
            self.state = NestedState.FAILED
            tail = self._serial_tail()
            self._stop(graceful=False)
            self.state = NestedState.FAILED
            if tail:
                self._log(f"nested host failed; serial log tail:\n{tail}")
            raise

    def down(self) -> None:
        """Quit QEMU (QMP), then kill; always reaps and cleans up."""
        if self._record is None:
            self._adopt()
        if self._record is None:
            self.state = NestedState.STOPPED if self.state is not NestedState.ABSENT else self.state
            return
        self.state = NestedState.STOPPING
        # The dom0 disk is a throw-away (snapshot=on, or a temp copy of the saved state):
        # nothing is lost by quitting QEMU at once, and a poweroff under TCG costs ~15 s
        # of every command's exit.
        self._stop(graceful=False)
        self.state = NestedState.STOPPED

    def status(self) -> NestedStatus:
        if self._record is None:
            self._adopt()
        r = self._record
        if r is None:
            return NestedStatus(self.state)
        if not self._qemu_alive():
            return NestedStatus(NestedState.STOPPED, r.pid, r.ssh_port, Path(r.serial_log))
        return NestedStatus(
            self.state, r.pid, r.ssh_port, Path(r.serial_log), time.time() - r.started
        )

    @classmethod
    def attach(
        cls, *, state_file: Path | None = None, progress: ProgressSink | None = None
    ) -> NestedHost:
        """The detached nested host started by an earlier process; BrokenError if none."""
        h = cls(progress=progress, state_file=state_file or state_dir() / "state.json")
        h._adopt()
        if h._record is None:
            raise BrokenError(f"no running nested host (state file {h.state_file})")
        r = h._record
        h._ssh = SSHHost(
            SSHAddress("root", "127.0.0.1", r.ssh_port),
            name=h.name,
            options=ssh_options(Path(r.client_key), Path(r.known_hosts)),
        )
        h.state = NestedState.READY
        return h

    @property
    def booted_qemu(self) -> str:
        """The QEMU binary this host runs on."""
        if self._record is not None:
            return self._record.qemu
        return str(self.qemu_binary.path) if self.qemu_binary is not None else ""

    @property
    def booted_xen(self) -> str:
        """The Xen image this host booted ("" for the dom0 image's own)."""
        return self._record.xen if self._record is not None else str(self.xen_image or "")

    def __enter__(self) -> NestedHost:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- internals ------------------------------------------------------------------------

    def _ensure_qemu(self) -> QemuBinary:
        if self.qemu_binary is None:
            self.qemu_binary = resolve_qemu(self.qemu, progress=self.progress)
            self._log(
                f"nested host: QEMU {self.qemu_binary.origin}: {self.qemu_binary.version} "
                f"({self.qemu_binary.path})"
            )
        return self.qemu_binary

    def _ensure_image(self) -> DomImage:
        if self._image is None:
            rep = ImageBuilder(self.recipe, progress=self.progress).ensure()
            self._image = rep.image
        return self._image

    def _warm_key(self, image: DomImage) -> str:
        return warm_key(
            image,
            xen=self.xen_image or image.xen,
            xen_cmdline=self.xen_cmdline,
            dom0_cmdline=self.dom0_cmdline or image.dom0_cmdline,
            memory=self.memory,
            cpus=self.cpus,
            accel=self.accel or detect_accel(),
            tcg_thread=self.tcg_thread,
            qemu=self._ensure_qemu(),
        )

    def _warm_snapshot(self, image: DomImage) -> Path | None:
        """The saved state of this configuration booted to ready; made on first use by one
        cold boot and `savevm`.  None when saving failed (the caller boots cold)."""
        return warm_snapshot(image, self._warm_key(image), self._save_booted, self._log)

    def _save_booted(self, image: DomImage, part: Path) -> bool:
        """Boot cold on the overlay `part` until ready, and `savevm` the machine into it."""
        try:
            self._tmp = make_run_dir()
            self._start_qemu(image, False, disk=part)
            self._wait_ready(self.boot_timeout)
            assert self._ssh is not None and self._record is not None
            self._ssh.run(["sync"], timeout=60, check=True)
            self._ssh.close()
            try:
                savevm(Path(self._record.monitor))
            except BrokenError as e:
                self._log(f"nested host: cannot save the machine state: {e}")
                return False
            return True
        finally:
            self._stop(graceful=False)

    def _start_qemu(
        self, image: DomImage, detach: bool, *, disk: Path, loadvm: str | None = None
    ) -> None:
        qemu = self._ensure_qemu()
        xen = self.xen_image or image.xen
        if not xen.is_file():
            raise BlockedError(f"Xen image {xen} does not exist")
        # self._tmp is short: a UNIX socket path must fit in 108 bytes.
        assert self._tmp is not None
        art = Path(self.artifacts) if self.artifacts is not None else self._tmp
        art.mkdir(parents=True, exist_ok=True)
        serial = art / "host-serial.log"
        monitor = self._tmp / "qmp.sock"
        accel = self.accel or detect_accel()
        config = QemuConfig(
            xen=xen,
            vmlinuz=image.vmlinuz,
            initrd=image.initrd,
            disk=disk,
            disk_format="raw" if loadvm is None and disk == image.disk else "qcow2",
            snapshot=disk == image.disk,
            loadvm=loadvm,
            dom0_cmdline=self.dom0_cmdline or image.dom0_cmdline,
            ssh_port=0,  # start_qemu picks a free one
            serial_log=serial,
            monitor=monitor,
            xen_cmdline=self.xen_cmdline,
            accel=accel,
            memory=self.memory,
            cpus=self.cpus,
            tcg_thread=self.tcg_thread,
            qemu=str(qemu.path),
            # QEMU's own log for debugging the emulation (e.g. "int,cpu_reset"): big.
            debug=os.environ.get("XENPVH_QEMU_DEBUG") or None,
            debug_log=art / "qemu-debug.log",
        )
        known_hosts = self._tmp / "known_hosts"
        self._proc, config = start_qemu(
            config,
            detach=detach,
            qemu_log=art / "qemu.log",
            on_port=lambda port: known_hosts.write_text(image.known_hosts_line("127.0.0.1", port)),
        )
        port = config.ssh_port
        self.times = BootTimes(qemu_started=time.monotonic() - BIND_GRACE)
        self._hung = None  # a new machine
        self._record = NestedRecord(
            pid=self._proc.pid,
            ssh_port=port,
            serial_log=str(serial),
            monitor=str(monitor),
            run_dir=str(self._tmp),
            client_key=str(image.client_key),
            known_hosts=str(known_hosts),
            started=time.time() - BIND_GRACE,
            qemu=str(qemu.path),
            xen=str(self.xen_image or ""),
        )
        self._detached = detach
        if detach:
            self._record.save(self.state_file)
        else:
            atexit.register(self._atexit)
        self._log(
            f"nested host: QEMU pid {self._proc.pid} ({accel}), ssh on 127.0.0.1:{port}, "
            f"serial {serial}"
        )
        self._ssh = SSHHost(
            SSHAddress("root", "127.0.0.1", port),
            name=self.name,
            options=ssh_options(image.client_key, known_hosts, connect_timeout=10.0),
        )

    def _wait_ready(self, timeout: float) -> None:
        assert self._ssh is not None
        machine = Machine(
            alive=self._qemu_alive,
            exit_status=lambda: self._proc.poll() if self._proc is not None else None,
            serial_tail=self._serial_tail,
        )
        ready = wait_ready(
            self._ssh,
            machine,
            started=self.times.qemu_started,
            timeout=timeout,
            progress=self.progress,
        )
        self.times.ssh_ready, self.times.xl_ready = ready.ssh_ready, ready.xl_ready
        record = self._require_record()
        self._ssh.options = ssh_options(Path(record.client_key), Path(record.known_hosts))

    def _qemu_alive(self) -> bool:
        return qemu_alive(self._proc, self._record)

    def _adopt(self) -> None:
        """Find a detached QEMU from the state file (a later process calling status/down)."""
        rec = NestedRecord.load(self.state_file)
        if rec is None:
            return
        if not rec.alive():
            self.state_file.unlink(missing_ok=True)
            self.state = NestedState.STOPPED
            return
        self._record = rec
        self._detached = True
        self._tmp = Path(rec.run_dir)
        self.state = NestedState.READY

    def _stop(self, *, graceful: bool) -> None:
        r = self._record
        try:
            ssh = self._ssh_for_stop() if graceful and self._qemu_alive() else None
            stop_qemu(self._proc, r, poweroff=ssh)
        finally:
            if self._ssh is not None:
                self._ssh.close()
            if self._proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(5)
            if self._detached:
                rec = NestedRecord.load(self.state_file)
                if rec is not None and r is not None and rec.pid == r.pid:
                    self.state_file.unlink(missing_ok=True)
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None
            with contextlib.suppress(Exception):
                atexit.unregister(self._atexit)
            self._ssh = None

    def _ssh_for_stop(self) -> SSHHost | None:
        if self._ssh is not None:
            return self._ssh
        r = self._record
        if r is None:
            return None
        self._ssh = SSHHost(
            SSHAddress("root", "127.0.0.1", r.ssh_port),
            name=self.name,
            options=ssh_options(Path(r.client_key), Path(r.known_hosts), connect_timeout=5.0),
        )
        return self._ssh

    def _atexit(self) -> None:
        with contextlib.suppress(Exception):
            self._stop(graceful=False)

    def _require_record(self) -> NestedRecord:
        if self._record is None:
            raise BrokenError(f"nested host {self.name} is {self.state.value}: not started")
        return self._record

    def _serial_tail(self, n: int = SERIAL_TAIL) -> str:
        return "" if self._record is None else serial_tail(self._record.serial_log, n)

    def _log(self, msg: str) -> None:
        log.info("%s", msg)
        emit(self.progress, Note(msg))
