"""The machine-readable result of a run: verdict.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

from xenpvh.check.verdict import Verdict
from xenpvh.report.atomic import atomic_write_text


def render_verdict_json(verdict: Verdict) -> str:
    # No default=str: an unserialisable meta value is a bug to surface, not to stringify.
    return json.dumps(verdict.to_json_dict(), indent=2, sort_keys=False) + "\n"


def write_verdict_json(verdict: Verdict, path: str | os.PathLike[str]) -> Path:
    """Serialise fully, then write atomically (no half-written verdict.json ever)."""
    return atomic_write_text(path, render_verdict_json(verdict))
