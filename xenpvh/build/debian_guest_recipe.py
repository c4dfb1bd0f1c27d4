"""What the Debian 12 guest is made of: its recipe.

Debian's own packages only (systemd as PID 1, Debian's `linux-image-amd64` and the
initramfs-tools initrd its postinst builds, a serial getty on `hvc0`, systemd-networkd on the
vif, root without a password on the console), the files xenpvh writes into it, the units it
masks and enables, and GRUB's PVH image.  `GuestRecipe.key(versions)` names the cache entry:
it covers the recipe (its version, package list and every file it writes) and the versions of
the packages that shape the boot (kernel, systemd, udev, initramfs-tools, GRUB) as the
release's index names them, plus that index's date, so a point release rebuilds
(`resolve_versions`).
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from xenpvh.build import debpkg
from xenpvh.build.apt import DebPackage, Mirror, PrivateApt
from xenpvh.build.apt.sources import DEBIAN_KEYRING, debian_mirror, system_mirrors
from xenpvh.errors import BrokenError
from xenpvh.util.fs import cache_root, sha256_bytes

# Bump when the build steps change in a way the key would not otherwise see.
RECIPE_VERSION = 3
SUITE = "bookworm"
HOSTNAME = "debian12-pvh"
# The guest's disk: whole-disk ext4 (a partition table would only add a step to both boot
# paths); sparse, so its size is a ceiling, not a cost.
DISK_SIZE = "1G"
ROOT_DEVICE = "/dev/xvda"
# What a domain's kernel command line needs for this guest (the profiles use it).
CMDLINE = f"root={ROOT_DEVICE} rw console=hvc0"

# On top of minbase: systemd as PID 1 (systemd-sysv), udev (device nodes, interface names;
# initramfs-tools wants it too), Debian's kernel and the initramfs generator its postinst
# runs.  systemd-networkd is part of the systemd package.
PACKAGES: tuple[str, ...] = ("systemd-sysv", "udev", "linux-image-amd64", "initramfs-tools")
# The packages whose versions name the cache entry (what shapes the boot the profiles see).
KEYED_PACKAGES: tuple[str, ...] = ("systemd", "udev", "initramfs-tools", "linux-image-amd64")
# GRUB is needed at build time only: its .debs come through the private apt (debpkg).
GRUB_PACKAGES: tuple[str, ...] = ("grub-common", "grub-xen-bin")
GRUB_PLATFORM = "i386-xen_pvh"
# What the PVH GRUB image carries: the disk driver is in its kernel (xendisk); these read a
# whole-disk or partitioned ext4, run grub.cfg and load Linux.
GRUB_MODULES: tuple[str, ...] = (
    "part_msdos",
    "part_gpt",
    "ext2",
    "normal",
    "configfile",
    "search",
    "search_fs_file",
    "linux",
    "echo",
    "test",
)
# The embedded config: find the disk holding /boot/grub/grub.cfg (the guest's own, written
# by the guest's owner) and run it.  Whole disks are named (xen/xvda) by GRUB's xendisk.
GRUB_EARLY_CFG = """\
search --no-floppy --set=root --file /boot/grub/grub.cfg
set prefix=($root)/boot/grub
configfile $prefix/grub.cfg
"""

# Kernel modules kept in the image (dpkg path-exclude drops the rest of /lib/modules before
# the kernel is unpacked): the Xen PV frontends, ext4 and what it loads, autofs (systemd
# asks for it), Xen's own drivers.  Everything else is hardware a PVH domain cannot have;
# dropping it keeps the image and the initramfs (MODULES=most) small.
KEEP_MODULES: tuple[str, ...] = (
    "drivers/block/xen-blkfront.ko*",
    "drivers/net/xen-netfront.ko*",
    "drivers/xen/*",
    "fs/ext4/*",
    "fs/jbd2/*",
    "fs/mbcache.ko*",
    "fs/autofs/*",
    "lib/crc16.ko*",
    "lib/libcrc32c.ko*",
    "crypto/crc32c_generic.ko*",
    "arch/x86/crypto/crc32c-intel.ko*",
)


def _dpkg_excludes() -> str:
    lines = [
        "# Written by xenpvh: a PVH test guest keeps only what it can use.",
        "path-exclude=/usr/share/doc/*",
        "path-include=/usr/share/doc/*/copyright",
        "path-exclude=/usr/share/man/*",
        "path-exclude=/usr/share/info/*",
        "path-exclude=/usr/share/locale/*",
    ]
    for base in ("/lib/modules", "/usr/lib/modules"):
        lines.append(f"path-exclude={base}/*/kernel/*")
        lines += [f"path-include={base}/*/kernel/{keep}" for keep in KEEP_MODULES]
    return "\n".join(lines) + "\n"


# Files in place before debootstrap runs: dpkg and initramfs-tools read them when the
# packages are unpacked and the initrd is first made.
PRE_FILES: dict[str, str] = {
    "etc/dpkg/dpkg.cfg.d/xenpvh-guest": _dpkg_excludes(),
    # Debian's default MODULES=most (every block and net driver, over the pruned tree: the
    # Xen frontends and ext4), no resume device to wait for, gzip (zstd is only recommended).
    "etc/initramfs-tools/conf.d/xenpvh-guest": "MODULES=most\nRESUME=none\nCOMPRESS=gzip\n",
}

# The vif: link up under systemd-networkd, IPv6 link-local only (no DHCP server is promised
# on the host's bridge); not required for network-online, so it never holds up the boot.
NETWORK_UNIT = """\
[Match]
Driver=vif

