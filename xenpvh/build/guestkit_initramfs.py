"""What the Linux guest kit's initramfs holds: busybox and its applets, a few /etc files,
the Xen PV frontend modules of the kit's kernel (decompressed) and an /init that brings the
guest to a real `login:` prompt on its console.

`render_init` and the tables below are pure (the kit's cache key covers them);
`write_initramfs` packs an unpacked kernel and busybox into the gzip'd newc archive.
"""

from __future__ import annotations

import gzip
import subprocess
from collections.abc import Sequence
from pathlib import Path

from xenpvh.build.cpio import NewcWriter
from xenpvh.build.kmod import ModuleDb, plain_module_path, read_module
from xenpvh.errors import BlockedError, BrokenError

HOSTNAME = "xenpvh-guest"

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


def write_initramfs(
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


__all__ = [
    "DIRECTORIES",
    "ETC_FILES",
    "HOSTNAME",
    "INIT_TEMPLATE",
    "render_init",
    "write_initramfs",
]
