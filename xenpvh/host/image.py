"""The nested host's disk image: a Debian 12 dom0 built from Debian's packages only.

Built once per recipe and cached under `${XDG_CACHE_HOME:-~/.cache}/xenpvh/nested/<key>`,
where key is the sha256 of everything that shapes the image (suite, package list, the files
written into it, the recipe version).  A build happens in a temp dir beside the cache entry and
is renamed into place only when complete, so a failed or interrupted build leaves nothing
that looks like a usable image.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from xenpvh.build.apt.sources import debian_mirror
from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.tcg_cpu_model import install_tcg_cpu_model
from xenpvh.util.chroot import chroot_run
from xenpvh.util.fs import cache_root, flock, sha256_bytes

# Bump when the build steps change in a way the key would not otherwise see.
RECIPE_VERSION = 5

DEFAULT_SUITE = "bookworm"

# What the image needs before the roles run: a bootable systemd Debian reachable over ssh,
# with python3 for ansible.  Xen, libvirt and the bridge tools come from the xen_host role's
# package list (`role_packages()`), so the nested host gets exactly what a lab box gets;
# debootstrap installs them up front only so that the role's apt step finds them present.
BASE_PACKAGES: tuple[str, ...] = (
    "systemd-sysv",
    "openssh-server",
    "python3",
    "linux-image-amd64",
    "iproute2",
    "busybox",
    "e2fsprogs",
    "kmod",
    "udev",
    "dbus",
    # polkitd (libvirt-daemon-system) needs default-logind, which debootstrap cannot pick.
    "libpam-systemd",
    # what `xl`'s hotplug scripts and a debugging human expect in a dom0.
    "procps",
    "less",
    # the runner role's own packages (python3-venv, sudo): present before it runs.
    "python3-venv",
    "python3-packaging",
    "sudo",
)


def role_packages(ansible_dir: Path | None = None) -> tuple[str, ...]:
    """The Debian packages the xen_host role installs with its defaults (one source of truth
    for the package list of a lab box and of the nested image)."""
    import yaml

    from xenpvh.provision import ANSIBLE_DIR

    defaults = (ansible_dir or ANSIBLE_DIR) / "roles/xen_host/defaults/main.yml"
    try:
        d = yaml.safe_load(defaults.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise BlockedError(f"cannot read the xen_host role's defaults {defaults}: {e}") from e
    names = list(d.get("xen_host_packages") or [])
    if d.get("xen_host_libvirt", True):
        names += list(d.get("xen_host_libvirt_packages") or [])
    names += list(d.get("xen_host_extra_packages") or [])
    bad = [
        n for n in names if not isinstance(n, str) or not re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", n)
    ]
    if bad:
        raise BlockedError(f"{defaults}: not Debian package names: {bad}")
    return tuple(names)


def roles_digest(ansible_dir: Path | None = None) -> str:
    """sha256 over every file of the ansible tree: a change in a role rebuilds the image."""
    from xenpvh.provision import ANSIBLE_DIR

    root = ansible_dir or ANSIBLE_DIR
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        if rel.startswith(".") or "/." in rel or rel.endswith(".retry"):
            continue
        h.update(f"{rel}\0{f.stat().st_size}\0".encode())
        h.update(f.read_bytes())
    return h.hexdigest()


# Variables for site.yml when it provisions the image: no build tools in a dom0 that only
# boots guests; the runner role's toolkit install is for lab boxes (the nested host is
# driven from outside, over ssh).
IMAGE_ROLE_VARS: Mapping[str, object] = {
    "xenpvh_build_host": False,
    "xenpvh_runner_nightly": False,
}

HOSTNAME = "xenpvh-dom0"
DISK_SIZE = "3G"
DOM0_CMDLINE = "root=/dev/vda rw console=hvc0 net.ifnames=0"

_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ImageRecipe:
    """Everything that determines the image's content; its `key()` names the cache entry."""

    suite: str = DEFAULT_SUITE
    packages: tuple[str, ...] = field(default_factory=lambda: BASE_PACKAGES + role_packages())
    hostname: str = HOSTNAME
    disk_size: str = DISK_SIZE
    extra_files: Mapping[str, bytes] = field(default_factory=dict)
    # The ansible roles that configure the image (site.yml over the chroot connection).
    roles: str = field(default_factory=roles_digest)
    role_vars: Mapping[str, object] = field(default_factory=lambda: dict(IMAGE_ROLE_VARS))

    def files(self) -> dict[str, tuple[bytes, int]]:
        """Files written into the root tree: path → (content, mode)."""
        files: dict[str, tuple[bytes, int]] = {
            "etc/hostname": (f"{self.hostname}\n".encode(), 0o644),
            "etc/hosts": (
                f"127.0.0.1 localhost\n127.0.1.1 {self.hostname}\n".encode(),
                0o644,
            ),
            "etc/fstab": (b"/dev/vda / ext4 rw,errors=remount-ro 0 1\n", 0o644),
            "etc/ssh/sshd_config.d/xenpvh.conf": (
                b"PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                b"HostKey /etc/ssh/ssh_host_ed25519_key\nUseDNS no\n",
                0o644,
            ),
            # A tty-less dom0 should not wait on a getty for the hypervisor console.
            "etc/systemd/system/serial-getty@hvc0.service": (b"", 0o644),
        }
        files.update({k: (v, 0o644) for k, v in self.extra_files.items()})
        return files

    def key(self) -> str:
        h = hashlib.sha256()
        h.update(f"recipe={RECIPE_VERSION}\nsuite={self.suite}\nsize={self.disk_size}\n".encode())
        h.update(("packages=" + ",".join(sorted(self.packages)) + "\n").encode())
        h.update(f"roles={self.roles}\n".encode())
        h.update(("role_vars=" + json.dumps(dict(self.role_vars), sort_keys=True) + "\n").encode())
        for path, (content, mode) in sorted(self.files().items()):
            h.update(f"file={path}:{mode:o}:{len(content)}\n".encode())
            h.update(content)
        return h.hexdigest()[:24]

    def packages_key(self) -> str:
        """Names the cached package tarball: only suite and package list shape it."""
        return sha256_bytes(f"{self.suite}\n{','.join(sorted(self.packages))}".encode())[:24]


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
    def load(cls, d: Path) -> DomImage:
        """Load a cache entry; raises BrokenError when it is incomplete."""
        try:
            m = json.loads((d / _MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise BrokenError(f"nested image cache entry {d} is unreadable: {e}") from e
        img = cls(
            dir=d,
            disk=d / m["disk"],
            xen=d / m["xen"],
            vmlinuz=d / m["vmlinuz"],
            initrd=d / m["initrd"],
            client_key=d / m["client_key"],
            host_key_pub=d / m["host_key_pub"],
            dom0_cmdline=m["dom0_cmdline"],
            kernel_version=m["kernel_version"],
            xen_version=m["xen_version"],
        )
        for p in (img.disk, img.xen, img.vmlinuz, img.initrd, img.client_key, img.host_key_pub):
            if not p.is_file():
                raise BrokenError(f"nested image cache entry {d} lacks {p.name}")
        return img

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
    """Builds (or finds) the dom0 image for a recipe."""

    def __init__(
        self,
        recipe: ImageRecipe | None = None,
        *,
        cache: Path | None = None,
        mirror: str | None = None,
        console: Console | None = None,
    ) -> None:
        self.recipe = recipe or ImageRecipe()
        self.cache = cache or cache_root("nested")
        self._mirror = mirror
        self.console = console

    @property
    def path(self) -> Path:
        return self.cache / self.recipe.key()

    def cached(self) -> DomImage | None:
        if (self.path / _MANIFEST).is_file():
            return DomImage.load(self.path)
        return None

    def ensure(self) -> ImageBuildReport:
        """Return the cached image, building it first if needed (one builder at a time)."""
        t0 = time.monotonic()
        img = self.cached()
        if img is not None:
            return ImageBuildReport(img, True, time.monotonic() - t0, _allocated(img.disk))
        self.cache.mkdir(parents=True, exist_ok=True)
        with flock(self.cache / ".build.lock"):
            img = self.cached()  # another process may have built it while we waited
            if img is not None:
                return ImageBuildReport(img, True, time.monotonic() - t0, _allocated(img.disk))
            # Holding the lock, no build is running: a .tmp-* dir is what a killed build
            # (SIGKILL, power loss) left behind.
            for stale in self.cache.glob(".tmp-*"):
                _rmtree_quiet(stale)
            img = self._build()
        return ImageBuildReport(img, False, time.monotonic() - t0, _allocated(img.disk))

    # -- build steps ----------------------------------------------------------------------

    def _build(self) -> DomImage:
        for tool in ("debootstrap", "mkfs.ext4", "ssh-keygen", "chroot"):
            if shutil.which(tool) is None:
                raise BlockedError(f"building the nested image needs {tool!r} on PATH")
        if os.geteuid() != 0:
            raise BlockedError("building the nested image needs root (debootstrap, chroot)")
        mirror = self._mirror or debian_mirror(DEFAULT_SUITE)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{self.recipe.key()}-", dir=self.cache))
        try:
            root = tmp / "root"
            tarball = self._package_tarball(mirror, tmp)
            self._run_logged(
                "unpacking Debian",
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
            self._configure(root)
            self._finish(root, tmp)
            shutil.rmtree(root)
            final = self.path
            tmp.chmod(0o755)  # mkdtemp made it 0700; the client key inside stays 0600
            os.rename(tmp, final)
            return DomImage.load(final)
        except BaseException:
            _rmtree_quiet(tmp)
            raise

    def _package_tarball(self, mirror: str, tmp: Path) -> Path:
        """Debootstrap's downloaded packages, cached on their own so that a change of the
        config files rebuilds without downloading again."""
        pkgdir = self.cache / "debs"
        pkgdir.mkdir(parents=True, exist_ok=True)
        tarball = pkgdir / f"{self.recipe.packages_key()}.tgz"
        if tarball.is_file():
            return tarball
        part = tmp / "debs.tgz"
        self._run_logged(
            "downloading Debian packages",
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
        return tarball

    def _configure(self, root: Path) -> None:
        self._status("configuring dom0")
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
        from xenpvh.provision import apply_roles_to_chroot

        self._status("applying the ansible roles (site.yml) to the image")
        result = apply_roles_to_chroot(
            root,
            extra_vars=self.recipe.role_vars,
            progress=self.console,
            log=root.parent / "ansible.log",
        )
        self._status(f"roles applied: ok={result.ok} changed={result.changed}")
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

    def _finish(self, root: Path, out: Path) -> DomImage:
        self._status("extracting Xen and the dom0 kernel")
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

        self._run_logged(
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
        )
        manifest = {
            "recipe_version": RECIPE_VERSION,
            "key": self.recipe.key(),
            "suite": self.recipe.suite,
            "packages": list(self.recipe.packages),
            "disk": "dom0.img",
            "xen": "xen.elf",
            "vmlinuz": "vmlinuz",
            "initrd": "initrd.img",
            "client_key": "client_key",
            "host_key_pub": "host_ed25519.pub",
            "dom0_cmdline": DOM0_CMDLINE,
            "kernel_version": kver,
            "xen_version": xen_version,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        # The manifest is written last: its presence marks a complete entry.
        (out / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        return DomImage.load(out)

    # -- helpers --------------------------------------------------------------------------

    def _chroot(self, root: Path, argv: list[str]) -> None:
        chroot_run(root, argv, timeout=300, tail=500)

    def _status(self, msg: str) -> None:
        if self.console is not None:
            self.console.log(f"[bold]nested image[/]: {msg}")

    def _run_logged(self, what: str, argv: list[str]) -> None:
        """Run a long build step; its output lines drive a status line and the tail of it
        explains a failure."""
        tail: list[str] = []
        status = (
            self.console.status(f"{what}…")
            if self.console is not None
            else contextlib.nullcontext()
        )
        with status as st:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**os.environ, "LANG": "C"},
            )
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip()[:200]
                tail = [*tail[-19:], line]
                if st is not None and line:
                    st.update(f"{what}: {line}")
            rc = proc.wait()
        self._status(f"{what}: done")
        if rc != 0:
            raise BrokenError(f"{what} failed (exit {rc}):\n" + "\n".join(tail))


def ensure_image(
    recipe: ImageRecipe | None = None,
    *,
    cache: Path | None = None,
    console: Console | None = None,
) -> DomImage:
    """The dom0 image for `recipe`, built on first use."""
    return ImageBuilder(recipe, cache=cache, console=console).ensure().image


def _allocated(p: Path) -> int:
    return p.stat().st_blocks * 512


def _rmtree_quiet(p: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(p)
