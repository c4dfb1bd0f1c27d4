"""What a run puts on the host: the host-side paths of a domain (`remote_paths`), the
content-addressed upload of kernels and hotplug scripts, and scratch disks.  Shell snippets get
their data as positional arguments, never in the script text."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from xenpvh.host.base import Host
from xenpvh.host.hotplug import HotplugScript
from xenpvh.profile.domain import DiskSpec, DomainSpec

REMOTE_ROOT = "/var/lib/xenpvh"
# Shell snippets run with their data as positional arguments (never in the script text).
MISSING_SCRIPT = 'for f do [ -s "$f" ] || printf "%s\\n" "$f"; done'
SCRATCH_SCRIPT = 'truncate -s "$1" -- "$2" && shift 2 && "$@"'
# Prints each argument that names no network interface on the host (a vif's bridge).
NO_IFACE_SCRIPT = 'for b do [ -e "/sys/class/net/$b" ] || printf "%s\\n" "$b"; done'
# Only these can be made on the host without extra tools; others must be given as targets.
SCRATCH_FS = {"ext4": ["mkfs.ext4", "-q", "-F"]}


def remote_paths(
    point: DomainSpec,
    *,
    run_id: str,
    kernel: Path | None,
    ramdisk: Path | None,
    kernel_id: Callable[[Path], str],
    remote_root: str = REMOTE_ROOT,
) -> DomainSpec:
    """`point` with the host-side paths a run gives it: kernel and ramdisk in the
    content-addressed `kernels/` (`<id>-<name>`), scratch disks and per-run copies of built
    images (`@...` targets) in the run's directory.
    Pure: `xenpvh config render` previews a run's config with it."""
    run_dir = f"{remote_root}/runs/{run_id}"
    kernels_dir = f"{remote_root}/kernels"
    disks = tuple(
        d
        if d.target and not is_image_ref(d.target)
        else dataclasses.replace(d, target=f"{run_dir}/{d.vdev}.img", format="raw")
        for d in point.disks
    )
    return dataclasses.replace(
        point,
        kernel=f"{kernels_dir}/{kernel_id(kernel)}-{kernel.name}" if kernel else point.kernel,
        ramdisk=f"{kernels_dir}/{kernel_id(ramdisk)}-{ramdisk.name}" if ramdisk else None,
        disks=disks,
    )


def is_image_ref(target: str) -> bool:
    """A disk target naming a built image (`@debian-guest:disk`), not a path on the host."""
    return target.startswith("@")


def missing_interfaces(host: Host, names: Sequence[str]) -> list[str]:
    """Which of `names` (vif bridges) are no network interface on the host."""
    if not names:
        return []
    r = host.run(["sh", "-c", NO_IFACE_SCRIPT, "sh", *names], timeout=60, check=True)
    return [line for line in r.out.splitlines() if line in names]


def missing(host: Host, paths: list[str]) -> set[str]:
    """Which of `paths` (content-addressed files) the host lacks or has empty."""
    if not paths:
        return set()
    # The paths are arguments, never part of the script text.
    r = host.run(
        ["sh", "-c", MISSING_SCRIPT, "sh", *paths],
        timeout=60,
    )
    if not r.ok:
        return set(paths)
    return {line for line in r.out.splitlines() if line} & set(paths)


def upload(
    host: Host,
    files: Sequence[tuple[Path, str]],
    scripts: Sequence[tuple[HotplugScript, str]],
) -> dict[str, int]:
    """Put kernels (local path, remote path) and hotplug scripts (script, remote path) on the
    host.  They live under content-addressed names: one round trip tells which are there
    already, and only those that are not are sent.  Returns the bytes sent per remote path
    (0 for a file the host had), which a run reports as `meta.uploads`."""
    wanted = [remote for _, remote in files]
    wanted += [path for _, path in scripts]
    lacking = missing(host, wanted)
    sent: dict[str, int] = {}
    for local, remote in files:
        sent[remote] = 0
        # put() itself skips a remote copy with the same sha256 (returns False).
        if remote in lacking and host.put(local, remote, mode=0o644) is not False:
            sent[remote] = local.stat().st_size
    for script, path in scripts:
        sent[path] = 0
        if path in lacking:
            data = script.text.encode()
            host.put_bytes(data, path, mode=0o755)
            sent[path] = len(data)
    return sent


def make_scratch(host: Host, d: DiskSpec, orig: DiskSpec) -> None:
    """Make the scratch disk `orig` asks for at `d.target` (sparse, with its filesystem)."""
    assert orig.size_mb is not None
    size = f"{orig.size_mb}M"
    if orig.fs is None:
        host.run(["truncate", "-s", size, "--", d.target], check=True)
        return
    # One round trip: the size, path and mkfs argv are arguments, not script text.
    host.run(
        [
            "sh",
            "-c",
            SCRATCH_SCRIPT,
            "sh",
            size,
            d.target,
            *SCRATCH_FS[orig.fs],
            d.target,
        ],
        check=True,
        timeout=300,
    )
