"""Run dirs of nested hosts (QMP socket, known_hosts, throw-away disk copies) and the reaping
of those left behind by processes killed before they could clean up."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path

RUN_DIR_PREFIX = "xenpvh-nested-"


def reap_stale_run_dirs(
    tmp: Path | None = None, *, min_age: float = 600.0, proc: Path = Path("/proc")
) -> list[Path]:
    """Remove run dirs (with their throw-away disk copies) left by processes killed before
    they could clean up: older than min_age and named by no running process's command line."""
    base = Path(tmp or tempfile.gettempdir())
    now = time.time()
    candidates = [
        d
        for d in base.glob(f"{RUN_DIR_PREFIX}*")
        if d.is_dir() and now - d.stat().st_mtime > min_age
    ]
    if not candidates:
        return []
    in_use = b""
    for p in proc.glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            in_use += p.read_bytes() + b"\n"
    removed = []
    for d in candidates:
        if str(d).encode() not in in_use:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed
