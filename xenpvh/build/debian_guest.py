"""The Debian 12 guest (its recipe: debian_guest_recipe): a disk image xenpvh did not write
the boot of.  The root tree becomes an ext4 image with `mkfs.ext4 -d` (no loop mount).  Three
things boot it:

* `vmlinuz` + `initrd.img`, copied out of the image's /boot (a domain's kernel and ramdisk);
* `grub-pvh.elf`, GRUB's `i386-xen_pvh` image (Debian's grub-xen-bin) with a small embedded
  config that finds the guest's own `/boot/grub/grub.cfg` on its disk and runs it -- how
  Qubes boots kernels installed inside a VM;
* `disk.img`: the guest's disk (whole-disk ext4, no partition table; `root=/dev/xvda`).

    ensure_debian_guest() -> DebianGuest(kernel=..., ramdisk=..., grub=..., disk=...)

An entry of the artifact cache rooted at `${XDG_CACHE_HOME:-~/.cache}/xenpvh/debian-guest`,
keyed by `GuestRecipe.key(versions)`; a new entry replaces the older ones (~250 MB each).
debootstrap's downloads are entries of the same cache (build/debootstrap.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from xenpvh.build import debootstrap, debpkg
from xenpvh.build.apt.sources import debian_mirror
from xenpvh.build.cache import ArtifactCache, Built, CacheEntry
from xenpvh.build.debian_guest_recipe import (
    CMDLINE,
    ENABLED_UNITS,
    FILES,
    GRUB_EARLY_CFG,
    GRUB_MODULES,
    GRUB_PACKAGES,
    GRUB_PLATFORM,
    HOSTNAME,
    KEYED_PACKAGES,
    MASKED_UNITS,
    PRE_FILES,
    GuestRecipe,
    grub_cfg,
    resolve_versions,
)
from xenpvh.build.debootstrap import run_step
from xenpvh.errors import BlockedError, BrokenError
from xenpvh.util.chroot import chroot_run
from xenpvh.util.fs import atomic_write_text, cache_root
from xenpvh.util.progress import ProgressSink, task

log = logging.getLogger(__name__)

# The cache entry's recipe name (the manifest's `recipe`).
CACHE_RECIPE = "debian-guest"
# Resolved versions are trusted this long: a cached guest is found without asking apt.
VERSIONS_MAX_AGE = 3600.0
_VERSIONS = ".versions.json"


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
    def from_entry(cls, entry: CacheEntry) -> DebianGuest:
        """The guest a cache entry holds; BrokenError when its manifest is not a guest's."""
        m = entry.manifest
        try:
            files = entry.artifacts
            return cls(
                dir=entry.path,
                kernel=files["kernel"],
                ramdisk=files["ramdisk"],
                grub=files["grub"],
                disk=files["disk"],
                disk_pack=files["disk_pack"],
                disk_sha256=m["artifacts"]["disk"]["sha256"],
                kernel_release=m["kernel_release"],
                key=entry.key,
                versions=dict(m["versions"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise BrokenError(f"Debian guest cache entry {entry.path} is not a guest: {e!r}") from e


@dataclass(frozen=True)
class GuestBuildReport:
    guest: DebianGuest
    cache_hit: bool
    seconds: float


# --------------------------------------------------------------------------- the build


class DebianGuestBuilder:
    """Builds (or finds) the Debian guest for a recipe; its steps are progress tasks."""

    def __init__(
        self,
        recipe: GuestRecipe | None = None,
        *,
        cache: ArtifactCache | None = None,
        progress: ProgressSink | None = None,
    ) -> None:
        self.recipe = recipe or GuestRecipe()
        self.cache = cache if cache is not None else ArtifactCache(cache_root("debian-guest"))
        self.progress = progress

    def ensure(self) -> GuestBuildReport:
        t0 = time.monotonic()
        versions = self._versions()
        key = self.recipe.key(versions)
        served = self.cache.ensure(key, lambda work: self._build(work, versions))
        if not served.hit:
            log.info("debian guest %s built in %.0f s", key, time.monotonic() - t0)
            # Entries of older recipes or versions are of no further use (~250 MB each).
            self.cache.prune(CACHE_RECIPE, keep=key)
        guest = DebianGuest.from_entry(served.entry)
        return GuestBuildReport(guest, served.hit, time.monotonic() - t0)

    def _versions(self) -> dict[str, str]:
        """Resolved versions, memoised beside the cache's entries for an hour."""
        memo = self.cache.root / _VERSIONS
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            data = json.loads(memo.read_text())
            if time.time() - float(data["at"]) < VERSIONS_MAX_AGE and data["inputs"] == json.loads(
                json.dumps(self.recipe.inputs())
            ):
                return dict(data["versions"])
        versions = resolve_versions(self.recipe)
        self.cache.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            memo,
            json.dumps(
                {"at": time.time(), "inputs": self.recipe.inputs(), "versions": versions},
                indent=2,
            ),
        )
        return versions

    # -- steps ---------------------------------------------------------------------------

    def _build(self, tmp: Path, versions: dict[str, str]) -> Built:
        """Build the guest in the work directory `tmp` (the cache publishes what it returns)."""
        for tool in ("debootstrap", "mkfs.ext4", "chroot", "tar"):
            if shutil.which(tool) is None:
                raise BlockedError(f"building the Debian guest needs {tool!r} on PATH")
        if os.geteuid() != 0:
            raise BlockedError("building the Debian guest needs root (debootstrap, chroot)")
        t0 = time.monotonic()
        suite, packages = self.recipe.suite, self.recipe.packages
        mirror = debian_mirror(suite)
        root = tmp / "root"
        for rel, text in PRE_FILES.items():
            _write(root / rel, text)
        tarball = debootstrap.package_tarball(
            self.cache, suite=suite, packages=packages, mirror=mirror, versions=versions,
            progress=self.progress, what="debootstrap (download)", only_newest=True,
        )  # fmt: skip
        debootstrap.unpack(
            root, tarball=tarball, suite=suite, packages=packages, mirror=mirror,
            progress=self.progress, what="debootstrap (unpack and configure)",
        )  # fmt: skip
        with task(self.progress, "configuring the guest"):
            release = self._configure(root)
            self._check_initramfs(root, release)
        with task(self.progress, "making the PVH GRUB image (grub-mkimage -O i386-xen_pvh)"):
            self._grub(root, tmp, release)
        installed = self._installed(root)
        boot = root / "boot"
        shutil.copyfile(boot / f"vmlinuz-{release}", tmp / "vmlinuz")
        shutil.copyfile(boot / f"initrd.img-{release}", tmp / "initrd.img")
        self._clean(root)
        run_step(
            "making the ext4 image (mkfs.ext4 -d)",
            ["mkfs.ext4", "-q", "-F", "-L", HOSTNAME, "-d", str(root),
             str(tmp / "disk.img"), self.recipe.disk_size],
            self.progress,
        )  # fmt: skip
        shutil.rmtree(root)
        with task(self.progress, "packing the disk (sparse tar)"):
            _pack_sparse(tmp / "disk.img", tmp / "disk.tar.gz")
        manifest = {
            "recipe": CACHE_RECIPE,
            "version": release,
            "kernel_release": release,
            "versions": versions,
            "installed": installed,
            "cmdline": CMDLINE,
            "seconds": round(time.monotonic() - t0, 1),
            "disk_allocated_bytes": (tmp / "disk.img").stat().st_blocks * 512,
            "disk_pack_bytes": (tmp / "disk.tar.gz").stat().st_size,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        files = {
            "kernel": (tmp / "vmlinuz", "vmlinuz"),
            "ramdisk": (tmp / "initrd.img", "initrd.img"),
            "grub": (tmp / "grub-pvh.elf", "grub-pvh.elf"),
            "disk": (tmp / "disk.img", "disk.img"),
            "disk_pack": (tmp / "disk.tar.gz", "disk.tar.gz"),
        }
        return Built(files, manifest)

    def _configure(self, root: Path) -> str:
        """The guest's own settings; returns the kernel release installed."""
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
        run_step(
            "grub-mkimage",
            [str(mkimage), "-O", GRUB_PLATFORM, "-d", str(moddir), "-c", str(early),
             "-p", "/boot/grub", "-o", str(tmp / "grub-pvh.elf"), *GRUB_MODULES],
            self.progress,
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


def ensure_debian_guest(
    *, cache: ArtifactCache | None = None, progress: ProgressSink | None = None
) -> DebianGuest:
    """The Debian guest, built on first use."""
    return DebianGuestBuilder(cache=cache, progress=progress).ensure().guest


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
    "CACHE_RECIPE",
    "DebianGuest",
    "DebianGuestBuilder",
    "GuestBuildReport",
    "ensure_debian_guest",
]
