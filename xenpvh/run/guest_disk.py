"""Guest disk images on the host: sent once, copied per run.

A built image (the Debian guest's disk) travels as a gzip'd GNU sparse tar and is unpacked
once under `<remote root>/images/<sha256[:16]>-<name>` (content-addressed: a rebuilt image
gets a new name, a host that has it already is sent nothing).  Every run boots its own sparse
copy in its run directory, so one boot never dirties the next, and the copy goes with the run
directory when the run ends.  Shell snippets get their data as positional arguments.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from xenpvh.host.base import Host

log = logging.getLogger(__name__)

IMAGES_DIR = "images"
# Extracts one member of a gzip'd tar, holes kept: argv[1] the pack, argv[2] the member,
# argv[3] the directory.  Python's tarfile, not GNU tar: tar writes a sparse member 512
# bytes a syscall (314,000 writes for the Debian guest's 151 MB), and on a PV dom0 under TCG
# that took 101 s; tarfile seeks over the holes and copies 16 KiB at a time: 46 s, the same
# bytes (measured on the nested host, 2026-12-03).  Only the named member is written.
UNPACK_PY = """\
import sys, tarfile
with tarfile.open(sys.argv[1], "r:gz") as tf:
    member = tf.getmember(sys.argv[2])
    if not member.isfile() or "/" in member.name or member.name.startswith("."):
        sys.exit("not a plain file at the top of the archive: %r" % member.name)
    tf.extract(member, sys.argv[3], set_attrs=False)
"""
# $1 the packed image, $2 the member inside it, $3 the final path, $4 UNPACK_PY.  Unpacked
# beside the final path and renamed into place, so a half-unpacked image never carries the
# final name; the pack is removed whether or not it unpacked (a bad one is sent again).
UNPACK_SCRIPT = (
    'set -e; d=$(mktemp -d "$3.XXXXXX"); trap \'rm -rf -- "$d" "$1"\' EXIT; '
    'python3 -c "$4" "$1" "$2" "$d"; chmod 644 -- "$d/$2"; mv -- "$d/$2" "$3"'
)


@dataclass(frozen=True)
class PackedImage:
    """A disk image as xenpvh ships it: `pack` (sparse tar.gz holding `member`, or the image
    itself when `member` is empty: a small one, such as the FreeBSD kit's ISO) and the sha256
    of the unpacked image (its name on the host)."""

    pack: Path
    member: str
    sha256: str
    name: str = "disk.img"

    def remote_path(self, remote_root: str) -> str:
        return f"{remote_root}/{IMAGES_DIR}/{self.sha256[:16]}-{self.name}"


def ensure_on_host(
    host: Host, image: PackedImage, remote_root: str
) -> tuple[str, dict[str, float]]:
    """The image's path on the host (sent and unpacked when missing) and the seconds the
    send and the unpack took (both 0.0 when it was there)."""
    base = image.remote_path(remote_root)
    if host.run(["test", "-s", base]).ok:
        return base, {"send_s": 0.0, "unpack_s": 0.0}
    t0 = time.monotonic()
    host.run(["mkdir", "-p", "--", f"{remote_root}/{IMAGES_DIR}"], check=True)
    if not image.member:
        # Sent as it is, under a temporary name renamed into place: never half a file.
        part = f"{base}.part"
        host.put(image.pack, part, mode=0o644)
        host.run(["mv", "-f", "--", part, base], check=True)
        took = {"send_s": round(time.monotonic() - t0, 3), "unpack_s": 0.0}
        log.info("sent %s to %s: %s", image.pack.name, base, took)
        return base, took
    pack_remote = f"{base}.tar.gz"
    host.put(image.pack, pack_remote, mode=0o644)
    t1 = time.monotonic()
    host.run(
        ["sh", "-c", UNPACK_SCRIPT, "sh", pack_remote, image.member, base, UNPACK_PY],
        check=True,
        timeout=900,
    )
    took = {"send_s": round(t1 - t0, 3), "unpack_s": round(time.monotonic() - t1, 3)}
    log.info("sent %s to %s: %s", image.pack.name, base, took)
    return base, took


def copy_for_run(host: Host, base: str, dest: str) -> float:
    """A sparse copy of `base` at `dest` (in the run's directory); returns its seconds."""
    t0 = time.monotonic()
    host.run(["cp", "--sparse=always", "--", base, dest], check=True, timeout=900)
    return time.monotonic() - t0


__all__ = [
    "IMAGES_DIR",
    "UNPACK_PY",
    "UNPACK_SCRIPT",
    "PackedImage",
    "copy_for_run",
    "ensure_on_host",
]
