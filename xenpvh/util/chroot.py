"""One command in a chroot of an image root being built (the dom0 image, the Debian guest):
a clean environment, a bounded time, and a failure that names the command and its stderr."""

from __future__ import annotations

import subprocess
from pathlib import Path

from xenpvh.errors import BrokenError

# The image's own tools, never the builder's environment (a venv on PATH, the user's locale).
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}


def chroot_run(root: Path, argv: list[str], *, timeout: float = 300, tail: int = 800) -> str:
    """Run `argv` inside `root`; its stdout, or BrokenError with the last `tail` characters
    of its stderr (a build machine failure, not our input)."""
    r = subprocess.run(
        ["chroot", str(root), *argv], capture_output=True, env=CHROOT_ENV, timeout=timeout
    )
    if r.returncode != 0:
        raise BrokenError(
            f"chroot {' '.join(argv)} failed ({r.returncode}): "
            + r.stderr.decode(errors="replace")[-tail:]
        )
    return r.stdout.decode(errors="replace")


__all__ = ["CHROOT_ENV", "chroot_run"]
