"""NestedHost: a real Xen host that xenpvh boots itself under QEMU on this machine.

QEMU's multiboot loader starts Xen (an ELF image) with the Debian dom0 kernel and initrd as
modules; the dom0 runs from the cached image (`image.py`) with `snapshot=on`, so every boot
starts pristine.  Once ssh answers (with the image's pinned host key) and `xl list` works,
the host is `ready` and every Host call is delegated to an SSHHost on the forwarded port.

Warm start (default): the first up() of a configuration boots cold once and saves the ready
machine (`savevm` into a qcow2 overlay of the image, kept beside it in the cache); later
up() calls resume a throw-away copy of it with `-loadvm` (~5-10 s instead of ~75 s+ cold).
If resuming fails, up() boots cold.  `warm=False` always boots cold.

States: absent → booting → ready → stopping → stopped, and failed from booting/ready.
A QEMU process never outlives the process that started it (PR_SET_PDEATHSIG, atexit and the
context manager), unless `up(detach=True)`: then a state file lets a later process find it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import enum
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pexpect.spawnbase import SpawnBase
from rich.console import Console
from rich.status import Status

from xenpvh.build.qemu import QemuBinary, fingerprint, resolve_qemu
from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.base import ByteStream, CommandResult, EmulationFault
from xenpvh.host.hotplug import LEAN_SCRIPTS, HotplugScript
from xenpvh.host.image import DomImage, ImageBuilder, ImageRecipe
from xenpvh.host.qmp import Qmp
from xenpvh.host.ssh import HostKeyRejected, SSHAddress, SSHHost, SSHOptions
from xenpvh.util.fs import cache_root, flock, sha256_bytes, sha256_file

DEFAULT_XEN_CMDLINE = (
    "console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M loglvl=all guest_loglvl=all"
)
QEMU = "qemu-system-x86_64"
# Guest crashes caused by QEMU/TCG's software SVM, not by the guest or Xen.  Debian's QEMU
# (7.2 and every later release) re-delivers an interrupt that VMRUN injected; Linux PVH guests
# then die in their interrupt entry code (`BUG: ENTRY_TRAMPOLINE stack guard page was hit`),
# measured here on 1 of 20 plain guest-kit boots and more often the longer a guest runs in
# user space.  The trigger line alone is not enough: the judge must find the upcall taken
# while its own entry stub ran with IF=0 (see xenpvh.check.faults), which no real CPU does.
# xenpvh's patched QEMU fixes it; a host running Debian's (or a user's) QEMU declares it.
TCG_FAULTS: tuple[EmulationFault, ...] = (
    EmulationFault(
        name="tcg-svm-double-delivery",
        pattern=r"BUG: ENTRY_TRAMPOLINE stack guard page was hit",
        why=(
            "QEMU TCG's nested SVM delivered Xen's upcall a second time while the guest's "
            "entry code ran with interrupts off (a fault of this QEMU, not of the guest; "
            "`--qemu patched` fixes it)"
        ),
        confirm="xen-upcall-redelivered",
    ),
)
# The internal snapshot name of a booted, ready host inside a warm-*.qcow2 file.
WARM_SNAPSHOT = "xenpvh-ready"
# Bump when what a warm snapshot contains changes in a way its key would not see.
WARM_VERSION = 1
# Saved machine states kept per image (each is a qcow2 holding dom0's disk delta and RAM).
WARM_KEEP = 3
# Lines of the serial log quoted when a boot fails.
SERIAL_TAIL = 40


class NestedState(enum.Enum):
    ABSENT = "absent"
    BOOTING = "booting"
    READY = "ready"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


# -- accelerator ---------------------------------------------------------------------------


def detect_accel(dev: Path = Path("/dev/kvm"), sys_module: Path = Path("/sys/module")) -> str:
    """ "kvm" only where /dev/kvm can run an ordinary guest (kvm_intel/kvm_amd); else "tcg".

    A paravirtual KVM module (kvm_pvm) also provides /dev/kvm but needs a special guest
    kernel, so its mere presence proves nothing.
    """
    if not dev.exists() or not os.access(dev, os.R_OK | os.W_OK):
        return "tcg"
    if (sys_module / "kvm_pvm").exists():
        return "tcg"
    if (sys_module / "kvm_intel").exists() or (sys_module / "kvm_amd").exists():
        return "kvm"
    return "tcg"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def ssh_banner_ready(host: str, port: int, timeout: float = 2.0) -> bool:
    """Does something on host:port speak ssh (send an `SSH-` banner)?"""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


# -- the QEMU command line -----------------------------------------------------------------


@dataclass(frozen=True)
class QemuConfig:
    """Everything that shapes the QEMU command line; `argv()` is pure."""

    xen: Path
    vmlinuz: Path
    initrd: Path
    disk: Path
    dom0_cmdline: str
    ssh_port: int
    serial_log: Path
    monitor: Path
    xen_cmdline: str = DEFAULT_XEN_CMDLINE
    accel: str = "tcg"
    memory: str = "3G"
    cpus: int = 2
    qemu: str = QEMU
    snapshot: bool = True
    # "single" or "multi" (MTTCG); None keeps QEMU's default.
    tcg_thread: str | None = None
    disk_format: str = "raw"
    # Name of an internal snapshot (in a qcow2 disk) to resume from instead of booting.
    loadvm: str | None = None

    def validate(self) -> None:
        # QEMU's multiboot loader splits -initrd at commas: a comma in a path or in dom0's
        # command line would silently become another module.
        for what, value in (
            ("dom0 kernel path", str(self.vmlinuz)),
            ("dom0 initrd path", str(self.initrd)),
            ("dom0 command line", self.dom0_cmdline),
            ("disk path", str(self.disk)),
        ):
            if "," in value:
                raise BlockedError(f"{what} {value!r} must not contain ',' (QEMU separator)")
        for what, value in (("xen command line", self.xen_cmdline), ("dom0", self.dom0_cmdline)):
            if any(c in value for c in "\n\r\0"):
                raise BlockedError(f"{what} command line must be one line: {value!r}")
        if self.accel not in ("kvm", "tcg"):
            raise BlockedError(f"accel must be 'kvm' or 'tcg', not {self.accel!r}")
        if not 1 <= self.ssh_port <= 65535:
            raise BlockedError(f"ssh port {self.ssh_port} out of range")
        if self.disk_format not in ("raw", "qcow2"):
            raise BlockedError(f"disk format must be raw or qcow2, not {self.disk_format!r}")
        if self.loadvm is not None and (self.snapshot or self.disk_format != "qcow2"):
            # The internal snapshot lives in the qcow2 file; QEMU exits on -loadvm with
            # snapshot=on.
            raise BlockedError("loadvm needs a qcow2 disk without snapshot=on")

    def argv(self) -> list[str]:
        self.validate()
        if self.accel == "kvm":
            accel = ["-accel", "kvm", "-cpu", "host"]
        else:
            # +npt: without it Xen finds no HAP and Debian's Xen (no shadow paging) cannot
            # create PVH guests at all.
            tcg = "tcg" if self.tcg_thread is None else f"tcg,thread={self.tcg_thread}"
            accel = ["-accel", tcg, "-cpu", "qemu64,+svm,+npt"]
        drive = f"file={self.disk},if=virtio,format={self.disk_format}"
        if self.snapshot:
            drive += ",snapshot=on"
        resume = ["-loadvm", self.loadvm] if self.loadvm is not None else []
        return [
            self.qemu,
            "-nodefaults",
            "-machine",
            "pc",
            *accel,
            "-m",
            self.memory,
            "-smp",
            str(self.cpus),
            "-kernel",
            str(self.xen),
            "-append",
            self.xen_cmdline,
            "-initrd",
            f"{self.vmlinuz} {self.dom0_cmdline},{self.initrd}",
            "-drive",
            drive,
            "-netdev",
            f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22",
            "-device",
            "virtio-net-pci,netdev=n0",
            "-serial",
            f"file:{self.serial_log}",
            "-display",
            "none",
            "-vga",
            "none",
            "-no-reboot",
            "-qmp",
            f"unix:{self.monitor},server=on,wait=off",
            *resume,
        ]


# -- the state file ------------------------------------------------------------------------


def state_dir() -> Path:
    rt = os.environ.get("XDG_RUNTIME_DIR")
    return Path(rt) / "xenpvh" / "nested" if rt else cache_root("nested")


@dataclass(frozen=True)
class NestedRecord:
    """What a later process needs to find, reach and stop a detached nested host."""

    pid: int
    ssh_port: int
    serial_log: str
    monitor: str
    run_dir: str
    client_key: str
    known_hosts: str
    started: float
    qemu: str = QEMU
    # The Xen image it booted ("" for the image's own, Debian's): a later `xenpvh boot`
    # reuses an `up` host only when it runs the Xen that boot asks for.
    xen: str = ""

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> NestedRecord | None:
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as e:
            raise BrokenError(f"nested host state file {path} is corrupt: {e}") from e

    def alive(self, proc: Path = Path("/proc")) -> bool:
        """Is pid still *our* QEMU (not a recycled pid)?"""
        try:
            cmdline = (proc / str(self.pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        if not cmdline or Path(cmdline[0].decode(errors="replace")).name != Path(self.qemu).name:
            return False
        return f"unix:{self.monitor},server=on,wait=off".encode() in cmdline


@dataclass(frozen=True)
class NestedStatus:
    state: NestedState
    pid: int | None = None
    ssh_port: int | None = None
    serial_log: Path | None = None
    uptime: float | None = None


# -- the host ------------------------------------------------------------------------------


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: QEMU gets SIGKILL when we die, even by kill -9.
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


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
            self._tmp = Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX))
            if warm_from is None:
                self._start_qemu(image, detach, disk=image.disk)
                self._wait_ready(self.boot_timeout)
            else:
                disk = self._tmp / "warm.qcow2"
                self._log("nested host: copying the saved machine state")
                _copy_sparse(warm_from, disk)
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
        return self.ssh.run(argv, timeout=timeout, input=input, check=check)

    def put(self, local: Path, remote: str, *, mode: int | None = None) -> bool:
        return self.ssh.put(local, remote, mode=mode)

    def put_bytes(self, data: bytes, remote: str, *, mode: int = 0o644) -> None:
        self.ssh.put_bytes(data, remote, mode=mode)

    def get(self, remote: str, local: Path) -> None:
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
        xen = self.xen_image or image.xen
        inputs = {
            "v": WARM_VERSION,
            "image": image.dir.name,
            "xen": sha256_file(xen),
            "xen_cmdline": self.xen_cmdline,
            "dom0_cmdline": self.dom0_cmdline or image.dom0_cmdline,
            "memory": self.memory,
            "cpus": self.cpus,
            "accel": self.accel or detect_accel(),
            "tcg_thread": self.tcg_thread,
            "qemu": fingerprint(self._ensure_qemu()),
        }
        return sha256_bytes(json.dumps(inputs, sort_keys=True).encode())[:16]

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
            self._log("nested host: no saved machine state yet: booting cold once to save one")
            part = image.dir / f".warm-{key}-{os.getpid()}.qcow2"
            t0 = time.monotonic()
            try:
                subprocess.run(
                    [
                        "qemu-img",
                        "create",
                        "-q",
                        "-f",
                        "qcow2",
                        "-F",
                        "raw",
                        "-b",
                        str(image.disk),
                        str(part),
                    ],
                    check=True,
                    capture_output=True,
                    timeout=60,
                )
                self._tmp = Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX))
                self._start_qemu(image, False, disk=part)
                self._wait_ready(self.boot_timeout)
                assert self._ssh is not None and self._record is not None
                self._ssh.run(["sync"], timeout=60, check=True)
                self._ssh.close()
                try:
                    with Qmp(Path(self._record.monitor), timeout=30) as q:
                        out = q.hmp(f"savevm {WARM_SNAPSHOT}", timeout=900)
                        if out.strip():
                            raise BrokenError(f"savevm failed: {out.strip()}")
                        if WARM_SNAPSHOT not in q.hmp("info snapshots"):
                            raise BrokenError("savevm left no snapshot")
                except BrokenError as e:
                    self._log(f"[yellow]nested host: cannot save the machine state: {e}[/]")
                    return None
                self._stop(graceful=False)
                os.rename(part, path)
            finally:
                self._stop(graceful=False)
                part.unlink(missing_ok=True)
            self._log(f"nested host: machine state saved in {time.monotonic() - t0:.0f}s")
            _prune_warm(image.dir, keep=WARM_KEEP)
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
            self.times = BootTimes(qemu_started=time.monotonic())
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


RUN_DIR_PREFIX = "xenpvh-nested-"


def reap_stale_run_dirs(
    tmp: Path | None = None, *, min_age: float = 600.0, proc: Path = Path("/proc")
) -> list[Path]:
    """Remove run dirs (with their throw-away disk copies) left by processes killed before
    they could clean up: older than min_age and named by no running process's command line."""
    base = Path(tmp or tempfile.gettempdir())
    now = time.time()
    candidates = [
        d
        for d in base.glob(f"{RUN_DIR_PREFIX}*")
        if d.is_dir() and now - d.stat().st_mtime > min_age
    ]
    if not candidates:
        return []
    in_use = b""
    for p in proc.glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            in_use += p.read_bytes() + b"\n"
    removed = []
    for d in candidates:
        if str(d).encode() not in in_use:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def _copy_sparse(src: Path, dst: Path) -> None:
    # cp keeps holes and uses reflinks where the filesystem has them.
    r = subprocess.run(
        ["cp", "--sparse=always", "--reflink=auto", "--", str(src), str(dst)],
        capture_output=True,
        timeout=600,
    )
    if r.returncode != 0:
        raise BrokenError(f"copying {src} failed: {r.stderr.decode(errors='replace')}")


def _prune_warm(d: Path, *, keep: int) -> None:
    files = sorted(d.glob("warm-*.qcow2"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        old.unlink(missing_ok=True)


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
