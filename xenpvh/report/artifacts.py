"""The files of a run directory, as relative paths the reports link to."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

# A run directory holds tens of files; a runaway one must not blow up verdict.json.
MAX_ARTIFACTS: Final = 2000


def list_artifacts(run_dir: Path | None, also: Iterable[str] = ()) -> dict[str, str]:
    """{relative path: relative path} of every file below `run_dir` (attempt directories
    included), plus `also` (files about to be written), sorted.

    The key is the file's name within the run directory ("junit.xml", or
    "attempt-1/console.log" for an earlier attempt's), the value the path to open relative
    to verdict.json.  Hidden files (the atomic writer's temp files) are left out and
    symlinked directories are not followed.
    """
    found: dict[str, str] = {}
    if run_dir is not None and run_dir.is_dir():
        for dirpath, dirnames, filenames in os.walk(run_dir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                if len(found) >= MAX_ARTIFACTS:
                    log.warning("%s: more than %d files, listing cut", run_dir, MAX_ARTIFACTS)
                    return _with(found, also)
                rel = (Path(dirpath) / name).relative_to(run_dir).as_posix()
                found[rel] = rel
    return _with(found, also)


def _with(found: dict[str, str], also: Iterable[str]) -> dict[str, str]:
    for rel in also:
        found[rel] = rel
    return dict(sorted(found.items()))


__all__ = ["MAX_ARTIFACTS", "list_artifacts"]
