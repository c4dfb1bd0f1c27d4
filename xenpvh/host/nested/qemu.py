"""The QEMU that runs a nested Xen host: its command line (QemuConfig), the accelerator it
can use, the ssh port it forwards, and the guest faults that are its own (TCG_FAULTS)."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from xenpvh.errors import BlockedError
from xenpvh.host.base import EmulationFault

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
    # QEMU's own debug log (`-d ITEMS -D FILE`, e.g. "int,cpu_reset"): XENPVH_QEMU_DEBUG.
    debug: str | None = None
    debug_log: Path | None = None

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
        if self.debug is not None and (
            not re.fullmatch(r"[a-z0-9_]+(,[a-z0-9_]+)*", self.debug) or self.debug_log is None
        ):
            raise BlockedError(
                f"QEMU debug items {self.debug!r}: expected a comma list such as "
                "'int,cpu_reset' (qemu-system-x86_64 -d help), and a log file"
            )
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
        if self.debug is not None:
            resume += ["-d", self.debug, "-D", str(self.debug_log)]
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
