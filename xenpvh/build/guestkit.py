"""The Linux guest kit: Debian 12's kernel (vmlinuz of linux-image-amd64) and a busybox-static
initramfs that holds the Xen PV frontends of that very kernel and an /init that brings the
guest to a real `login:` prompt on its console.

    build_linux_guest_kit() -> GuestKit(kernel=.../vmlinuz, ramdisk=.../initrd.gz, ...)

The kit is built once per input and cached under `${XDG_CACHE_HOME:-~/.cache}/xenpvh/guestkit/
<key>`, where the key (`kit_key`) covers the exact package versions, the /init template and
the module list.  A build happens in a temp dir beside the entry and is renamed into place
only when complete: a failed build leaves nothing that looks like a kit.  Which versions to
use is resolved through debpkg's private apt lists and memoised in `.resolved.json` until
those lists change, so a cached kit is found without asking apt anything.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.errors import LiveError
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from xenpvh.build import debpkg
from xenpvh.build.cpio import NewcWriter
from xenpvh.build.kmod import ModuleDb, plain_module_path, read_module
from xenpvh.errors import BlockedError, BrokenError
from xenpvh.util.fs import atomic_write_text, cache_root, flock, sha256_bytes

# Bump when the build steps change in a way the key would not otherwise see.
KIT_VERSION = 1
KERNEL_META = "linux-image-amd64"
KERNEL_PREFIX = "linux-image-"
BUSYBOX = "busybox-static"
# What the guest loads, in this order (dependencies are added before their users).
# crc32c-generic: ext4 and jbd2 ask the crypto API for "crc32c" at mount time (a soft
# dependency modules.dep does not list), and a guest CPU may lack SSE4.2 for crc32c-intel.
MODULES = ("xen-blkfront", "xen-netfront", "crc32c-generic", "ext4")
HOSTNAME = "xenpvh-guest"
# The private apt lists package resolution depends on; None: debpkg's (tests point it away).
APT_LISTS: Path | None = None
# A memoised resolution is trusted this long even when the lists did not change, so that a
# kit picks up Debian's kernel updates within a week.
RESOLVED_MAX_AGE = 7 * 24 * 3600.0

_MANIFEST = "manifest.json"
_RESOLVED = ".resolved.json"

# /init (busybox sh).  @RELEASE@ and @MODULES@ are filled by render_init.  No profile matches
# a line of its own (guestcfg/linux-pvh.toml judges only what Linux prints): its lines are
# for people reading the console.
INIT_TEMPLATE = r"""#!/bin/sh
# The xenpvh guest kit's /init: PID 1 of a busybox initramfs.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t devtmpfs devtmpfs /dev
# The kernel opened the console before /dev existed here: without reopening it PID 1 has no
# output at all.
exec 0</dev/console 1>/dev/console 2>/dev/console
mount -t proc proc /proc
mount -t sysfs sysfs /sys
hostname xenpvh-guest
release=$(uname -r)
echo "xenpvh-init: started, kernel $release"
if [ "$release" != "@RELEASE@" ]; then
    echo "xenpvh-init: the modules are for @RELEASE@, loading them will fail"
fi

# Dependencies come first; a frontend refuses (ENODEV) when not running on Xen.
for mod in @MODULES@; do
    insmod "/lib/modules/@RELEASE@/$mod" || echo "xenpvh-init: insmod $mod failed"
done

count() {
    n=0
    for path in "$@"; do
        [ -e "$path" ] && n=$((n + 1))
    done
    echo "$n"
}

# Frontends connect to their backends after insmod returns: wait (30 s at most) until every
# vbd/vif xenbus announced has its block or network device.
wait_for() {
    i=0
    while [ "$(count $2)" -lt "$(count $1)" ] && [ "$i" -lt 150 ]; do
        usleep 200000
        i=$((i + 1))
    done
}
wait_for '/sys/bus/xen/devices/vbd-*' '/sys/block/xvd*'
wait_for '/sys/bus/xen/devices/vif-*' '/sys/class/net/eth*'

ip link set lo up
# Linux's netfront prints nothing per device; this line is for the reader (XenStore proves
# the vif to the checker).
for dev in /sys/class/net/eth*; do
    [ -e "$dev" ] || continue
    ifname=${dev##*/}
    if ip link set "$ifname" up; then
        echo "xenpvh-init: netfront $ifname up"
    else
        echo "xenpvh-init: netfront $ifname could not be brought up"
    fi
done

if [ -b /dev/xvda ]; then
    if mount /dev/xvda /mnt; then
        echo "xenpvh-init: /dev/xvda mounted on /mnt"
    else
        echo "xenpvh-init: cannot mount /dev/xvda"
    fi
else
    echo "xenpvh-init: no /dev/xvda"
fi

# xenpvh.busy=SECONDS: keep every CPU busy in user space that long before the prompt.  A
# load for benchmarks of the host (interrupts taken from user mode), not a stage.
busy=
for word in $(cat /proc/cmdline); do
    case "$word" in
        xenpvh.busy=*) busy=${word#xenpvh.busy=} ;;
    esac
done
case "$busy" in
    ''|*[!0-9]*) ;;
    *)
        echo "xenpvh-init: busy in user space for $busy s on $(nproc) CPUs"
        end=$(( $(date +%s) + busy ))
        for cpu in $(seq 1 "$(nproc)"); do
            (while [ "$(date +%s)" -lt "$end" ]; do
                i=0
                while [ "$i" -lt 20000 ]; do i=$((i + 1)); done
            done) &
        done
        wait
        echo "xenpvh-init: busy done"
        ;;
