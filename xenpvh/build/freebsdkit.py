"""The FreeBSD guest kit: a root filesystem FreeBSD's GENERIC kernel mounts, made with Debian's
tools alone.

- `/sbin/init`: xenpvh's own freestanding C (guestcfg/freebsd-kit/init.c, raw FreeBSD system
  calls, no libc), compiled by Debian's clang for `x86_64-unknown-freebsd` and linked by lld;
- the root: an ISO 9660 image with Rock Ridge (file modes) made by xorriso, holding /sbin/init
  and an empty /dev (the kernel mounts devfs there), mounted as `cd9660:/dev/xbd0`.

An entry of the artifact cache rooted at `${XDG_CACHE_HOME:-~/.cache}/xenpvh/freebsd-kit`,
keyed by the kit's version, the target, the compiler flags, the source, clang's and xorriso's
versions (`kit_key`).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from xenpvh.build.cache import ArtifactCache, Built
from xenpvh.build.recipes import DEBIAN_LLVM_BINDIR
from xenpvh.errors import BlockedError, BrokenError
from xenpvh.profile.loader import guestcfg_dir
from xenpvh.util.fs import cache_root

KIT_VERSION = 1
# The cache entry's recipe name (the manifest's `recipe`).
CACHE_RECIPE = "freebsd-guest-kit"
TARGET = "x86_64-unknown-freebsd13.2"
# What the kit's root is, for a FreeBSD kernel command line (`vfs.root.mountfrom=`).
ROOT_MOUNTFROM = "cd9660:/dev/xbd0"
CFLAGS = (
    "-ffreestanding",
    "-nostdlib",
    "-static",
    "-fno-stack-protector",
    "-fno-pic",
    "-O2",
    "-Wall",
    "-Wextra",
    "-Werror",
)


@dataclass(frozen=True)
class FreeBSDKit:
    init: Path
    rootfs: Path
    key: str


def init_source() -> Path:
    return guestcfg_dir() / "freebsd-kit" / "init.c"


def _tool(name: str, bindir: Path) -> str:
    path = bindir / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise BlockedError(
            f"the FreeBSD guest kit needs {name} ({bindir}/{name}; apt-get install "
            f"{'xorriso' if name == 'xorriso' else 'clang-14 lld-14'})"
        )
    return found


def _version(argv: list[str]) -> str:
    proc = subprocess.run([*argv, "--version"], capture_output=True, text=True, check=False)
    return (proc.stdout or proc.stderr).strip().splitlines()[0] if proc.returncode == 0 else ""


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-800:]
        raise BrokenError(f"{what} failed ({proc.returncode}): {tail}")


def kit_key(source: bytes, clang_version: str, xorriso_version: str) -> str:
    """The cache key: everything that shapes the kit's bytes (the full sha256, also the id
    the kit's root image is sent to a host under)."""
    h = hashlib.sha256(f"freebsd-kit {KIT_VERSION} {TARGET} {' '.join(CFLAGS)}\0".encode())
    h.update(source)
    h.update(clang_version.encode() + b"\0" + xorriso_version.encode())
    return h.hexdigest()


def build_freebsd_kit(
    cache_dir: Path | None = None, *, llvm_bindir: Path = Path(DEBIAN_LLVM_BINDIR)
) -> FreeBSDKit:
    """Build (or serve from the cache) the kit's init and root filesystem image."""
    source = init_source()
    clang = _tool("clang", llvm_bindir)
    _tool("ld.lld", llvm_bindir)
    xorriso = _tool("xorriso", Path("/usr/bin"))
    key = kit_key(source.read_bytes(), _version([clang]), _version([xorriso]))
    cache = ArtifactCache(cache_dir if cache_dir is not None else cache_root("freebsd-kit"))

    def build(work: Path) -> Built:
        tree = work / "root"
        (tree / "sbin").mkdir(parents=True)
        (tree / "dev").mkdir()
        init = tree / "sbin" / "init"
        _run(
            [clang, f"--target={TARGET}", *CFLAGS, f"--ld-path={llvm_bindir / 'ld.lld'}",
             "-o", str(init), str(source)],
            "compiling the FreeBSD init",
        )  # fmt: skip
        init.chmod(0o755)
        iso = work / "rootfs.iso"
        _run(
            [xorriso, "-as", "mkisofs", "-quiet", "-R", "-V", "XENPVH_FREEBSD",
             "-o", str(iso), str(tree)],
            "making the FreeBSD root ISO",
        )  # fmt: skip
        manifest = {"recipe": CACHE_RECIPE, "version": f"{KIT_VERSION} {TARGET}"}
        return Built({"init": (init, "init"), "rootfs": (iso, "rootfs.iso")}, manifest)

    entry = cache.ensure(key[:16], build).entry
    return FreeBSDKit(entry.artifacts["init"], entry.artifacts["rootfs"], key)


__all__ = [
    "CACHE_RECIPE",
    "ROOT_MOUNTFROM",
    "FreeBSDKit",
    "build_freebsd_kit",
    "init_source",
    "kit_key",
]
