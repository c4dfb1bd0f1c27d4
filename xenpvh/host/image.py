"""The nested host's disk image: a Debian 12 dom0 built from Debian's packages only (its
recipe: host/image_recipe).

An entry of the artifact cache rooted at `${XDG_CACHE_HOME:-~/.cache}/xenpvh/nested`, keyed
by `ImageRecipe.key()`: built once per recipe in a work directory and published complete, so
a failed or interrupted build leaves nothing that looks like a usable image.  debootstrap's
downloads are entries of the same cache (build/debootstrap.py).
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from xenpvh.build import debootstrap
from xenpvh.build.apt.sources import debian_mirror
from xenpvh.build.cache import ArtifactCache, Built, CacheEntry
from xenpvh.build.debootstrap import run_step
from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.image_recipe import DEFAULT_SUITE, DOM0_CMDLINE, RECIPE_VERSION, ImageRecipe
from xenpvh.host.tcg_cpu_model import install_tcg_cpu_model
from xenpvh.provision import apply_roles_to_chroot
from xenpvh.util.chroot import chroot_run
from xenpvh.util.fs import cache_root
from xenpvh.util.progress import Note, ProgressSink, emit, task

# The cache entry's recipe name (the manifest's `recipe`).
CACHE_RECIPE = "nested-dom0-image"
# The playbook's log, kept in the entry (what the roles did to the image).
ANSIBLE_LOG = "ansible.log"
# Artifact name -> the file's name in the work directory and in the entry.
_ARTIFACTS = {
    "disk": "dom0.img",
    "xen": "xen.elf",
    "vmlinuz": "vmlinuz",
    "initrd": "initrd.img",
    "client_key": "client_key",
    "host_key_pub": "host_ed25519.pub",
    "ansible_log": ANSIBLE_LOG,
}


@dataclass(frozen=True)
class DomImage:
    """A built image in the cache and everything needed to boot and reach it."""

    dir: Path
    disk: Path
    xen: Path
    vmlinuz: Path
    initrd: Path
    client_key: Path
    host_key_pub: Path
    dom0_cmdline: str
    kernel_version: str
    xen_version: str

    @classmethod
    def from_entry(cls, entry: CacheEntry) -> DomImage:
        """The image a cache entry holds; BrokenError when its manifest is not an image's."""
        m, files = entry.manifest, entry.artifacts
        try:
            return cls(
                dir=entry.path,
                disk=files["disk"],
                xen=files["xen"],
                vmlinuz=files["vmlinuz"],
                initrd=files["initrd"],
                client_key=files["client_key"],
                host_key_pub=files["host_key_pub"],
                dom0_cmdline=m["dom0_cmdline"],
                kernel_version=m["kernel_version"],
                xen_version=m["xen_version"],
            )
        except (KeyError, TypeError) as e:
            raise BrokenError(
                f"nested image cache entry {entry.path} is not an image: {e!r}"
            ) from e

    def known_hosts_line(self, host: str, port: int) -> str:
        """The pinned host key as a known_hosts entry for where the image answers."""
        name = host if port == 22 else f"[{host}]:{port}"
        keytype, keydata = self.host_key_pub.read_text().split()[:2]
        return f"{name} {keytype} {keydata}\n"


@dataclass(frozen=True)
class ImageBuildReport:
    image: DomImage
    cache_hit: bool
    seconds: float
    size_bytes: int  # allocated bytes of the (sparse) disk image


