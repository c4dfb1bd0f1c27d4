"""NestedHost: the lifecycle of a Xen host under QEMU (boot cold or warm, wait for ssh and
`xl list`, stop, adopt a detached one) and the Host protocol, delegated to an SSHHost on the
forwarded port."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pexpect.spawnbase import SpawnBase
from rich.console import Console
from rich.status import Status

from xenpvh.build.qemu import QemuBinary, resolve_qemu
from xenpvh.check.hosthang import HostHang
from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.base import ByteStream, CommandResult, EmulationFault
from xenpvh.host.hotplug import LEAN_SCRIPTS, HotplugScript
from xenpvh.host.image import DomImage, ImageBuilder, ImageRecipe
from xenpvh.host.nested import hang
from xenpvh.host.nested.qemu import (
    DEFAULT_XEN_CMDLINE,
    TCG_FAULTS,
    QemuConfig,
    detect_accel,
    free_port,
    ssh_banner_ready,
)
from xenpvh.host.nested.reap import make_run_dir, reap_partial_snapshots, reap_stale_run_dirs
from xenpvh.host.nested.record import NestedRecord, NestedState, NestedStatus, state_dir
from xenpvh.host.nested.warm import (
    WARM_KEEP,
    WARM_SNAPSHOT,
    copy_sparse,
    create_overlay,
    prune_warm,
    savevm,
    warm_key,
)
from xenpvh.host.ssh import HostKeyRejected, SSHAddress, SSHHost, SSHOptions
from xenpvh.util.fs import flock

# Lines of the serial log quoted when a boot fails.
SERIAL_TAIL = 40
# Every QEMU this process started, by PID (xenpvh.leaks checks none outlives its test).
STARTED_QEMU: list[int] = []


# -- the host ------------------------------------------------------------------------------


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: QEMU gets SIGKILL when we die, even by kill -9.
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def running_qemu_settings(pid: int, proc: Path = Path("/proc")) -> dict[str, object]:
    """accel, tcg_thread, cpus and memory read off a running QEMU's command line ({} when
    it cannot be read)."""
    try:
        argv = [
            a.decode(errors="replace")
            for a in (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
        ]
    except OSError:
        return {}
    out: dict[str, object] = {}
    for flag, value in itertools.pairwise(argv):
        if flag == "-accel":
            accel, _, opts = value.partition(",")
            out["accel"] = accel
            opt = dict(o.partition("=")[::2] for o in opts.split(",") if o)
            out["tcg_thread"] = opt.get("thread") if accel == "tcg" else None
        elif flag == "-smp" and value.isdigit():
            out["cpus"] = int(value)
        elif flag == "-m":
            out["memory"] = value
    return out


@dataclass
class BootTimes:
    qemu_started: float = 0.0
    ssh_ready: float | None = None  # seconds after QEMU started
    xl_ready: float | None = None
    warm: bool = False  # resumed from a saved machine state


@dataclass
class NestedHost:
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
    console: Console | None = None
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
        r = self._require_record()
        return [
            "ssh",
            "-i",
            r.client_key,
            "-p",
            str(r.ssh_port),
            "-o",
            f"UserKnownHostsFile={r.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "root@127.0.0.1",
        ]

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
                    self._log(f"[yellow]nested host: warm start failed ({e}); booting cold[/]")
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
                self._log(f"[red]nested host failed; serial log tail:[/]\n{tail}")
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
        cls, *, state_file: Path | None = None, console: Console | None = None
    ) -> NestedHost:
        """The detached nested host started by an earlier process; BrokenError if none."""
        h = cls(console=console, state_file=state_file or state_dir() / "state.json")
        h._adopt()
        if h._record is None:
            raise BrokenError(f"no running nested host (state file {h.state_file})")
        r = h._record
        h._ssh = SSHHost(
            SSHAddress("root", "127.0.0.1", r.ssh_port),
            name=h.name,
            options=_ssh_options(Path(r.client_key), Path(r.known_hosts)),
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

    # -- Host protocol (delegated) --------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 120.0,
        input: bytes | None = None,
        check: bool = False,
    ) -> CommandResult:
        self._raise_if_hung()
        ssh = self.ssh
        record = self._record
        if record is None or timeout <= hang.PROBE_AFTER:
            return ssh.run(argv, timeout=timeout, input=input, check=check)
        # A long command on a host a guest froze would wait out its timeout: sample the
        # vCPUs meanwhile, and name the hang (xenpvh.host.nested.hang).
        monitor = Path(record.monitor)
        try:
            return hang.watched_call(
                lambda: ssh.run(argv, timeout=timeout, input=input, check=check),
                lambda: hang.sample_vcpus(monitor),
                what=f" while `{' '.join(argv[:2])}` ran",
                on_hang=ssh.close,
            )
        except hang.HostHung as e:
            # A hung machine does not come back: later commands fail at once.
            self._hung = e.finding
            raise

    def _raise_if_hung(self) -> None:
        if self._hung is not None:
            raise hang.HostHung(self._hung, " (found earlier in this run)")

    def put(self, local: Path, remote: str, *, mode: int | None = None) -> bool:
        self._raise_if_hung()
        return self.ssh.put(local, remote, mode=mode)

    def put_bytes(self, data: bytes, remote: str, *, mode: int = 0o644) -> None:
        self.ssh.put_bytes(data, remote, mode=mode)

    def get(self, remote: str, local: Path) -> None:
        self._raise_if_hung()
        self.ssh.get(remote, local)

    def spawn(self, argv: Sequence[str], *, timeout: float = 30.0) -> SpawnBase:
        return self.ssh.spawn(argv, timeout=timeout)

    def open_stream(self, argv: Sequence[str]) -> ByteStream:
        return self.ssh.open_stream(argv)

    def close(self) -> None:
        """Drop the ssh connection (the next call reconnects).  Stopping the machine is
        `down()`'s job: a toolstack closing its Host must not pull the plug on the host."""
        if self._ssh is not None:
            self._ssh.close()

    # -- internals ------------------------------------------------------------------------

    def _ensure_qemu(self) -> QemuBinary:
        if self.qemu_binary is None:
            if self.console is not None:
                from xenpvh.build.command import make_progress

                with make_progress(self.console) as progress:
                    self.qemu_binary = resolve_qemu(self.qemu, progress=progress)
            else:
                self.qemu_binary = resolve_qemu(self.qemu)
            self._log(
                f"nested host: QEMU {self.qemu_binary.origin}: {self.qemu_binary.version} "
                f"({self.qemu_binary.path})"
            )
        return self.qemu_binary

    def _ensure_image(self) -> DomImage:
        if self._image is None:
            rep = ImageBuilder(self.recipe, console=self.console).ensure()
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
        key = self._warm_key(image)
        path = image.dir / f"warm-{key}.qcow2"
        if path.is_file():
            os.utime(path)  # most recently used survives pruning
            return path
        with flock(image.dir / ".warm.lock"):
            if path.is_file():
                return path
            reap_partial_snapshots(image.dir)  # of a process killed while saving one
            self._log("nested host: no saved machine state yet: booting cold once to save one")
            part = image.dir / f".warm-{key}-{os.getpid()}.qcow2"
            t0 = time.monotonic()
            try:
                create_overlay(image.disk, part)
                self._tmp = make_run_dir()
                self._start_qemu(image, False, disk=part)
                self._wait_ready(self.boot_timeout)
                assert self._ssh is not None and self._record is not None
                self._ssh.run(["sync"], timeout=60, check=True)
                self._ssh.close()
                try:
                    savevm(Path(self._record.monitor))
                except BrokenError as e:
                    self._log(f"[yellow]nested host: cannot save the machine state: {e}[/]")
                    return None
                self._stop(graceful=False)
                os.rename(part, path)
            finally:
                self._stop(graceful=False)
                part.unlink(missing_ok=True)
            self._log(f"nested host: machine state saved in {time.monotonic() - t0:.0f}s")
            prune_warm(image.dir, keep=WARM_KEEP)
        return path

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
        last_err = ""
        for _attempt in range(3):
            port = free_port()
            cfg = QemuConfig(
                xen=xen,
                vmlinuz=image.vmlinuz,
                initrd=image.initrd,
                disk=disk,
                disk_format="raw" if loadvm is None and disk == image.disk else "qcow2",
                snapshot=disk == image.disk,
                loadvm=loadvm,
                dom0_cmdline=self.dom0_cmdline or image.dom0_cmdline,
                ssh_port=port,
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
            argv = cfg.argv()
            known_hosts = self._tmp / "known_hosts"
            known_hosts.write_text(image.known_hosts_line("127.0.0.1", port))
            qemu_log = art / "qemu.log"
            with qemu_log.open("wb") as log:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=None if detach else _die_with_parent,
                    start_new_session=detach,
                )
            STARTED_QEMU.append(self._proc.pid)  # for the live tests' leak check, by PID
            self.times = BootTimes(qemu_started=time.monotonic())
            self._hung = None  # a new machine
            self._record = NestedRecord(
                pid=self._proc.pid,
                ssh_port=port,
                serial_log=str(serial),
                monitor=str(monitor),
                run_dir=str(self._tmp),
                client_key=str(image.client_key),
                known_hosts=str(known_hosts),
                started=time.time(),
                qemu=str(qemu.path),
                xen=str(self.xen_image or ""),
            )
            self._detached = detach
            # A port taken between free_port() and QEMU's bind makes QEMU exit at once.
            time.sleep(0.5)
            if self._proc.poll() is None:
                break
            last_err = qemu_log.read_text(errors="replace")[-2000:]
            if "forward" not in last_err:
                raise BrokenError(f"QEMU exited at start ({self._proc.returncode}): {last_err}")
        else:
            raise BrokenError(f"QEMU could not forward an ssh port: {last_err}")
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
            options=_ssh_options(image.client_key, known_hosts, connect_timeout=10.0),
        )

    def _wait_ready(self, timeout: float) -> None:
        assert self._ssh is not None
        deadline = self.times.qemu_started + timeout
        status = self.console.status("booting nested Xen…") if self.console else None
        with status or contextlib.nullcontext():
            self._poll(deadline, timeout, self._try_ssh, "ssh", status)
            self.times.ssh_ready = time.monotonic() - self.times.qemu_started
            self._log(f"nested host: ssh ready after {self.times.ssh_ready:.1f}s")
            self._poll(deadline, timeout, self._try_xl, "xl list", status)
            self.times.xl_ready = time.monotonic() - self.times.qemu_started
            self._log(f"nested host: `xl list` works after {self.times.xl_ready:.1f}s")
        self._ssh.options = _ssh_options(
            Path(self._require_record().client_key), Path(self._require_record().known_hosts)
        )

    def _poll(
        self,
        deadline: float,
        timeout: float,
        attempt: Callable[[], bool],
        what: str,
        status: Status | None,
    ) -> None:
        while True:
            if not self._qemu_alive():
                rc = self._proc.poll() if self._proc is not None else None
                raise BrokenError(
                    f"nested host QEMU exited (status {rc}) while waiting for {what}; "
                    f"serial log tail:\n{self._serial_tail()}"
                )
            if attempt():
                return
            if time.monotonic() > deadline:
                raise BrokenError(
                    f"nested host: no {what} within {timeout:g}s; serial log "
                    f"tail:\n{self._serial_tail()}"
                )
            if status is not None:
                last = self._serial_tail(1).strip()[:100]
                el = time.monotonic() - self.times.qemu_started
                status.update(f"nested Xen: waiting for {what} ({el:.0f}s) {last}")
            time.sleep(1.0)

    def _try_ssh(self) -> bool:
        assert self._ssh is not None
        # QEMU's user-net accepts on the forwarded port long before sshd listens; probing
        # for the banner first keeps paramiko from logging a traceback per attempt.
        if not ssh_banner_ready("127.0.0.1", self.ssh_port):
            return False
        try:
            self._ssh.connect()
            return True
        except HostKeyRejected:
            raise  # someone else answers on our port: never retry
        except BrokenError:
            return False

    def _try_xl(self) -> bool:
        assert self._ssh is not None
        try:
            r = self._ssh.run(["xl", "list"], timeout=30)
        except BrokenError:
            return False
        return r.ok and "Domain-0" in r.out

    def _qemu_alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self._record is not None and self._record.alive()

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
            if r is not None and self._qemu_alive():
                ssh = self._ssh_for_stop() if graceful else None
                if ssh is not None:
                    # Whatever ssh says, the monitor and SIGKILL below still stop QEMU.
                    with contextlib.suppress(BrokenError, BlockedError):
                        ssh.run(["poweroff"], timeout=10)
                    self._wait_exit(30)
                if self._qemu_alive():
                    self._qmp_quit(Path(r.monitor))
                    self._wait_exit(10)
                if self._qemu_alive():
                    self._signal(signal.SIGKILL)
                    self._wait_exit(10)
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
            options=_ssh_options(Path(r.client_key), Path(r.known_hosts), connect_timeout=5.0),
        )
        return self._ssh

    def _wait_exit(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and self._qemu_alive():
            time.sleep(0.2)

    def _signal(self, sig: int) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(sig)
        elif self._record is not None and self._record.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._record.pid, sig)

    def _qmp_quit(self, sock_path: Path) -> None:
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(sock_path))
            s.recv(4096)  # greeting
            s.sendall(b'{"execute":"qmp_capabilities"}\n')
            s.recv(4096)
            s.sendall(b'{"execute":"quit"}\n')
            with contextlib.suppress(OSError):
                s.recv(4096)

    def _atexit(self) -> None:
        with contextlib.suppress(Exception):
            self._stop(graceful=False)

    def _require_record(self) -> NestedRecord:
        if self._record is None:
            raise BrokenError(f"nested host {self.name} is {self.state.value}: not started")
        return self._record

    def _serial_tail(self, n: int = SERIAL_TAIL) -> str:
        if self._record is None:
            return ""
        try:
            with open(self._record.serial_log, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 16384))
                data = f.read()
        except OSError:
            return ""
        lines = data.decode(errors="replace").replace("\r", "").splitlines()
        return "\n".join(ln[:300] for ln in lines[-n:])

    def _log(self, msg: str) -> None:
        if self.console is not None:
            self.console.log(msg)


def _ssh_options(key: Path, known_hosts: Path, *, connect_timeout: float = 15.0) -> SSHOptions:
    # Only the pinned key of this image is trusted, and only our generated client key offered.
    return SSHOptions(
        identity=key,
        known_hosts=known_hosts,
        use_system_known_hosts=False,
        allow_agent=False,
        connect_timeout=connect_timeout,
        keepalive=15,
    )
