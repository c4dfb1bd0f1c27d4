"""A session's files here: its artifacts directory (`<root>/<profile>-<stamp>-<pid>`, with
`<root>/latest` pointing at the newest), and an earlier attempt's files moved aside into
`attempt-N/` so the next attempt starts clean."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)


def make_artifacts_dir(given: Path | None, root: Path, profile: str) -> Path:
    """`given` (the caller named it), else a new directory under `root`."""
    if given is not None:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = root / f"{profile}-{stamp}-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    point_latest(root, path)
    return path


def point_latest(root: Path, target: Path) -> None:
    """`root/latest` -> the newest run dir, replaced atomically (a symlink renamed over)."""
    link = root / "latest"
    tmp = root / f".latest.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        tmp.symlink_to(target.name)
        os.replace(tmp, link)
    except OSError as e:  # a filesystem without symlinks: the run itself is unaffected
        log.warning("cannot point %s at %s: %s", link, target, e)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def move_attempt(artifacts: Path, dest: Path, hosts: set[str]) -> None:
    """Move one attempt's files out of the way of the next, leaving the host's files (there
    before the first attempt) and earlier attempt directories alone."""
    dest.mkdir(parents=True, exist_ok=True)
    for p in list(artifacts.iterdir()):
        if p == dest or p.name in hosts or (p.name.startswith("attempt-") and p.is_dir()):
            continue
        shutil.move(str(p), dest / p.name)


__all__ = ["make_artifacts_dir", "move_attempt", "point_latest"]
