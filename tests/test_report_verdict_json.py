"""verdict.json: the published schema, what every document holds, and that any meta serialises."""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st
from report_cases import CASES, STARTED, pass_run, validate_verdict_json

from xenpvh.check.verdict import StageResult, StageStatus, Verdict, VerdictValue
from xenpvh.check.verdict import verdict_from_json_dict as from_json
from xenpvh.report import RunReport, load_schema, render_verdict_json, write_reports


@pytest.mark.parametrize("case", CASES)
def test_every_case_is_schema_valid_on_disk(case: str, tmp_path: Path) -> None:
    report = CASES[case](tmp_path / "run")
    write_reports(report)
    doc = json.loads((tmp_path / "run" / "verdict.json").read_text())
    validate_verdict_json(doc)
    assert doc["schema_version"] == 1
    assert doc["tool"]["name"] == "xenpvh" and doc["tool"]["version"]
    assert (doc["profile"], doc["point"], doc["run_id"]) == (
        "linux-pvh",
        "xl-vcpus2-mem256",
        "20260101-000000-a1b2c3",
    )
    assert doc["verdict"] == str(report.verdict.verdict)
    # The same dict the CLI prints for --format json.
    assert doc == json.loads(json.dumps(render_verdict_json(report)))


def test_schema_is_package_data_and_a_valid_2020_12_schema() -> None:
    text = resources.files("xenpvh.report").joinpath("verdict.schema.json").read_text()
    schema = json.loads(text)
    assert schema == load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_times_are_iso_utc(tmp_path: Path) -> None:
    doc = render_verdict_json(pass_run(tmp_path))
    assert doc["started_at"] == "2026-01-01T00:00:00.000Z"
    assert doc["finished_at"] == "2026-01-01T00:00:42.500Z"
    back = datetime.fromisoformat(str(doc["started_at"]))
    assert back == datetime.fromtimestamp(STARTED, UTC)


def test_hypervisor_stage_comes_first(tmp_path: Path) -> None:
    report = pass_run(tmp_path)
    names = [s["name"] for s in render_verdict_json(report)["stages"]]  # type: ignore[index]
    assert names == ["hypervisor", "early-init", "ap-launch", "root-mount", "xenbus", "login"]
    # A verdict that already carries it (the old callers inserted it) does not get it twice.
    report.verdict.stages.insert(0, report.hypervisor)  # type: ignore[arg-type]
    again = [s["name"] for s in render_verdict_json(report)["stages"]]  # type: ignore[index]
    assert again == names


def test_stage_lines_and_details(tmp_path: Path) -> None:
    doc = render_verdict_json(CASES["fail-ap-launch"](tmp_path))
    stages = {s["name"]: s for s in doc["stages"]}  # type: ignore[union-attr,index]
    ap = stages["ap-launch"]
    assert ap["status"] == "failed" and ap["line"] == 4
    assert ap["detail"] == "expected 2 CPUs, guest reports 1"
    assert stages["early-init"]["line"] == 2 and "detail" not in stages["early-init"]
    assert "line" not in stages["hypervisor"] and "line" not in stages["login"]
    assert doc["failed_stage"] == "ap-launch"


def test_artifacts_list_every_file_attempts_included(tmp_path: Path) -> None:
    run = tmp_path / "run"
    report = CASES["broken-2-attempts"](run)
    (run / ".verdict.json.x.tmp").write_text("half")  # an atomic writer's temp file
    write_reports(report)
    doc = json.loads((run / "verdict.json").read_text())
    on_disk = {
        p.relative_to(run).as_posix()
        for p in run.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }
    assert set(doc["artifacts"]) == on_disk
    assert all(doc["artifacts"][k] == k for k in on_disk)
    assert {"attempt-1/console.log", "attempt-1/verdict.json", "report.html"} <= on_disk
    assert doc["attempts"] == [
        {
            "number": 1,
            "verdict": "broken",
            "reason": report.attempts[0].reason,
            "emulation_fault": "tcg-svm-double-delivery",
            "artifacts": "attempt-1",
        },
        {
            "number": 2,
            "verdict": "broken",
            "reason": report.attempts[1].reason,
            "emulation_fault": "tcg-svm-double-delivery",
            "artifacts": None,
        },
    ]
    assert doc["failed_stage"] is None and doc["meta"]["guest_failed_stage"] == "login"


