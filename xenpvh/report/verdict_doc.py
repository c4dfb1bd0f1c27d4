"""verdict.json: the machine-readable result of a run, in a published, versioned schema.

The schema is `verdict.schema.json` beside this module (shipped as package data).  Bump
SCHEMA_VERSION, and the schema's const with it, for any change a reader could trip on.
"""

from __future__ import annotations

import json
import math
from importlib import metadata, resources
from typing import Any, Final

import xenpvh
from xenpvh.check.verdict import StageResult
from xenpvh.report.artifacts import list_artifacts
from xenpvh.report.jsonsafe import JSONValue, json_safe
from xenpvh.report.record import RunReport
from xenpvh.report.timefmt import iso_utc

SCHEMA_VERSION: Final = 1
SCHEMA_RESOURCE: Final = "verdict.schema.json"
# What write_reports writes into the run directory; verdict.json lists them as artifacts.
REPORT_FILES: Final = ("verdict.json", "junit.xml", "report.html", "timing.json")


def tool_version() -> str:
    version = getattr(xenpvh, "__version__", None)
    if version:
        return str(version)
    try:
        return metadata.version("xenpvh")
    except metadata.PackageNotFoundError:
        return "unknown"


def load_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) every verdict.json conforms to."""
    text = resources.files("xenpvh.report").joinpath(SCHEMA_RESOURCE).read_text("utf-8")
    return json.loads(text)


def stage_dict(stage: StageResult) -> dict[str, JSONValue]:
    d: dict[str, JSONValue] = {
        "name": stage.name,
        "status": str(stage.status),
        "t": _seconds(stage.t),
        "evidence": stage.evidence,
    }
    if stage.detail:
        d["detail"] = stage.detail
    if stage.line is not None:
        d["line"] = stage.line
    return d


def render_verdict_json(report: RunReport) -> dict[str, JSONValue]:
    """The verdict.json document as a dict: JSON-serialisable whatever meta holds."""
    v = report.verdict
    artifacts = (
        list_artifacts(report.artifacts, REPORT_FILES) if report.artifacts is not None else {}
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "xenpvh", "version": tool_version()},
        "run_id": report.run_id,
        "started_at": iso_utc(report.started_at),
        "finished_at": iso_utc(report.finished_at),
        "host": report.host,
        "profile": report.profile,
        "point": report.point,
        "verdict": str(v.verdict),
        "failed_stage": v.failed_stage,
        "reason": v.reason,
        "stages": [stage_dict(s) for s in report.stages],
        "attempts": [
            {
                "number": a.number,
                "verdict": a.verdict,
                "reason": a.reason,
                "emulation_fault": a.emulation_fault,
                "artifacts": a.artifacts,
            }
            for a in report.attempts
        ],
        "artifacts": dict(artifacts),
        "timings": timings_doc(report),
        "meta": json_safe(v.meta) if isinstance(v.meta, dict) else {},
    }


def timings_doc(report: RunReport) -> dict[str, JSONValue]:
    """The run's timings (timing.json, and verdict.json's "timings"): seconds or null."""
    return {str(k): _seconds(t) for k, t in report.timings.items()}


def dumps_verdict_json(doc: dict[str, JSONValue]) -> str:
    # allow_nan=False: json_safe already turned non-finite floats into strings, so a NaN
    # here is a bug to surface rather than invalid JSON to publish.
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


__all__ = [
    "REPORT_FILES",
    "SCHEMA_VERSION",
    "dumps_verdict_json",
    "load_schema",
    "render_verdict_json",
    "stage_dict",
    "timings_doc",
    "tool_version",
]
