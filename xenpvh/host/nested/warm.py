"""The saved machine state of a nested host (warm start): a booted, ready host `savevm`'d into a
qcow2 overlay of the dom0 image, kept beside the image under a key of everything that shapes
it; later hosts resume a throw-away sparse copy of it with `-loadvm`."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from xenpvh.build.qemu import QemuBinary, fingerprint
from xenpvh.errors import BrokenError
from xenpvh.host.image import DomImage
from xenpvh.host.nested.reap import reap_partial_snapshots
from xenpvh.host.qmp import Qmp
from xenpvh.util.fs import flock, sha256_bytes, sha256_file

# The internal snapshot name of a booted, ready host inside a warm-*.qcow2 file.
WARM_SNAPSHOT = "xenpvh-ready"
# Bump when what a warm snapshot contains changes in a way its key would not see.
WARM_VERSION = 1
# Saved machine states kept per image (each is a qcow2 holding dom0's disk delta and RAM).
WARM_KEEP = 3


def warm_key(
    image: DomImage,
    *,
    xen: Path,
    xen_cmdline: str,
    dom0_cmdline: str,
    memory: str,
    cpus: int,
    accel: str,
    tcg_thread: str | None,
    qemu: QemuBinary,
) -> str:
    """The key of a saved machine state: every input that shapes the booted machine."""
    inputs = {
        "v": WARM_VERSION,
        "image": image.dir.name,
        "xen": sha256_file(xen),
        "xen_cmdline": xen_cmdline,
        "dom0_cmdline": dom0_cmdline,
        "memory": memory,
        "cpus": cpus,
        "accel": accel,
        "tcg_thread": tcg_thread,
        "qemu": fingerprint(qemu),
    }
    return sha256_bytes(json.dumps(inputs, sort_keys=True).encode())[:16]


def create_overlay(base: Path, overlay: Path) -> None:
    """A qcow2 overlay of the raw dom0 disk: what a cold boot writes and `savevm` saves into."""
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            str(base),
            str(overlay),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


def savevm(monitor: Path) -> None:
    """Save the running machine as WARM_SNAPSHOT in its qcow2 disk; BrokenError if QEMU did
    not."""
    with Qmp(monitor, timeout=30) as q:
        out = q.hmp(f"savevm {WARM_SNAPSHOT}", timeout=900)
        if out.strip():
            raise BrokenError(f"savevm failed: {out.strip()}")
        if WARM_SNAPSHOT not in q.hmp("info snapshots"):
            raise BrokenError("savevm left no snapshot")


def copy_sparse(src: Path, dst: Path) -> None:
    # cp keeps holes and uses reflinks where the filesystem has them.
    r = subprocess.run(
        ["cp", "--sparse=always", "--reflink=auto", "--", str(src), str(dst)],
        capture_output=True,
        timeout=600,
    )
    if r.returncode != 0:
        raise BrokenError(f"copying {src} failed: {r.stderr.decode(errors='replace')}")


def prune_warm(d: Path, *, keep: int) -> None:
    files = sorted(d.glob("warm-*.qcow2"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        old.unlink(missing_ok=True)


def warm_snapshot(
    image: DomImage,
    key: str,
    save: Callable[[DomImage, Path], bool],
    log: Callable[[str], None],
) -> Path | None:
    """The saved machine state `key` beside `image`; made on first use by `save(image,
    overlay)` (one cold boot and `savevm` into the overlay), under a lock so that one process
    makes it while the others wait.  None when saving failed (the caller boots cold)."""
    path = image.dir / f"warm-{key}.qcow2"
    if path.is_file():
        os.utime(path)  # most recently used survives pruning
        return path
    with flock(image.dir / ".warm.lock"):
        if path.is_file():
            return path
        reap_partial_snapshots(image.dir)  # of a process killed while saving one
        log("nested host: no saved machine state yet: booting cold once to save one")
        part = image.dir / f".warm-{key}-{os.getpid()}.qcow2"
        t0 = time.monotonic()
        try:
            create_overlay(image.disk, part)
            if not save(image, part):
                return None
            os.rename(part, path)
        finally:
            part.unlink(missing_ok=True)
        log(f"nested host: machine state saved in {time.monotonic() - t0:.0f}s")
        prune_warm(image.dir, keep=WARM_KEEP)
    return path