[Link]
RequiredForOnline=no

[Network]
LinkLocalAddressing=ipv6
DHCP=no
"""

FILES: dict[str, str] = {
    "etc/hostname": f"{HOSTNAME}\n",
    "etc/hosts": f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n",
    # passno 0: a fresh copy per run needs no fsck (and the root is mounted rw).
    "etc/fstab": f"{ROOT_DEVICE} / ext4 rw,errors=remount-ro 0 0\n",
    "etc/systemd/network/50-xen-vif.network": NETWORK_UNIT,
    # The console's device unit waits as long as the profile's login deadline, not systemd's
    # 90 s: on a TCG nested host udev's coldplug can take longer than that to announce
    # hvc0 (seen in CI: `Timed out waiting for device dev-hvc0.device`, then no getty and
    # no login).  The same knob fstab's x-systemd.device-timeout= sets, for a unit that
    # fstab does not name.
    "etc/systemd/system/dev-hvc0.device.d/xenpvh-console-timeout.conf": (
        "[Unit]\nJobRunningTimeoutSec=10min\n"
    ),
}

# Units a throw-away test guest does not need at boot: timers that would start maintenance
# jobs and the ext4 snapshot reaper, the first-boot prompt, VT gettys where there is no VT
# (getty-static starts tty2-6 when dbus/logind are absent, as in this image).  Masked, never
# edited.  Under TCG every unit costs seconds; with 4 vCPUs these alone took minutes.
MASKED_UNITS: tuple[str, ...] = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-firstboot.service",
    "systemd-networkd-wait-online.service",
    "getty@tty1.service",
    "getty-static.service",
)
ENABLED_UNITS: tuple[str, ...] = ("systemd-networkd.service", "serial-getty@hvc0.service")


def grub_cfg(kernel_release: str) -> str:
    """The guest's own /boot/grub/grub.cfg: Debian's kernel and initrd, on the console."""
    if not re.fullmatch(r"[0-9][A-Za-z0-9.+_-]*", kernel_release):
        raise BrokenError(f"{kernel_release!r} is not a kernel release")
    return (
        "# Written by xenpvh for GRUB's PVH image (grub-xen-bin, i386-xen_pvh).\n"
        "set timeout=0\n"
        "set default=0\n"
        f"menuentry 'Debian GNU/Linux 12, Linux {kernel_release}' {{\n"
        f"    linux /boot/vmlinuz-{kernel_release} {CMDLINE}\n"
        f"    initrd /boot/initrd.img-{kernel_release}\n"
        "}\n"
    )


# --------------------------------------------------------------------------- the key


@dataclass(frozen=True)
class GuestRecipe:
    suite: str = SUITE
    packages: tuple[str, ...] = PACKAGES
    disk_size: str = DISK_SIZE

    def inputs(self) -> dict[str, object]:
        return {
            "recipe": RECIPE_VERSION,
            "suite": self.suite,
            "packages": list(self.packages),
            "disk_size": self.disk_size,
            "pre_files": PRE_FILES,
            "files": FILES,
            "masked": list(MASKED_UNITS),
            "enabled": list(ENABLED_UNITS),
            "grub_modules": list(GRUB_MODULES),
            "grub_early": GRUB_EARLY_CFG,
            "grub_cfg": grub_cfg("0"),
        }

    def key(self, versions: dict[str, str]) -> str:
        blob = json.dumps({"inputs": self.inputs(), "versions": versions}, sort_keys=True)
        return sha256_bytes(blob.encode())[:24]


def release_apt(suite: str = SUITE) -> PrivateApt:
    """A private apt of the release suite alone: what debootstrap installs from (it reads one
    suite of one mirror; -updates and -security are not in a debootstrap)."""
    uri = debian_mirror(suite)
    keyring = next(
        (m.signed_by for m in system_mirrors() if m.uri.rstrip("/") == uri and m.signed_by),
        DEBIAN_KEYRING if Path(DEBIAN_KEYRING).is_file() else None,
    )
    return PrivateApt(
        cache_root("debian-guest", "apt"),
        [Mirror(uri, suite, ("main",), keyring)],
        comment=f"the {suite} release suite the Debian guest is debootstrapped from.",
    )


def resolve_versions(recipe: GuestRecipe) -> dict[str, str]:
    """The versions that shape the guest: the keyed packages as the release suite's index
    names them (the kernel metapackage resolved to its image package), GRUB's as the private
    apt of Debian 12 (with updates) names them, and the release index's date."""
    apt = release_apt(recipe.suite)
    found = apt.candidates(*KEYED_PACKAGES)
    versions = {name: pkg.version for name, pkg in found.items()}
    meta = found["linux-image-amd64"]
    image = _kernel_image(apt, meta)
    versions[image.name] = image.version
    for name, pkg in debpkg.candidates(*GRUB_PACKAGES).items():
        versions[name] = pkg.version
    versions["release-date"] = _release_date(apt)
    return versions


