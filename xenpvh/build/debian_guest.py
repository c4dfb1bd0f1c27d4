"""A real Debian 12 guest: a disk image xenpvh did not write the boot of.

Debian's own packages only: a debootstrap (minbase) root with systemd as PID 1, Debian's
`linux-image-amd64` and the initramfs-tools initrd its postinst builds, a serial getty on
`hvc0`, systemd-networkd on the vif, root without a password on the console.  The root tree
becomes an ext4 image with `mkfs.ext4 -d` (no loop mount).  Three things boot it:

* `vmlinuz` + `initrd.img`, copied out of the image's /boot (a domain's kernel and ramdisk);
* `grub-pvh.elf`, GRUB's `i386-xen_pvh` image (Debian's grub-xen-bin) with a small embedded
  config that finds the guest's own `/boot/grub/grub.cfg` on its disk and runs it -- how
  Qubes boots kernels installed inside a VM;
* `disk.img`: the guest's disk (whole-disk ext4, no partition table; `root=/dev/xvda`).

    ensure_debian_guest() -> DebianGuest(kernel=..., ramdisk=..., grub=..., disk=...)

Cached under `${XDG_CACHE_HOME:-~/.cache}/xenpvh/debian-guest/<key>`; the key covers the
recipe (its version, package list and every file it writes) and the versions of the packages
that shape the boot (kernel, systemd, udev, initramfs-tools, GRUB) as the release's index
names them, plus that index's date, so a point release rebuilds.  A build happens in a temp dir
beside the entry and is renamed into place complete (manifest last).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xenpvh.build import debpkg
from xenpvh.build.apt import DebPackage, Mirror, PrivateApt
from xenpvh.build.apt.sources import DEBIAN_KEYRING, debian_mirror, system_mirrors
from xenpvh.errors import BlockedError, BrokenError
from xenpvh.util.chroot import chroot_run
from xenpvh.util.fs import atomic_write_text, cache_root, flock, sha256_bytes, sha256_file

log = logging.getLogger(__name__)

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

_MANIFEST = "manifest.json"


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


# --------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class DebianGuest:
    """A built guest in the cache."""

    dir: Path
    kernel: Path
    ramdisk: Path
    grub: Path
    disk: Path
    # The disk as a sparse tar (GNU tar -S, gzip): what is sent to a host.
    disk_pack: Path
    disk_sha256: str
    kernel_release: str
    key: str
    versions: dict[str, str]

    def item(self, name: str) -> Path:
        """The file a profile names `@debian-guest:<name>`."""
        paths = {
            "vmlinuz": self.kernel,
            "kernel": self.kernel,
            "initrd": self.ramdisk,
            "grub": self.grub,
            "disk": self.disk,
        }
        if name not in paths:
            raise BlockedError(
                f"unknown Debian guest item {name!r} (known: {', '.join(sorted(paths))})"
            )
        return paths[name]

    @classmethod
    def load(cls, entry: Path) -> DebianGuest | None:
        try:
            m = json.loads((entry / _MANIFEST).read_text())
            guest = cls(
                dir=entry,
                kernel=entry / m["kernel"],
                ramdisk=entry / m["ramdisk"],
                grub=entry / m["grub"],
                disk=entry / m["disk"],
                disk_pack=entry / m["disk_pack"],
                disk_sha256=m["disk_sha256"],
                kernel_release=m["kernel_release"],
                key=m["key"],
                versions=dict(m["versions"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        files = (guest.kernel, guest.ramdisk, guest.grub, guest.disk, guest.disk_pack)
        return guest if all(p.is_file() for p in files) else None


@dataclass(frozen=True)
class GuestBuildReport:
    guest: DebianGuest
    cache_hit: bool
    seconds: float


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


# --------------------------------------------------------------------------- the build


class DebianGuestBuilder:
    """Builds (or finds) the Debian guest for a recipe."""

    def __init__(
        self,
        recipe: GuestRecipe | None = None,
        *,
        cache: Path | None = None,
        status: Callable[[str], None] | None = None,
    ) -> None:
        self.recipe = recipe or GuestRecipe()
        self.cache = cache or cache_root("debian-guest")
        self._status_cb = status

    def ensure(self) -> GuestBuildReport:
        t0 = time.monotonic()
        self.cache.mkdir(parents=True, exist_ok=True)
        versions = self._versions()
        key = self.recipe.key(versions)
        guest = DebianGuest.load(self.cache / key)
        if guest is not None:
            return GuestBuildReport(guest, True, time.monotonic() - t0)
        with flock(self.cache / ".build.lock"):
            guest = DebianGuest.load(self.cache / key)
            if guest is not None:
                return GuestBuildReport(guest, True, time.monotonic() - t0)
            for stale in [*self.cache.glob(".tmp-*"), self.cache / key]:
                _rmtree_quiet(stale)
            guest = self._build(key, versions)
            # Entries of older recipes or versions are of no further use (~250 MB each).
            for old in self.cache.iterdir():
                if old.name != key and re.fullmatch(r"[0-9a-f]{24}", old.name):
                    _rmtree_quiet(old)
        return GuestBuildReport(guest, False, time.monotonic() - t0)

    def _versions(self) -> dict[str, str]:
        """Resolved versions, memoised beside the cache for an hour: a cached guest is found
        without asking apt anything on every run."""
        memo = self.cache / ".versions.json"
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(memo.read_text())
            if time.time() - float(data["at"]) < 3600 and data["inputs"] == json.loads(
                json.dumps(self.recipe.inputs())
            ):
                return dict(data["versions"])
        versions = resolve_versions(self.recipe)
        atomic_write_text(
            memo,
            json.dumps(
                {"at": time.time(), "inputs": self.recipe.inputs(), "versions": versions},
                indent=2,
            ),
        )
        return versions

    # -- steps ---------------------------------------------------------------------------

    def _build(self, key: str, versions: dict[str, str]) -> DebianGuest:
        for tool in ("debootstrap", "mkfs.ext4", "chroot", "tar"):
            if shutil.which(tool) is None:
                raise BlockedError(f"building the Debian guest needs {tool!r} on PATH")
        if os.geteuid() != 0:
            raise BlockedError("building the Debian guest needs root (debootstrap, chroot)")
        t0 = time.monotonic()
        mirror = debian_mirror(self.recipe.suite)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=self.cache))
        try:
            root = tmp / "root"
            for rel, text in PRE_FILES.items():
                _write(root / rel, text)
            tarball = self._package_tarball(mirror, tmp, versions)
            self._run(
                "debootstrap (unpack and configure)",
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(self.recipe.packages)}",
                    f"--unpack-tarball={tarball}",
                    self.recipe.suite,
                    str(root),
                    mirror,
                ],
            )
            release = self._configure(root)
            self._check_initramfs(root, release)
            self._grub(root, tmp, release)
            installed = self._installed(root)
            boot = root / "boot"
            shutil.copyfile(boot / f"vmlinuz-{release}", tmp / "vmlinuz")
            shutil.copyfile(boot / f"initrd.img-{release}", tmp / "initrd.img")
            self._clean(root)
            self._status("making the ext4 image (mkfs.ext4 -d)")
            self._run(
                "mkfs.ext4 -d",
                ["mkfs.ext4", "-q", "-F", "-L", HOSTNAME, "-d", str(root),
                 str(tmp / "disk.img"), self.recipe.disk_size],
            )  # fmt: skip
            shutil.rmtree(root)
            self._status("packing the disk (sparse tar)")
            _pack_sparse(tmp / "disk.img", tmp / "disk.tar.gz")
            manifest = {
                "key": key,
                "kernel": "vmlinuz",
                "ramdisk": "initrd.img",
                "grub": "grub-pvh.elf",
                "disk": "disk.img",
                "disk_pack": "disk.tar.gz",
                "disk_sha256": sha256_file(tmp / "disk.img"),
                "kernel_release": release,
                "versions": versions,
                "installed": installed,
                "cmdline": CMDLINE,
                "seconds": round(time.monotonic() - t0, 1),
                "disk_allocated_bytes": (tmp / "disk.img").stat().st_blocks * 512,
                "disk_pack_bytes": (tmp / "disk.tar.gz").stat().st_size,
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            tmp.chmod(0o755)
            os.rename(tmp, self.cache / key)
        except BaseException:
            _rmtree_quiet(tmp)
            raise
        guest = DebianGuest.load(self.cache / key)
        if guest is None:
            raise BrokenError(f"the Debian guest just built in {self.cache / key} does not load")
        return guest

    def _package_tarball(self, mirror: str, tmp: Path, versions: dict[str, str]) -> Path:
        """debootstrap's downloads, cached on their own (keyed by the package list and the
        versions) so that a change of the recipe's files rebuilds without downloading."""
        pkgdir = self.cache / "debs"
        pkgdir.mkdir(parents=True, exist_ok=True)
        blob = json.dumps([self.recipe.suite, sorted(self.recipe.packages), versions])
        tarball = pkgdir / f"{sha256_bytes(blob.encode())[:24]}.tgz"
        if tarball.is_file():
            return tarball
        for old in pkgdir.glob("*.tgz"):
            old.unlink()  # another point release's downloads
        part = tmp / "debs.tgz"
        self._run(
            "debootstrap (download)",
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(self.recipe.packages)}",
                f"--make-tarball={part}",
                self.recipe.suite,
                str(tmp / "download"),
                mirror,
            ],
        )
        os.replace(part, tarball)
        _rmtree_quiet(tmp / "download")
        return tarball

    def _configure(self, root: Path) -> str:
        """The guest's own settings; returns the kernel release installed."""
        self._status("configuring the guest")
        audit = self._chroot(root, ["dpkg", "--audit"])
        if audit.strip():
            raise BrokenError("debootstrap left unconfigured packages:\n" + audit[-1500:])
        for rel, text in FILES.items():
            _write(root / rel, text)
        # A machine-id of the image's own: every boot is not a first boot (no presets
        # applied, no first-boot units), and each run boots a fresh copy anyway.
        _write(root / "etc/machine-id", hashlib.sha256(os.urandom(32)).hexdigest()[:32] + "\n")
        # Root without a password: a throw-away guest whose console only the harness reaches.
        self._chroot(root, ["passwd", "--delete", "root"])
        self._chroot(root, ["systemctl", "enable", *ENABLED_UNITS])
        self._chroot(root, ["systemctl", "mask", *MASKED_UNITS])
        releases = sorted(
            p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*")
        )
        if len(releases) != 1:
            raise BrokenError(f"expected one kernel in the guest's /boot, found {releases}")
        return releases[0]

    def _check_initramfs(self, root: Path, release: str) -> None:
        """The initrd Debian made must hold the frontend the root device needs."""
        listing = self._chroot(root, ["lsinitramfs", f"/boot/initrd.img-{release}"])
        for module in ("xen-blkfront.ko", "ext4.ko"):
            if module not in listing:
                raise BrokenError(f"the guest's initramfs lacks {module} (MODULES=most?)")

    def _grub(self, root: Path, tmp: Path, release: str) -> None:
        """GRUB's PVH image from Debian's grub-xen-bin, and the guest's own grub.cfg."""
        self._status("making the PVH GRUB image (grub-mkimage -O i386-xen_pvh)")
        tree = tmp / "grub"
        found = debpkg.candidates(*GRUB_PACKAGES)
        for name in GRUB_PACKAGES:
            deb = debpkg.download(found[name], tmp / "grub-debs")
            debpkg.extract(deb, tree, lambda p: True)
        mkimage = tree / "usr/bin/grub-mkimage"
        moddir = tree / "usr/lib/grub" / GRUB_PLATFORM
        if not mkimage.is_file() or not (moddir / "kernel.img").is_file():
            raise BrokenError(f"grub-common/grub-xen-bin hold no grub-mkimage or {moddir.name}")
        early = tmp / "grub-early.cfg"
        early.write_text(GRUB_EARLY_CFG)
        self._run(
            "grub-mkimage",
            [str(mkimage), "-O", GRUB_PLATFORM, "-d", str(moddir), "-c", str(early),
             "-p", "/boot/grub", "-o", str(tmp / "grub-pvh.elf"), *GRUB_MODULES],
        )  # fmt: skip
        _write(root / "boot/grub/grub.cfg", grub_cfg(release))
        _rmtree_quiet(tree)
        _rmtree_quiet(tmp / "grub-debs")

    def _installed(self, root: Path) -> dict[str, str]:
        out = self._chroot(root, ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n"])
        wanted = {*KEYED_PACKAGES, "systemd-sysv", "libc6"}
        pairs = (line.split(" ", 1) for line in out.splitlines() if " " in line)
        return {
            name: ver for name, ver in pairs if name in wanted or name.startswith("linux-image-")
        }

    def _clean(self, root: Path) -> None:
        # The dpkg excludes, applied to what debootstrap's first stage unpacked without dpkg.
        for d in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"):
            for p in sorted((root / d).rglob("*"), reverse=True):
                if p.name == "copyright" and d == "usr/share/doc":
                    continue
                if p.is_dir() and not p.is_symlink():
                    with contextlib.suppress(OSError):
                        p.rmdir()  # kept when a copyright file is left inside
                else:
                    p.unlink()
        for d in ("var/cache/apt/archives", "var/cache/debconf"):
            for p in (root / d).glob("*"):
                if p.is_file() and p.suffix in {".deb", ""} | {".bin", ".dat-old"}:
                    p.unlink()
        # The package indexes (49 MB of the 197 MB root, a quarter of what every host is
        # sent and unpacks): `apt update` in the guest fetches them again.  Their names
        # have dots (deb.debian.org_..._Packages), so no suffix test can pick them.
        for p in (root / "var/lib/apt/lists").glob("*"):
            if p.is_file() and p.name != "lock":
                p.unlink()
        for p in (root / "var/cache/apt").glob("*.bin"):
            p.unlink()

    # -- helpers -------------------------------------------------------------------------

    def _chroot(self, root: Path, argv: list[str]) -> str:
        return chroot_run(root, argv, timeout=600)

    def _run(self, what: str, argv: list[str]) -> None:
        self._status(what)
        with tempfile.TemporaryFile() as out:
            rc = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "LANG": "C"}
            ).returncode
            if rc != 0:
                out.seek(0)
                tail = out.read().decode(errors="replace").strip().splitlines()[-20:]
                raise BrokenError(f"{what} failed (exit {rc}):\n" + "\n".join(tail))

    def _status(self, msg: str) -> None:
        log.info("debian guest: %s", msg)
        if self._status_cb is not None:
            self._status_cb(msg)


def ensure_debian_guest(
    *, cache: Path | None = None, status: Callable[[str], None] | None = None
) -> DebianGuest:
    """The Debian guest, built on first use."""
    return DebianGuestBuilder(cache=cache, status=status).ensure().guest


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text)


def _pack_sparse(image: Path, out: Path) -> None:
    """`image` as a gzip'd GNU sparse tar (`tar -S`): only its data blocks travel."""
    subprocess.run(
        ["tar", "-C", str(image.parent), "-cSzf", str(out), image.name],
        check=True,
        capture_output=True,
    )


def _rmtree_quiet(p: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(p)


__all__ = [
    "CMDLINE",
    "PACKAGES",
    "DebianGuest",
    "DebianGuestBuilder",
    "GuestRecipe",
    "ensure_debian_guest",
    "grub_cfg",
]
