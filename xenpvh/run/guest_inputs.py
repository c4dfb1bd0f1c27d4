"""The guest's inputs: what a profile point's `@...` references name, resolved to files here
and checked before anything touches the host.

- `@guestkit:vmlinuz` / `@guestkit:initrd`: the Linux guest kit (xenpvh.build.guestkit);
- `@debian-guest:<item>`: the Debian guest's files (vmlinuz, initrd, grub; `disk` as a disk
  target), built by xenpvh.build.debian_guest;
- `@freebsd:kernel`: the newest FreeBSD kernel the build room made (or
  $XENPVH_FREEBSD_KERNEL); `@freebsd-kit:rootfs`: the FreeBSD guest kit's root ISO;
- XTF test binaries (`xtf_test`), built from the user's checkout.

The FreeBSD kernel and the XTF binaries are the user's inputs, never the project's: where one
is absent, a live test skips with exactly the reason here, and `--xen-required`
(xenpvh.pytest_plugin) tolerates exactly these skips (`TOLERATED_SKIPS`), naming them; any
other skip of a live test still fails the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from xenpvh.build.debian_guest import DebianGuest, ensure_debian_guest
from xenpvh.build.freebsd import newest_cached_kernel
from xenpvh.build.freebsdkit import build_freebsd_kit
from xenpvh.build.guestkit import GuestKit, build_linux_guest_kit
from xenpvh.build.xtf import newest_cached_test
from xenpvh.errors import BlockedError
from xenpvh.profile.domain import DomainSpec
from xenpvh.run import remote
from xenpvh.run.guest_disk import PackedImage
from xenpvh.run.remote import SCRATCH_FS

GUESTKIT_PREFIX = "@guestkit:"
# Files of the Debian guest (xenpvh.build.debian_guest): vmlinuz, initrd, grub, disk.
DEBIAN_GUEST_PREFIX = "@debian-guest:"
FREEBSD_KERNEL_REF = "@freebsd:kernel"
FREEBSD_KIT_ROOTFS_REF = "@freebsd-kit:rootfs"

FREEBSD_KERNEL_ENV = "XENPVH_FREEBSD_KERNEL"
XTF_DIR_ENV = "XENPVH_XTF_DIR"

NO_FREEBSD_KERNEL = (
    f"no FreeBSD kernel: set {FREEBSD_KERNEL_ENV}=PATH or build one with "
    "`xenpvh build freebsd --tree PATH`"
)
NO_XTF = (
    f"no XTF test binaries: set {XTF_DIR_ENV} to a built xtf tree or build them with "
    "`xenpvh build xtf --tree PATH`"
)
# The skips `--xen-required` tolerates: the user's inputs, absent on this machine.
TOLERATED_SKIPS: tuple[str, ...] = (NO_FREEBSD_KERNEL, NO_XTF)


def freebsd_kernel() -> Path | None:
    """`$XENPVH_FREEBSD_KERNEL`, else the newest FreeBSD kernel in the build cache."""
    given = os.environ.get(FREEBSD_KERNEL_ENV)
    if given:
        return Path(given)
    return newest_cached_kernel()


def xtf_test(name: str) -> Path | None:
    """The XTF test binary `name` (e.g. `test-hvm64-example`) under `$XENPVH_XTF_DIR` (in
    that directory itself, or in a built tree's tests/<test>/ directories), else in the
    newest XTF build of the cache."""
    root = os.environ.get(XTF_DIR_ENV)
    if not root:
        return newest_cached_test(name)
    base = Path(root)
    for candidate in (base / name, *sorted(base.glob(f"tests/*/{name}"))):
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class ResolvedInputs:
    """A point's inputs as files here: kernel, ramdisk, and the built image of each disk
    whose target is an `@...` reference (by vdev)."""

    kernel: Path
    ramdisk: Path | None
    images: dict[str, PackedImage] = field(default_factory=dict)


class GuestInputs:
    """Resolves one run's `@...` references; builds (or takes from the cache) only what the
    point names.  `guest_kit`: the Linux guest kit, a callable making it, or None (built
    on first use)."""

    def __init__(self, guest_kit: GuestKit | Callable[[], GuestKit] | None = None) -> None:
        self.guest_kit = guest_kit
        # The Debian guest's cache entry, once looked up (a test may set its own).
        self.debian_guest: DebianGuest | None = None

    def resolve_point(self, point: DomainSpec) -> ResolvedInputs:
        """Every input of `point`, checked: BlockedError for anything missing or malformed
        (our input), before the host is touched."""
        kernel = self.resolve(point.kernel, "kernel")
        if kernel is None:
            raise BlockedError("the profile point has no kernel")
        ramdisk = self.resolve(point.ramdisk, "ramdisk")
        for what, p in (("kernel", kernel), ("ramdisk", ramdisk)):
            if p is not None and not p.is_file():
                raise BlockedError(f"{what} {p} does not exist (or is not a file)")
        for d in point.disks:
            if not d.target and d.size_mb is None:
                raise BlockedError(f"disk {d.vdev}: neither a target nor a size_mb")
            if not d.target and d.fs is not None and d.fs not in SCRATCH_FS:
                raise BlockedError(
                    f"disk {d.vdev}: cannot make a scratch {d.fs!r} filesystem "
                    f"(supported: {', '.join(SCRATCH_FS)}, or none)"
                )
            if d.size_mb is not None and not 1 <= d.size_mb <= 64 * 1024:
                raise BlockedError(f"disk {d.vdev}: size_mb {d.size_mb} out of range 1-65536")
        images = {
            d.vdev: self.disk_image(d.target, d.vdev)
            for d in point.disks
            if remote.is_image_ref(d.target)
        }
        return ResolvedInputs(kernel, ramdisk, images)

    def resolve(self, value: str | None, what: str) -> Path | None:
        if value is None or value == "":
            return None
        if value.startswith(GUESTKIT_PREFIX):
            kit = self._kit()
            key = value[len(GUESTKIT_PREFIX) :]
            paths = {"vmlinuz": kit.kernel, "kernel": kit.kernel, "initrd": kit.ramdisk}
            if key not in paths:
                raise BlockedError(
                    f"{what} {value!r}: unknown guest kit item {key!r} (known: vmlinuz, initrd)"
                )
            return Path(paths[key])
        if value.startswith(DEBIAN_GUEST_PREFIX):
            return self._debian_guest().item(value[len(DEBIAN_GUEST_PREFIX) :])
        if value == FREEBSD_KERNEL_REF:
            found = freebsd_kernel()
            if found is None or not found.is_file():
                raise BlockedError(f"{what} {value!r}: {NO_FREEBSD_KERNEL}")
            return found
        return Path(value).expanduser()

    def disk_image(self, target: str, vdev: str) -> PackedImage:
        """The built image a disk's `@...` target names: the Debian guest's disk, or the
        FreeBSD guest kit's root (a small ISO, sent as it is)."""
        if target == FREEBSD_KIT_ROOTFS_REF:
            kit = build_freebsd_kit()
            return PackedImage(kit.rootfs, "", kit.key, name="freebsd-kit.iso")
        if target != f"{DEBIAN_GUEST_PREFIX}disk":
            raise BlockedError(
                f"disk {vdev}: target {target!r} names no built image "
                f"(known: {DEBIAN_GUEST_PREFIX}disk, {FREEBSD_KIT_ROOTFS_REF})"
            )
        guest = self._debian_guest()
        return PackedImage(guest.disk_pack, guest.disk.name, guest.disk_sha256)

    def _debian_guest(self) -> DebianGuest:
        if self.debian_guest is None:
            self.debian_guest = ensure_debian_guest()
        return self.debian_guest

    def _kit(self) -> GuestKit:
        if callable(self.guest_kit):
            self.guest_kit = self.guest_kit()
        if self.guest_kit is None:
            self.guest_kit = build_linux_guest_kit()
        return self.guest_kit


__all__ = [
    "DEBIAN_GUEST_PREFIX",
    "FREEBSD_KERNEL_ENV",
    "FREEBSD_KERNEL_REF",
    "FREEBSD_KIT_ROOTFS_REF",
    "GUESTKIT_PREFIX",
    "NO_FREEBSD_KERNEL",
    "NO_XTF",
    "TOLERATED_SKIPS",
    "XTF_DIR_ENV",
    "GuestInputs",
    "ResolvedInputs",
    "freebsd_kernel",
    "xtf_test",
]
