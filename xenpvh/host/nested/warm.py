"""The saved machine state of a nested host (warm start): a booted, ready host `savevm`'d into a
qcow2 overlay of the dom0 image, kept beside the image under a key of everything that shapes
it; later hosts resume a throw-away sparse copy of it with `-loadvm`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from xenpvh.build.qemu import QemuBinary, fingerprint
from xenpvh.errors import BrokenError
from xenpvh.host.image import DomImage
from xenpvh.host.qmp import Qmp
from xenpvh.util.fs import sha256_bytes, sha256_file

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
