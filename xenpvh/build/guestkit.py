"""The Linux guest kit: Debian 12's kernel (vmlinuz of linux-image-amd64) and a busybox-static
initramfs (guestkit_initramfs) that holds the Xen PV frontends of that very kernel and an /init
that brings the guest to a real `login:` prompt on its console.

    build_linux_guest_kit() -> GuestKit(kernel=.../vmlinuz, ramdisk=.../initrd.gz, ...)

The kit is an entry of the artifact cache rooted at `${XDG_CACHE_HOME:-~/.cache}/xenpvh/
guestkit`, keyed (`kit_key`) by the exact package versions, the /init template, the /etc files
and the module list.  Which versions to use is resolved through debpkg's private apt lists and
memoised in `.resolved.json` beside the entries until those lists change, so a cached kit is
found without asking apt anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from xenpvh.build import debpkg
from xenpvh.build.cache import ArtifactCache, Built, CacheEntry
from xenpvh.build.guestkit_initramfs import (
    DIRECTORIES,
    ETC_FILES,
    INIT_TEMPLATE,
    write_initramfs,
)
from xenpvh.build.kmod import ModuleDb
from xenpvh.errors import BlockedError, BrokenError
from xenpvh.util.fs import atomic_write_text, cache_root, sha256_bytes
from xenpvh.util.progress import Note, ProgressSink, emit, task

# Bump when the build steps change in a way the key would not otherwise see.
KIT_VERSION = 1
# The cache entry's recipe name (the manifest's `recipe`).
CACHE_RECIPE = "linux-guest-kit"
KERNEL_META = "linux-image-amd64"
KERNEL_PREFIX = "linux-image-"
BUSYBOX = "busybox-static"
# What the guest loads, in this order (dependencies are added before their users).
# crc32c-generic: ext4 and jbd2 ask the crypto API for "crc32c" at mount time (a soft
# dependency modules.dep does not list), and a guest CPU may lack SSE4.2 for crc32c-intel.
MODULES = ("xen-blkfront", "xen-netfront", "crc32c-generic", "ext4")
# The private apt lists package resolution depends on; None: debpkg's (tests point it away).
APT_LISTS: Path | None = None
# A memoised resolution is trusted this long even when the lists did not change, so that a
# kit picks up Debian's kernel updates within a week.
RESOLVED_MAX_AGE = 7 * 24 * 3600.0

_RESOLVED = ".resolved.json"


@dataclass(frozen=True)
class GuestKit:
    """A built kit: paths inside its cache entry."""

    kernel: Path
    ramdisk: Path
    kernel_release: str
    key: str
    kernel_package: debpkg.DebPackage
    busybox_package: debpkg.DebPackage
    modules: tuple[str, ...]

    @classmethod
    def from_entry(cls, entry: CacheEntry) -> GuestKit:
        """The kit a cache entry holds; BrokenError when its manifest is not a kit's."""
        meta = entry.manifest
        try:
            return cls(
                kernel=entry.artifacts["kernel"],
                ramdisk=entry.artifacts["ramdisk"],
                kernel_release=meta["kernel_release"],
                key=entry.key,
                kernel_package=debpkg.DebPackage(*meta["kernel_package"]),
                busybox_package=debpkg.DebPackage(*meta["busybox_package"]),
                modules=tuple(meta["modules"]),
            )
        except (KeyError, TypeError, BlockedError) as e:
            raise BrokenError(f"guest kit cache entry {entry.path} is not a kit: {e!r}") from e


def kit_key(kernel: debpkg.DebPackage, busybox: debpkg.DebPackage) -> str:
    """The cache key: everything that shapes the kit's bytes."""
    inputs = {
        "kit": KIT_VERSION,
        "kernel": [kernel.name, kernel.version],
        "busybox": [busybox.name, busybox.version],
        "init": INIT_TEMPLATE,
        "modules": list(MODULES),
        "etc": ETC_FILES,
        "dirs": DIRECTORIES,
    }
    blob = json.dumps(inputs, sort_keys=True).encode()
    return sha256_bytes(blob)[:24]


def build_linux_guest_kit(
    cache_dir: Path | None = None, *, progress: ProgressSink | None = None
) -> GuestKit:
    """The guest kit for Debian 12's current kernel, built on first use and cached (in
    `cache_dir` when given).  Downloads and build steps are progress tasks of `progress`."""
    cache = ArtifactCache(cache_dir if cache_dir is not None else cache_root("guestkit"))
    with debpkg.reporting(progress):
        kernel, busybox = _resolve_packages(cache.root)
        key = kit_key(kernel, busybox)
        served = cache.ensure(key, lambda work: _build(work, kernel, busybox, progress))
    kit = GuestKit.from_entry(served.entry)
    if not served.hit:
        size = kit.kernel.stat().st_size + kit.ramdisk.stat().st_size
        seconds = served.entry.manifest.get("seconds")
        emit(
            progress,
            Note(
                f"guest kit {key}: kernel {kit.kernel_release}, {size / 1e6:.1f} MB, "
                f"built in {seconds} s"
            ),
        )
    return kit


