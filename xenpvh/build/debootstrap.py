"""debootstrap for the images xenpvh builds (the Debian guest, the nested host's dom0).

Both images are a minbase debootstrap of one suite with a package list; the packages are
downloaded once (`--make-tarball`) into an entry of the image's artifact cache, keyed by the
suite, the package list and whatever else names the package versions, so that a change of the
image's own files rebuilds it without downloading again.  Each long step is a progress task
whose detail is the step's latest output line.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from xenpvh.build.cache import ArtifactCache, Built
from xenpvh.errors import BrokenError
from xenpvh.util.fs import sha256_bytes
from xenpvh.util.progress import ProgressSink, task

# The cache entries of downloaded packages (one per suite, package list and versions).
PACKAGES_RECIPE = "debootstrap-packages"
# A failed step's error names this many of its last output lines.
TAIL_LINES = 20


def run_step(what: str, argv: Sequence[str], progress: ProgressSink | None) -> None:
    """Run a long build command as the progress task `what` (its output lines are the
    task's detail); BrokenError with the output's tail when it fails."""
    tail: list[str] = []
    with task(progress, what) as advance:
        proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "LANG": "C"},
        )
        assert proc.stdout is not None
        with proc.stdout:
            for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip()[:200]
                tail = [*tail[-(TAIL_LINES - 1) :], line]
                if line:
                    advance(detail=line)
        rc = proc.wait()
        if rc != 0:
            raise BrokenError(f"{what} failed (exit {rc}):\n" + "\n".join(tail))


def packages_key(suite: str, packages: Sequence[str], versions: Mapping[str, str]) -> str:
    """Names the package tarball: only the suite, the package list and the versions (when
    the caller resolved them) shape what debootstrap downloads."""
    blob = json.dumps([PACKAGES_RECIPE, suite, sorted(packages), dict(versions)], sort_keys=True)
    return sha256_bytes(blob.encode())[:24]


def package_tarball(
    cache: ArtifactCache,
    *,
    suite: str,
    packages: Sequence[str],
    mirror: str,
    versions: Mapping[str, str] | None = None,
    progress: ProgressSink | None = None,
    what: str = "downloading Debian packages",
    only_newest: bool = False,
) -> Path:
    """debootstrap's downloads for `suite` + `packages`, an entry of `cache` (fetched on a
    miss); `only_newest` removes the entries of other versions (another point release's
    downloads, of no further use)."""
    key = packages_key(suite, packages, versions or {})

    def download(work: Path) -> Built:
        tarball = work / "debs.tgz"
        run_step(
            what,
            ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
             f"--make-tarball={tarball}", suite, str(work / "download"), mirror],
            progress,
        )  # fmt: skip
        manifest = {"recipe": PACKAGES_RECIPE, "suite": suite, "packages": list(packages)}
        return Built({"tarball": (tarball, "debs.tgz")}, manifest)

    served = cache.ensure(key, download)
    if only_newest and not served.hit:
        cache.prune(PACKAGES_RECIPE, keep=key)
    return served.entry.artifacts["tarball"]


def unpack(
    root: Path,
    *,
    tarball: Path,
    suite: str,
    packages: Sequence[str],
    mirror: str,
    progress: ProgressSink | None = None,
    what: str = "unpacking Debian",
) -> None:
    """debootstrap `root` from the downloaded `tarball` (unpack and configure)."""
    run_step(
        what,
        ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
         f"--unpack-tarball={tarball}", suite, str(root), mirror],
        progress,
    )  # fmt: skip


__all__ = ["PACKAGES_RECIPE", "package_tarball", "packages_key", "run_step", "unpack"]