class ImageBuilder:
    """Builds (or finds) the dom0 image for a recipe; its steps are progress tasks."""

    def __init__(
        self,
        recipe: ImageRecipe | None = None,
        *,
        cache: ArtifactCache | None = None,
        mirror: str | None = None,
        progress: ProgressSink | None = None,
    ) -> None:
        self.recipe = recipe or ImageRecipe()
        self.cache = cache if cache is not None else ArtifactCache(cache_root("nested"))
        self._mirror = mirror
        self.progress = progress

    @property
    def path(self) -> Path:
        return self.cache.entry_path(self.recipe.key())

    def cached(self) -> DomImage | None:
        entry = self.cache.lookup(self.recipe.key())
        return DomImage.from_entry(entry) if entry is not None else None

    def ensure(self) -> ImageBuildReport:
        """Return the cached image, building it first if needed (one builder at a time)."""
        t0 = time.monotonic()
        served = self.cache.ensure(self.recipe.key(), self._build)
        img = DomImage.from_entry(served.entry)
        return ImageBuildReport(img, served.hit, time.monotonic() - t0, _allocated(img.disk))

    # -- build steps ----------------------------------------------------------------------

    def _build(self, work: Path) -> Built:
        """Build the image in the work directory `work` (the cache publishes the result)."""
        for tool in ("debootstrap", "mkfs.ext4", "ssh-keygen", "chroot"):
            if shutil.which(tool) is None:
                raise BlockedError(f"building the nested image needs {tool!r} on PATH")
        if os.geteuid() != 0:
            raise BlockedError("building the nested image needs root (debootstrap, chroot)")
        mirror = self._mirror or debian_mirror(DEFAULT_SUITE)
        suite, packages = self.recipe.suite, self.recipe.packages
        root = work / "root"
        tarball = debootstrap.package_tarball(
            self.cache, suite=suite, packages=packages, mirror=mirror, progress=self.progress
        )
        debootstrap.unpack(
            root, tarball=tarball, suite=suite, packages=packages, mirror=mirror,
            progress=self.progress,
        )  # fmt: skip
        with task(self.progress, "configuring dom0"):
            self._configure(root)
        with task(self.progress, "extracting Xen and the dom0 kernel"):
            built = self._finish(root, work)
        shutil.rmtree(root)
        return built

    def _configure(self, root: Path) -> None:
        # debootstrap can give up on a package's configuration yet exit 0 (it retries and
        # moves on); a dom0 with half-configured packages must not be cached.
        audit = subprocess.run(["chroot", str(root), "dpkg", "--audit"], capture_output=True)
        if audit.returncode != 0 or audit.stdout.strip():
            raise BrokenError(
                "debootstrap left unconfigured packages:\n"
                + audit.stdout.decode(errors="replace")[-1500:]
            )
        for rel, (content, mode) in self.recipe.files().items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            if p.is_symlink() or p.exists():
                p.unlink()
            if rel.endswith(".service") and content == b"":
                p.symlink_to("/dev/null")  # a masked unit
                continue
            p.write_bytes(content)
            p.chmod(mode)

        # Xen, the toolstack daemons, guest console logging, the backend modules, /var/lock,
        # the bridge and libvirt: the same roles that provision a lab box (site.yml), applied
        # over ansible's chroot connection.  They enable services, never start them.
        with task(self.progress, "applying the ansible roles (site.yml) to the image"):
            result = apply_roles_to_chroot(
                root,
                extra_vars=self.recipe.role_vars,
                progress=self.progress,
                log=root.parent / ANSIBLE_LOG,
            )
        emit(
            self.progress,
            Note(f"nested image: roles applied: ok={result.ok} changed={result.changed}"),
        )
        install_tcg_cpu_model(root)
        # The image's own services (the roles enable Xen's, networkd's and libvirt's).
        self._chroot(root, ["systemctl", "enable", "ssh.service"])

        # Fresh host keys: only ed25519, generated for this image and pinned beside it.
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
                "-C",
                f"root@{self.recipe.hostname}",
                "-f",
                str(root / "etc/ssh/ssh_host_ed25519_key"),
            ],
            check=True,
        )
        # The root client key: lives in the cache, its public half in the image.
        ssh_dir = root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        client = root.parent / "client_key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "xenpvh", "-f", str(client)],
            check=True,
        )
        auth = ssh_dir / "authorized_keys"
        auth.write_bytes(Path(f"{client}.pub").read_bytes())
        auth.chmod(0o600)

        # Keep the package cache out of the image.
        for d in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (root / d).glob("*"):
                if p.is_file():
                    p.unlink()
        # Each boot is a fresh machine: systemd must not think it has seen this one before.
        mid = root / "etc/machine-id"
        mid.write_bytes(b"")

    def _finish(self, root: Path, out: Path) -> Built:
        """Xen, the dom0 kernel and initrd, the host key and the ext4 image, in `out`."""
        boot = root / "boot"
        xen_gz = sorted(boot.glob("xen-4.*-amd64.gz"))
        if not xen_gz:
            raise BrokenError(f"no /boot/xen-*-amd64.gz in the image ({sorted(os.listdir(boot))})")
        xen_gz_path = xen_gz[-1]
        xen_version = xen_gz_path.name.removeprefix("xen-").removesuffix("-amd64.gz")
        with gzip.open(xen_gz_path) as src, (out / "xen.elf").open("wb") as dst:
            shutil.copyfileobj(src, dst)
        if (out / "xen.elf").read_bytes()[:4] != b"\x7fELF":
            raise BrokenError(f"{xen_gz_path.name} does not decompress to an ELF image")
        kernels = sorted(boot.glob("vmlinuz-*"))
        if not kernels:
            raise BrokenError("no /boot/vmlinuz-* in the image")
        kver = kernels[-1].name.removeprefix("vmlinuz-")
        initrd = boot / f"initrd.img-{kver}"
        if not initrd.is_file():
            raise BrokenError(f"no /boot/initrd.img-{kver} in the image")
        shutil.copy2(kernels[-1], out / "vmlinuz")
        shutil.copy2(initrd, out / "initrd.img")
        shutil.copy2(root / "etc/ssh/ssh_host_ed25519_key.pub", out / "host_ed25519.pub")

        run_step(
            "making the ext4 image",
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-L",
                "xenpvh-dom0",
                "-d",
                str(root),
                str(out / "dom0.img"),
                self.recipe.disk_size,
            ],
            self.progress,
        )
        manifest = {
            "recipe": CACHE_RECIPE,
            "version": f"Xen {xen_version}, Linux {kver}",
            "recipe_version": RECIPE_VERSION,
            "suite": self.recipe.suite,
            "packages": list(self.recipe.packages),
            "dom0_cmdline": DOM0_CMDLINE,
            "kernel_version": kver,
            "xen_version": xen_version,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        files = {name: (out / stored, stored) for name, stored in _ARTIFACTS.items()}
        return Built(files, manifest)

    # -- helpers --------------------------------------------------------------------------

    def _chroot(self, root: Path, argv: list[str]) -> None:
        chroot_run(root, argv, timeout=300, tail=500)


def ensure_image(
    recipe: ImageRecipe | None = None,
    *,
    cache: ArtifactCache | None = None,
    progress: ProgressSink | None = None,
) -> DomImage:
    """The dom0 image for `recipe`, built on first use."""
    return ImageBuilder(recipe, cache=cache, progress=progress).ensure().image


def _allocated(p: Path) -> int:
    return p.stat().st_blocks * 512


__all__ = [
    "CACHE_RECIPE",
    "DomImage",
    "ImageBuildReport",
    "ImageBuilder",
    "ensure_image",
    "install_tcg_cpu_model",
]