def _resolve_packages(cache: Path) -> tuple[debpkg.DebPackage, debpkg.DebPackage]:
    """(kernel, busybox) to build from: memoised in `cache`/.resolved.json until the apt
    lists change (apt-get update) or the memo is a week old."""
    lists = APT_LISTS if APT_LISTS is not None else debpkg.lists_dir()
    cache.mkdir(parents=True, exist_ok=True)
    memo_path = cache / _RESOLVED
    memo = _read_json(memo_path)
    at = memo.get("at")
    fresh = isinstance(at, int | float) and time.time() - at < RESOLVED_MAX_AGE
    if memo.get("lists") == _fingerprint(lists) and fresh:
        with contextlib.suppress(KeyError, TypeError, BlockedError):
            return (
                debpkg.DebPackage(*memo["kernel"]),
                debpkg.DebPackage(*memo["busybox"]),
            )
    found = debpkg.candidates(KERNEL_META, BUSYBOX)
    kernel = debpkg.pinned_dependency(found[KERNEL_META], KERNEL_PREFIX)
    busybox = found[BUSYBOX]
    memo = {
        # After candidates(): it may have just refreshed the lists.
        "lists": _fingerprint(lists),
        "at": time.time(),
        "kernel": [kernel.name, kernel.version],
        "busybox": [busybox.name, busybox.version],
    }
    atomic_write_text(memo_path, json.dumps(memo, indent=2))
    return kernel, busybox


def _build(
    work: Path, kernel: debpkg.DebPackage, busybox: debpkg.DebPackage, progress: ProgressSink | None
) -> Built:
    """Download, unpack and pack the kit in `work` (the cache publishes what it returns)."""
    t0 = time.monotonic()
    debs = work / "debs"
    kernel_deb = debpkg.download(kernel, debs)
    busybox_deb = debpkg.download(busybox, debs)
    tree = work / "unpacked"
    with task(progress, f"unpacking {kernel}"):
        debpkg.extract(kernel_deb, tree, _kernel_member)
    with task(progress, f"unpacking {busybox}"):
        debpkg.extract(busybox_deb, tree, _busybox_member)
    release, vmlinuz, moddir = _kernel_files(tree)
    with task(progress, "resolving module dependencies"):
        db = ModuleDb.from_tree(moddir)
        order = db.load_order(MODULES)
    with task(progress, "writing the initramfs"):
        shutil.copyfile(vmlinuz, work / "vmlinuz")
        write_initramfs(work / "initrd.gz", tree, release, moddir, db, order)
    manifest = {
        "recipe": CACHE_RECIPE,
        "version": release,
        "kernel_release": release,
        "kernel_package": [kernel.name, kernel.version],
        "busybox_package": [busybox.name, busybox.version],
        "modules": order,
        "seconds": round(time.monotonic() - t0, 1),
    }
    files = {"kernel": (work / "vmlinuz", "vmlinuz"), "ramdisk": (work / "initrd.gz", "initrd.gz")}
    return Built(files, manifest)


def _kernel_member(path: str) -> bool:
    path = path.removeprefix("usr/")  # merged-/usr packages ship usr/lib/modules
    return path.startswith(("boot/vmlinuz-", "lib/modules/"))


def _busybox_member(path: str) -> bool:
    return path in {"bin/busybox", "usr/bin/busybox"}


def _kernel_files(tree: Path) -> tuple[str, Path, Path]:
    """(release, vmlinuz, module dir) of the unpacked kernel package."""
    images = sorted((tree / "boot").glob("vmlinuz-*"))
    if len(images) != 1:
        raise BrokenError(f"the kernel package holds {len(images)} vmlinuz images, not 1")
    release = images[0].name.removeprefix("vmlinuz-")
    for moddir in (tree / "lib/modules" / release, tree / "usr/lib/modules" / release):
        if moddir.is_dir():
            return release, images[0], moddir
    raise BrokenError(f"the kernel package has no /lib/modules/{release}")


def _fingerprint(lists: Path) -> str:
    """Names, sizes and mtimes of the apt list files: changes whenever apt-get update
    fetched something new."""
    h = hashlib.sha256()
    if lists.is_dir():
        for p in sorted(lists.iterdir()):
            if p.is_file() and p.name != "lock":
                st = p.stat()
                h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


__all__ = [
    "CACHE_RECIPE",
    "INIT_TEMPLATE",
    "MODULES",
    "GuestKit",
    "build_linux_guest_kit",
    "kit_key",
]