def test_render_only_report_has_no_artifacts() -> None:
    v = Verdict(VerdictValue.PASS, "all stages passed", stages=[StageResult("login")])
    report = RunReport(v, "linux-pvh", "console.log", "check-1", None, 1.0, 2.0, None)
    doc = render_verdict_json(report)
    validate_verdict_json(doc)
    assert doc["artifacts"] == {} and doc["host"] is None and doc["attempts"] == []


class Opaque:
    def __str__(self) -> str:
        return "opaque-object"


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_any_meta_serialises(tmp_path: Path) -> None:
    report = pass_run(tmp_path)
    cyclic: list[object] = []
    cyclic.append(cyclic)
    report.verdict.meta.update(
        {
            "obj": Opaque(),
            "bad": Unprintable(),
            "path": tmp_path,
            "status": StageStatus.FAILED,
            "nan": math.nan,
            "inf": -math.inf,
            "set": {3, 1, 2},
            "bytes": b"\xff\x00ok",
            "tuple_keys": {(1, 2): "x", 3: "y"},
            "cycle": cyclic,
            "stage": StageResult("login"),
        }
    )
    doc = render_verdict_json(report)
    validate_verdict_json(doc)
    meta = doc["meta"]
    assert meta["obj"] == "opaque-object" and meta["bad"] == "<unprintable Unprintable>"
    assert meta["path"] == str(tmp_path) and meta["status"] == "failed"
    assert (meta["nan"], meta["inf"]) == ("nan", "-inf")
    assert meta["set"] == [1, 2, 3] and meta["tuple_keys"] == {"(1, 2)": "x", "3": "y"}
    assert meta["stage"]["name"] == "login"  # a dataclass becomes its fields
    json.dumps(doc, allow_nan=False)


@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=20,
    )
)
def test_any_json_like_meta_value_is_valid(value: object) -> None:
    v = Verdict(VerdictValue.BROKEN, "x", meta={"value": value})
    report = RunReport(v, "p", "q", "r", None, 0.0, 0.0, None, timings={"t": math.nan})
    doc = render_verdict_json(report)
    validate_verdict_json(doc)
    assert doc["timings"] == {"t": None}


def test_roundtrip_through_verdict_from_json_dict(tmp_path: Path) -> None:
    report = CASES["fail-ap-launch"](tmp_path)
    back = from_json(render_verdict_json(report))  # type: ignore[arg-type]
    assert back.stages[1:] == report.verdict.stages
    assert back.meta == report.verdict.meta


# The schema must be able to fail: each of these breaks one promise of the format.
BREAKS = {
    "fail without a stage": lambda d: d.update(failed_stage=None),
    "pass naming a stage": lambda d: d.update(verdict="pass", failed_stage="login"),
    "unknown verdict": lambda d: d.update(verdict="flaky"),
    "local time": lambda d: d.update(started_at="2026-01-01T01:00:00+01:00"),
    "epoch time": lambda d: d.update(finished_at=1767225600),
    "line 0": lambda d: d["stages"][1].update(line=0),
    "unknown status": lambda d: d["stages"][1].update(status="skipped"),
    "extra top-level key": lambda d: d.update(extra=1),
    "missing meta": lambda d: d.pop("meta"),
    "attempt number 0": lambda d: d.update(
        attempts=[
            {
                "number": 0,
                "verdict": "pass",
                "reason": "",
                "emulation_fault": None,
                "artifacts": None,
            }
        ]
    ),
    "artifact path not a string": lambda d: d["artifacts"].update({"x": 1}),
    "timing not a number": lambda d: d["timings"].update(run_s="1s"),
    "schema version 2": lambda d: d.update(schema_version=2),
}


@pytest.mark.parametrize("name", BREAKS)
def test_schema_rejects(name: str, tmp_path: Path) -> None:
    doc = copy.deepcopy(render_verdict_json(CASES["fail-ap-launch"](tmp_path)))
    validate_verdict_json(doc)
    BREAKS[name](doc)
    with pytest.raises(jsonschema.ValidationError):
        validate_verdict_json(doc)


def test_schema_and_template_are_declared_package_data() -> None:
    """In-tree runs find the files anyway; an installed wheel only has what pyproject ships."""
    import fnmatch
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["xenpvh.report"]
    for needed in ("verdict.schema.json", "templates/report.html.j2"):
        assert any(fnmatch.fnmatch(needed, g) for g in globs), needed
