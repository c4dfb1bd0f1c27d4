"""Run dirs of nested hosts (QMP socket, known_hosts, throw-away disk copies) and the reaping
of those left behind by processes killed before they could clean up.

Each run dir names its owner (`owner.json`: machine, pid, start time).  A later start removes
at once the dirs whose owner no longer runs; dirs without a readable owner wait for
`min_age`.  A dir still named on a running process's command line (the QEMU of a detached
`host nested up`, whose starting process has exited) is never removed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from pathlib import Path

from xenpvh.util.owner import is_running, owner_record

RUN_DIR_PREFIX = "xenpvh-nested-"
OWNER_FILE = "owner.json"


def make_run_dir(base: Path | None = None) -> Path:
    """A new run dir (short: a UNIX socket path lives in it), owned by this process."""
    d = Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX, dir=base))
    (d / OWNER_FILE).write_text(json.dumps(owner_record()) + "\n")
    return d


def _owner_running(d: Path) -> bool | None:
    try:
        owner = json.loads((d / OWNER_FILE).read_text())
        return is_running(str(owner["machine"]), int(owner["pid"]), int(owner["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def reap_stale_run_dirs(
    tmp: Path | None = None, *, min_age: float = 600.0, proc: Path = Path("/proc")
) -> list[Path]:
    """Remove run dirs (with their throw-away disk copies) left by processes killed before
    they could clean up: their owner no longer runs (or, owner unknown, older than min_age),
    and no running process's command line names them."""
    base = Path(tmp or tempfile.gettempdir())
    now = time.time()
    candidates = []
    for d in base.glob(f"{RUN_DIR_PREFIX}*"):
        with contextlib.suppress(OSError):
            if not d.is_dir():
                continue
            running = _owner_running(d)
            if running is False or (running is None and now - d.stat().st_mtime > min_age):
                candidates.append(d)
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


def reap_partial_snapshots(image_dir: Path) -> list[Path]:
    """Half-saved machine states (`.warm-*.qcow2`) of a process killed while saving one.
    Call with the image's `.warm.lock` held: the process that wrote one held it too."""
    removed = []
    for p in image_dir.glob(".warm-*.qcow2"):
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed
