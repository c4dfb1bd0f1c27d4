"""Live: provision a plain Debian 12 VM over ssh with site.yml, then boot it into Xen.

A debootstrapped Debian 12 (openssh-server, python3, linux-image-amd64, ifupdown — what a
plain install has) boots under QEMU/TCG with its own kernel; `provision_ssh` runs the roles
twice (the second run must change nothing); the VM powers off and its disk boots again, now
into the Xen it got, through QEMU's multiboot loader with the command lines GRUB's generated
configuration holds.  Then `xl list` over ssh shows Domain-0 and the bridge carries the
uplink.  Everything lives in a temp directory that is removed afterwards; QEMU is killed
whatever happens.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenpvh.provision import provision_ssh

pytestmark = pytest.mark.xen

PACKAGES = (
    "python3,systemd-sysv,openssh-server,linux-image-amd64,udev,kmod,iproute2,dbus,"
    "libpam-systemd,ifupdown,isc-dhcp-client,grub-pc-bin,grub2-common"
)
ARTIFACT_ID = "4.17.5-live"
DOM0_ARGS = "root=/dev/vda rw console=hvc0 net.ifnames=0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _qemu_running() -> bool:
    # -f: pgrep matches only 15 characters of a process name without it.
    r = subprocess.run(["pgrep", "-f", "^(/usr/bin/)?qemu-system-"], capture_output=True)
    return r.returncode == 0


class Vm:
    """The throw-away VM: its disk, keys, and (while booted) its QEMU process."""

    def __init__(self, d: Path) -> None:
        self.dir = d
        self.disk = d / "disk.img"
        self.client_key = d / "client_key"
        self.known_hosts = d / "known_hosts"
        self.artifact = d / f"xen-{ARTIFACT_ID}.gz"
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def ssh(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "ssh",
                "-p",
                str(self.port),
                "-i",
                str(self.client_key),
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                f"UserKnownHostsFile={self.known_hosts}",
                "-o",
                "ConnectTimeout=5",
                "root@127.0.0.1",
                "--",
                *argv,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def boot(self, qemu_args: list[str], log: str) -> None:
        # One QEMU at a time on this 2-core machine: wait a while for another one to end.
        deadline = time.monotonic() + 1800
        while _qemu_running():
            if time.monotonic() > deadline:
                pytest.skip("another QEMU kept running on this 2-core machine; run later")
            time.sleep(10)
        self.proc = subprocess.Popen(
            [
                "qemu-system-x86_64",
                "-nodefaults",
                "-machine",
                "pc",
                "-accel",
                "tcg",
                "-smp",
                "2",
                *qemu_args,
                "-drive",
                f"file={self.disk},if=virtio,format=raw",
                "-netdev",
                f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.port}-:22",
                "-device",
                "virtio-net-pci,netdev=n0",
                "-serial",
                f"file:{self.dir / log}",
                "-display",
                "none",
                "-vga",
                "none",
                "-no-reboot",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.dir / f"{log}.qemu").open("wb"),
        )
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"QEMU exited: {(self.dir / log).read_text()[-3000:]}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                if self.ssh("true", timeout=20).returncode == 0:
                    return
            time.sleep(3)
        raise AssertionError(f"no ssh within 600 s: {(self.dir / log).read_text()[-3000:]}")

    def poweroff(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.ssh("systemctl", "poweroff", timeout=20)
        try:
            self.proc.wait(180)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def dump(self, path: str, dest: Path) -> Path:
        """Copy a file out of the (powered-off) ext4 disk without mounting it."""
        subprocess.run(
            ["debugfs", "-R", f"dump {path} {dest}", str(self.disk)],
            check=True,
            capture_output=True,
        )
        if not dest.is_file() or dest.stat().st_size == 0:
            raise AssertionError(f"{path} is not in the disk image")
        return dest


def _remove_tree(root: Path) -> None:
    """Remove a debootstrapped tree, unmounting first what an interrupted debootstrap left
    mounted inside it (proc, sys, a bind-mounted /dev): rmtree must never walk into those."""
    prefix = str(root.resolve()) + "/"
    mounts = [
        line.split()[1]
        for line in Path("/proc/mounts").read_text().splitlines()
        if line.split()[1].startswith(prefix)
    ]
    for m in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", m], check=False)
    if any(
        ln.split()[1].startswith(prefix) for ln in Path("/proc/mounts").read_text().splitlines()
    ):
        raise RuntimeError(f"cannot unmount everything below {root}; not removing it")
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vm]:
    if os.geteuid() != 0:
        pytest.skip("needs root (debootstrap)")
    for tool in ("debootstrap", "qemu-system-x86_64", "mkfs.ext4", "debugfs", "ssh"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    from xenpvh.host.image import debian_mirror

    vm = Vm(tmp_path_factory.mktemp("ansible-live"))
    root = vm.dir / "root"
    try:
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={PACKAGES}",
                "bookworm",
                str(root),
                debian_mirror(),
            ],
            check=True,
            capture_output=True,
            timeout=1800,
        )
        # What the Debian installer leaves behind: ifupdown DHCP on the NIC, a /boot/grub.
        (root / "etc/hostname").write_text("plainbox\n")
        (root / "etc/hosts").write_text("127.0.0.1 localhost\n127.0.1.1 plainbox\n")
        (root / "etc/fstab").write_text("/dev/vda / ext4 rw,errors=remount-ro 0 1\n")
        (root / "etc/network/interfaces").write_text(
            "source /etc/network/interfaces.d/*\nauto lo\niface lo inet loopback\n\n"
            "allow-hotplug eth0\niface eth0 inet dhcp\n"
        )
        (root / "boot/grub").mkdir(exist_ok=True)
        shutil.copy(root / "usr/share/grub/default/grub", root / "etc/default/grub")
        # The "build artifact": Debian's hypervisor under an artifact's name (xen-<id>.gz),
        # as `xenpvh build xen` would leave it on the controller.
        subprocess.run(
            ["apt-get", "download", "xen-hypervisor-4.17-amd64"],
            cwd=vm.dir,
            check=True,
            capture_output=True,
        )
        deb = next(vm.dir.glob("xen-hypervisor-4.17-amd64_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(vm.dir / "deb")], check=True)
        shutil.copy(vm.dir / "deb/boot/xen-4.17-amd64.gz", vm.artifact)
        for old in (root / "etc/ssh").glob("ssh_host_*"):
            old.unlink()
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-f",
                str(root / "etc/ssh/ssh_host_ed25519_key"),
            ],
            check=True,
        )
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(vm.client_key)], check=True
        )
        ssh_dir = root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        shutil.copy(f"{vm.client_key}.pub", ssh_dir / "authorized_keys")
        keytype, data = (root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
        vm.known_hosts.write_text(f"[127.0.0.1]:{vm.port} {keytype} {data}\n")
        kver = sorted(p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*"))[
            -1
        ]
        shutil.copy(root / f"boot/vmlinuz-{kver}", vm.dir / "vmlinuz")
        shutil.copy(root / f"boot/initrd.img-{kver}", vm.dir / "initrd.img")
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-d", str(root), str(vm.disk), "4G"],
            check=True,
            capture_output=True,
        )
        _remove_tree(root)
        yield vm
    finally:
        vm.kill()
        _remove_tree(vm.dir)


def test_provision_plain_debian_then_boot_xen(vm: Vm) -> None:
    # 1. The plain box, booted natively.
    vm.boot(
        [
            "-cpu",
            "qemu64",
            "-m",
            "2G",
            "-kernel",
            str(vm.dir / "vmlinuz"),
            "-initrd",
            str(vm.dir / "initrd.img"),
            "-append",
            "root=/dev/vda rw console=ttyS0 net.ifnames=0",
        ],
        "native.log",
    )
    extra = {
        "xenpvh_build_host": False,
        "xenpvh_runner_nightly": True,
        "xenpvh_runner_authorized_key": Path(f"{vm.client_key}.pub").read_text().strip(),
        "xen_artifact": str(vm.artifact),
    }
    t0 = time.monotonic()
    first = provision_ssh(
        f"ssh://root@127.0.0.1:{vm.port}",
        identity=vm.client_key,
        known_hosts=vm.known_hosts,
        extra_vars=extra,
        log=vm.dir / "first.log",
    )
    first_s = time.monotonic() - t0
    assert first.failed == 0 and first.changed > 0, first.log.read_text()[-4000:]
    t0 = time.monotonic()
    second = provision_ssh(
        f"ssh://root@127.0.0.1:{vm.port}",
        identity=vm.client_key,
        known_hosts=vm.known_hosts,
        extra_vars=extra,
        log=vm.dir / "second.log",
    )
    second_s = time.monotonic() - t0
    assert (second.failed, second.changed) == (0, 0), second.log.read_text()[-4000:]
    print(f"first run {first_s:.0f} s changed={first.changed}; second {second_s:.0f} s")

    # GRUB's generated configuration boots the artifact by default with our command line.
    kver = vm.ssh("uname", "-r").stdout.strip()
    grub = vm.ssh("cat", "/boot/grub/grub.cfg").stdout
    entry = f"Debian GNU/Linux, with Xen {ARTIFACT_ID} and Linux {kver}"
    default = (
        "Advanced options for Debian GNU/Linux (with Xen hypervisor)>"
        f"Xen hypervisor, version {ARTIFACT_ID}>{entry}"
    )
    assert f'set default="{default}"' in grub, grub[:3000]
    body = grub[grub.index(f"menuentry '{entry}'") :]
    m = re.search(r"^\s*multiboot2?\s+/boot/(xen-\S+)\s+placeholder\s+(.*)$", body, re.M)
    assert m is not None and m.group(1) == vm.artifact.name, body[:2000]
    xen_args = m.group(2).replace("${xen_rm_opts}", "").strip()
    assert "dom0_mem=1024M,max:1024M" in xen_args
    vm.poweroff()

    # 2. The same disk booted into Xen (QEMU's multiboot loader stands in for GRUB).
    xen_gz = vm.dump(f"/boot/{vm.artifact.name}", vm.dir / "xen.gz")
    with gzip.open(xen_gz) as src, (vm.dir / "xen.elf").open("wb") as dst:
        shutil.copyfileobj(src, dst)
    vm.boot(
        [
            "-cpu",
            "qemu64,+svm,+npt",
            "-m",
            "3G",
            "-kernel",
            str(vm.dir / "xen.elf"),
            "-append",
            f"console=com1 com1=115200,8n1 {xen_args}",
            "-initrd",
            f"{vm.dir / 'vmlinuz'} {DOM0_ARGS},{vm.dir / 'initrd.img'}",
        ],
        "xen.log",
    )
    xl = vm.ssh("xl", "list")
    assert xl.returncode == 0 and re.search(r"^Domain-0\s+0\s", xl.stdout, re.M), xl
    bridge = vm.ssh("ip", "-o", "link", "show", "master", "xenbr0").stdout
    assert "eth0" in bridge
    assert "inet " in vm.ssh("ip", "-o", "-4", "addr", "show", "xenbr0").stdout
    assert "--log=guest" in vm.ssh("pgrep", "-a", "xenconsoled").stdout
    assert "xen_netback" in vm.ssh("lsmod").stdout
    assert vm.ssh("test", "-d", "/var/lock").returncode == 0
    # 3. Provisioning the running dom0 again changes nothing either.
    third = provision_ssh(
        f"ssh://root@127.0.0.1:{vm.port}",
        identity=vm.client_key,
        known_hosts=vm.known_hosts,
        extra_vars=extra,
        log=vm.dir / "third.log",
    )
    assert (third.failed, third.changed) == (0, 0), third.log.read_text()[-4000:]
    vm.poweroff()