def _kernel_image(apt: PrivateApt, meta: DebPackage) -> DebPackage:
    """The linux-image-<abi>-amd64 package (and version) the metapackage pins."""
    depends = apt.record(meta).get("depends", "")
    m = re.search(r"(linux-image-[0-9][a-z0-9.+-]*)\s*\(=\s*([^)\s]+)\)", depends)
    if m is None:
        raise BrokenError(f"{meta} pins no linux-image-* package (Depends: {depends})")
    return DebPackage(m.group(1), m.group(2))


def _release_date(apt: PrivateApt) -> str:
    for p in sorted(apt.lists.glob("*InRelease")) + sorted(apt.lists.glob("*_Release")):
        with contextlib.suppress(OSError):
            for line in p.read_text(errors="replace").splitlines():
                if line.startswith("Date:"):
                    return line.split(":", 1)[1].strip()
    raise BrokenError(f"no Release date in {apt.lists}")


__all__ = [
    "CMDLINE",
    "ENABLED_UNITS",
    "FILES",
    "GRUB_EARLY_CFG",
    "GRUB_MODULES",
    "GRUB_PACKAGES",
    "GRUB_PLATFORM",
    "HOSTNAME",
    "KEYED_PACKAGES",
    "MASKED_UNITS",
    "PACKAGES",
    "PRE_FILES",
    "RECIPE_VERSION",
    "SUITE",
    "GuestRecipe",
    "grub_cfg",
    "release_apt",
    "resolve_versions",
]