esac

# The console the kernel writes to is the last one listed (hvc0 on Xen, ttyS0 on a PC).
tty=
for name in $(cat /sys/class/tty/console/active 2>/dev/null); do
    tty=$name
done
if [ -z "$tty" ] || [ ! -c "/dev/$tty" ]; then
    tty=ttyS0
    [ -c /dev/hvc0 ] && tty=hvc0
fi
echo "xenpvh-init: getty on $tty"
# PID 1 must never exit (the kernel would panic): respawn getty after every logout.
while :; do
    /sbin/getty -L $tty 115200 vt100
    sleep 1
done
"""

# Root without a password: a throw-away test guest whose console only the harness reaches.
ETC_FILES: dict[str, tuple[str, int]] = {
    "etc/passwd": ("root::0:0:root:/root:/bin/sh\n", 0o644),
    "etc/group": ("root:x:0:\n", 0o644),
    "etc/hostname": (f"{HOSTNAME}\n", 0o644),
    "etc/profile": ("export PATH=/sbin:/bin:/usr/sbin:/usr/bin\n", 0o644),
}
DIRECTORIES: dict[str, int] = {
    "dev": 0o755,
    "proc": 0o555,
    "sys": 0o555,
    "mnt": 0o755,
    "root": 0o700,
    "tmp": 0o1777,
    "etc": 0o755,
}


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
    def load(cls, entry: Path) -> GuestKit | None:
        """The kit in cache entry `entry`, None when there is none (or it is incomplete)."""
        try:
            meta = json.loads((entry / _MANIFEST).read_text())
            kit = cls(
                kernel=entry / meta["kernel"],
                ramdisk=entry / meta["ramdisk"],
                kernel_release=meta["kernel_release"],
                key=meta["key"],
                kernel_package=debpkg.DebPackage(*meta["kernel_package"]),
                busybox_package=debpkg.DebPackage(*meta["busybox_package"]),
                modules=tuple(meta["modules"]),
            )
        except (OSError, ValueError, KeyError, TypeError, BlockedError):
            return None
        return kit if kit.kernel.is_file() and kit.ramdisk.is_file() else None


# --------------------------------------------------------------------------- pure parts


def render_init(kernel_release: str, module_paths: Sequence[str]) -> str:
    """/init for `kernel_release`, loading `module_paths` (relative to its /lib/modules
    directory) in the given order."""
    for value in (kernel_release, *module_paths):
        # Words of a shell `for` list and a path: keep them plain.
        if not value or any(c.isspace() or c in "\"'`$\\;&|<>()*?[]#~@" for c in value):
            raise BlockedError(f"{value!r} cannot appear in the guest's /init")
    return INIT_TEMPLATE.replace("@RELEASE@", kernel_release).replace(
        "@MODULES@", " ".join(module_paths)
    )


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


# --------------------------------------------------------------------------- the build


def build_linux_guest_kit(
    cache_dir: Path | None = None,
    *,
    console: Console | None = None,
    progress: Progress | None = None,
) -> GuestKit:
    """The guest kit for Debian 12's current kernel, built on first use and cached.

    Downloads and build steps show as tasks of `progress` (the caller's), or of a progress
    display of its own on `console` (stderr by default)."""
    cache = Path(cache_dir) if cache_dir is not None else cache_root("guestkit")
    cache.mkdir(parents=True, exist_ok=True)
    with _progress(console, progress) as shown, debpkg.reporting(shown):
        return _find_or_build(cache, shown)


def _find_or_build(cache: Path, progress: Progress | None) -> GuestKit:
    kernel, busybox = _resolve_packages(cache)
    key = kit_key(kernel, busybox)
    kit = GuestKit.load(cache / key)
    if kit is not None:
        return kit
    with flock(cache / ".build.lock"):
        kit = GuestKit.load(cache / key)  # another process built it while we waited
        if kit is not None:
            return kit
        # Holding the lock no build runs: a .tmp-* dir is what a killed one left, and an
        # entry that does not load was damaged after its build (it would block the rename).
        for stale in [*cache.glob(".tmp-*"), cache / key]:
            shutil.rmtree(stale, ignore_errors=True)
        return _build(cache, key, kernel, busybox, progress)


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
    cache: Path,
    key: str,
    kernel: debpkg.DebPackage,
    busybox: debpkg.DebPackage,
    progress: Progress | None,
) -> GuestKit:
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=cache))
    try:
        debs = tmp / "debs"
        kernel_deb = debpkg.download(kernel, debs)
        busybox_deb = debpkg.download(busybox, debs)
        tree = tmp / "unpacked"
        with _step(progress, f"unpacking {kernel}"):
            debpkg.extract(kernel_deb, tree, _kernel_member)
        with _step(progress, f"unpacking {busybox}"):
            debpkg.extract(busybox_deb, tree, _busybox_member)
        release, vmlinuz, moddir = _kernel_files(tree)
        with _step(progress, "resolving module dependencies"):
            db = ModuleDb.from_tree(moddir)
            order = db.load_order(MODULES)
        with _step(progress, "writing the initramfs"):
            shutil.copyfile(vmlinuz, tmp / "vmlinuz")
            _write_initramfs(tmp / "initrd.gz", tree, release, moddir, db, order)
        shutil.rmtree(tree)
        shutil.rmtree(debs)
        manifest = {
            "key": key,
            "kernel": "vmlinuz",
            "ramdisk": "initrd.gz",
            "kernel_release": release,
            "kernel_package": [kernel.name, kernel.version],
            "busybox_package": [busybox.name, busybox.version],
            "modules": order,
            "seconds": round(time.monotonic() - t0, 1),
        }
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        tmp.chmod(0o755)  # mkdtemp made it 0700
        os.rename(tmp, cache / key)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    kit = GuestKit.load(cache / key)
    if kit is None:
        raise BrokenError(f"the guest kit just built in {cache / key} does not load")
    if progress is not None:
        size = kit.kernel.stat().st_size + kit.ramdisk.stat().st_size
        progress.console.log(
            f"guest kit {key}: kernel {release}, {size / 1e6:.1f} MB, "
            f"built in {manifest['seconds']} s"
        )
    return kit


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


def _busybox_binary(tree: Path) -> Path:
    for candidate in (tree / "bin/busybox", tree / "usr/bin/busybox"):
        if candidate.is_file():
            return candidate
    raise BrokenError("the busybox-static package holds no busybox binary")


def _applets(busybox: Path) -> list[str]:
    """Where busybox's applets live (`sbin/getty`, `usr/bin/cut`, ...), from the binary."""
    try:
        proc = subprocess.run([str(busybox), "--list-full"], capture_output=True, timeout=30)
    except OSError as e:
        raise BrokenError(f"cannot run {busybox.name} to list its applets: {e}") from e
    if proc.returncode != 0:
        raise BrokenError(f"busybox --list-full exited {proc.returncode}")
    return sorted(set(proc.stdout.decode().split()))


def _write_initramfs(
    out: Path, tree: Path, release: str, moddir: Path, db: ModuleDb, order: Sequence[str]
) -> None:
    """The gzip'd newc archive: directories, busybox and its applets, device nodes the
    kernel needs before /init mounts devtmpfs, /etc, the modules (decompressed) and /init."""
    busybox = _busybox_binary(tree)
    module_paths = [plain_module_path(db.paths[name]) for name in order]
    with (
        out.open("wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz,
        NewcWriter(gz) as cpio,
    ):
        for name, mode in DIRECTORIES.items():
            cpio.add_directory(name, mode)
        cpio.add_char_device("dev/console", 5, 1, 0o600)
        cpio.add_char_device("dev/null", 1, 3, 0o666)
        for name, (text, mode) in ETC_FILES.items():
            cpio.add_file(name, text.encode(), mode)
        cpio.add_file("bin/busybox", busybox.read_bytes(), 0o755)
        for applet in _applets(busybox):
            if applet != "bin/busybox":
                cpio.add_symlink(applet, "/bin/busybox")
        for name, rel in zip(order, module_paths, strict=True):
            data = read_module(moddir / db.paths[name])
            cpio.add_file(f"lib/modules/{release}/{rel}", data, 0o644)
        cpio.add_file("init", render_init(release, module_paths).encode(), 0o755)


# --------------------------------------------------------------------------- helpers


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


@contextlib.contextmanager
def _progress(console: Console | None, given: Progress | None) -> Iterator[Progress | None]:
    """`given`, or a live progress display on `console` (stderr by default); none when
    another live display (a caller's status line) already owns the console."""
    if given is not None:
        yield given
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]guest kit[/]: {task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console or Console(stderr=True),
    )
    try:
        progress.start()
    except LiveError:
        yield None
        return
    try:
        yield progress
    finally:
        progress.stop()


@contextlib.contextmanager
def _step(progress: Progress | None, what: str) -> Iterator[None]:
    """A build step shown as a pulsing task that completes when the step does."""
    if progress is None:
        yield
        return
    task = progress.add_task(what, total=None)
    try:
        yield
    except BaseException:
        progress.update(task, failed=True)  # shown as such by make_progress's column
        raise
    progress.update(task, total=1, completed=1)


__all__ = [
    "INIT_TEMPLATE",
    "MODULES",
    "GuestKit",
    "build_linux_guest_kit",
    "kit_key",
    "render_init",
]
