"""Realistic runs for the report tests, and the validators every rendered document meets.

The verdicts come from the real StageChecker on real-looking linux-pvh consoles (CRLF line
ends as `xl console` gives them, kernel timestamps, a hostile userspace line), with the
meta a BootRun adds: a pass, a fail at ap-launch, a broken run with 2 attempts (attempt 1
broken by an emulation fault) and a blocked run with no stages.
"""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from functools import cache
from pathlib import Path

import jsonschema
import xmlschema

from xenpvh.check.checker import check_file
from xenpvh.check.verdict import StageResult, StageStatus, Verdict, VerdictValue
from xenpvh.profile import load_profile
from xenpvh.report import Attempt, RunReport, load_schema
from xenpvh.toolstack.xenstore import DeviceState

JUNIT_XSD = Path(__file__).parent / "schemas" / "junit-10.xsd"
PROFILE = load_profile("linux-pvh")
POINT = "xl-vcpus2-mem256"
STARTED = 1_767_225_600.0  # 2026-01-01T00:00:00Z
HOSTILE = "<script>alert(1)</script>"

GOOD_CONSOLE = (
    b"[    0.000000] Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)\r\n"
    b"[    0.000000] Booting paravirtualized kernel on Xen PVH\r\n"
    b'[    0.004000] x86/cpu: \x1b[1mmodel\x1b[0m \x07 & "quoted" \xff\xfe bytes\r\n'
    b"[    0.412345] smp: Brought up 1 node, 2 CPUs\r\n"
    b"[    1.203000] Run /init as init process\r\n"
    b"<script>alert(1)</script>\r\n"
    b"[    1.500000] blkfront: xvda: flush diskcache: enabled; persistent grants: enabled;\r\n"
    b"xenpvh-init: netfront eth0 up\r\n"
    b"xenpvh-guest login: "
)
# One vCPU came up of two: ap-launch fails on line 4.
AP_FAIL_CONSOLE = GOOD_CONSOLE.replace(b"2 CPUs", b"1 CPU")
AP_FAIL_LINE = 4
HOSTILE_LINE = 6
FAULT_REASON = (
    "tcg-svm-double-delivery on host nested: QEMU TCG re-delivers an injected interrupt "
    "under nested SVM; console: 'RIP: 0010:asm_sysvec_xen_hvm_callback+0x0/0x20' "
    "(guest verdict was fail at login: console ended before login)"
)


def hypervisor_stage() -> StageResult:
    return StageResult(
        "hypervisor",
        StageStatus.PASSED,
        None,
        "(XEN) Xen version 4.17.5 (Debian 4.17.5+xenpvh1)",
    )


def boot_meta(**extra: object) -> dict[str, object]:
    """What BootRun._meta adds to a verdict (abridged)."""
    return {
        "run_id": "20260101-000000-a1b2c3",
        "host": "nested",
        "toolstack": "xl",
        "profile": "linux-pvh",
        "domain": "xenpvh-20260101-000000-a1b2c3",
        "domid": 7,
        "vcpus": 2,
        "memory_mb": 256,
        "xen_version": "4.17.5",
        "create_to_verdict_s": 4.2,
        "run_s": None,
        "console": {"bytes": 420, "saved": 420, "truncated": False, "source": "client"},
        **extra,
    }


def timings() -> dict[str, float | None]:
    return {"create_to_verdict_s": 4.2, "xl_create_s": 0.8, "collect_s": 1.1, "run_s": None}


def devices(frontend: int = 4, backend: int = 4) -> list[dict[str, object]]:
    return [
        dataclasses.asdict(
            DeviceState(
                "vbd",
                "51712",
                "/local/domain/7/device/vbd/51712",
                frontend,
                "/local/domain/0/backend/vbd/7/51712",
                backend,
            )
        ),
        dataclasses.asdict(
            DeviceState(
                "vif", "0", "/local/domain/7/device/vif/0", 4, "/local/domain/0/backend/vif/7/0", 4
            )
        ),
    ]


def _checked(run_dir: Path, console: bytes) -> Verdict:
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "console.log"
    log.write_bytes(console)
    for name in ("xl-dmesg.txt", "xl-info.txt", "domain.cfg", "xenstore.txt"):
        (run_dir / name).write_text(f"{name}\n")
    verdict = check_file(log, PROFILE, vcpus=2, disks=1, vifs=1)
    verdict.meta.pop("console", None)
    return verdict


def _report(run_dir: Path, verdict: Verdict, **kw: object) -> RunReport:
    fields: dict[str, object] = {
        "profile": "linux-pvh",
        "point": POINT,
        "run_id": "20260101-000000-a1b2c3",
        "host": "nested",
        "started_at": STARTED,
        "finished_at": STARTED + 42.5,
        "artifacts": run_dir,
        "timings": timings(),
        "hypervisor": hypervisor_stage(),
    }
    fields.update(kw)
    return RunReport(verdict=verdict, **fields)  # type: ignore[arg-type]


def pass_run(run_dir: Path) -> RunReport:
    v = _checked(run_dir, GOOD_CONSOLE)
    assert v.verdict is VerdictValue.PASS, v.reason
    v.meta.update(boot_meta(xenstore_devices=devices(), xenstore_check="connected"))
    return _report(run_dir, v)


def ap_fail_run(run_dir: Path) -> RunReport:
    v = _checked(run_dir, AP_FAIL_CONSOLE)
    assert v.verdict is VerdictValue.FAIL and v.failed_stage == "ap-launch", v.reason
    v.meta.update(boot_meta())
    return _report(run_dir, v)


def broken_run(run_dir: Path) -> RunReport:
    """Two attempts, both spoilt by the host's emulation fault (the retries ran out); the
    guest's own stages are kept, login 'failed' but counts for nothing."""
    attempt_dir = run_dir / "attempt-1"
    _checked(attempt_dir, GOOD_CONSOLE[:200])
    for name in ("verdict.json", "junit.xml", "report.html", "timing.json"):
        (attempt_dir / name).write_text("{}\n")
    guest = _checked(run_dir, GOOD_CONSOLE.replace(b"xenpvh-guest login: ", b""))
    assert guest.verdict is VerdictValue.FAIL and guest.failed_stage == "login", guest.reason
    v = dataclasses.replace(
        guest,
        verdict=VerdictValue.BROKEN,
        reason=FAULT_REASON,
        failed_stage=None,
        meta={
            **guest.meta,
            **boot_meta(),
            "emulation_fault": "tcg-svm-double-delivery",
            "guest_failed_stage": "login",
            "retryable": True,
        },
    )
    attempts = (
        Attempt(1, "broken", FAULT_REASON, "tcg-svm-double-delivery", "attempt-1"),
        Attempt(2, "broken", FAULT_REASON, "tcg-svm-double-delivery", None),
    )
    return _report(run_dir, v, attempts=attempts)


def blocked_run(run_dir: Path) -> RunReport:
    run_dir.mkdir(parents=True, exist_ok=True)
    v = Verdict(
        VerdictValue.BLOCKED,
        "kernel /srv/kernels/vmlinuz-6.1 does not exist (or is not a file)",
        stages=[],
        meta={"run_id": "20260101-000000-a1b2c3", "host": "nested"},
    )
    return _report(run_dir, v, hypervisor=None, timings={"run_s": 0.01})


CASES: dict[str, Callable[[Path], RunReport]] = {
    "pass": pass_run,
    "fail-ap-launch": ap_fail_run,
    "broken-2-attempts": broken_run,
    "blocked-no-stages": blocked_run,
}


# ---- validators -------------------------------------------------------------------------


@cache
def _verdict_validator() -> jsonschema.protocols.Validator:
    schema = load_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def validate_verdict_json(doc: object) -> None:
    """Schema-valid, and exactly what json.dumps/loads gives back (plain JSON values)."""
    _verdict_validator().validate(doc)
    assert json.loads(json.dumps(doc, allow_nan=False)) == doc


@cache
def _junit_schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(JUNIT_XSD))


def validate_junit(text: str) -> ET.Element:
    """Valid against junit-10.xsd, and its counts say what its testcases hold."""
    _junit_schema().validate(text)
    suite = ET.fromstring(text)
    assert suite.tag == "testsuite"
    cases = suite.findall("testcase")

    def count(tag: str) -> int:
        return sum(1 for c in cases if c.find(tag) is not None)

    assert int(suite.get("tests", "-1")) == len(cases)
    assert int(suite.get("failures", "-1")) == count("failure")
    assert int(suite.get("errors", "-1")) == count("error")
    assert int(suite.get("skipped", "-1")) == count("skipped")
    total = sum(float(c.get("time", "0")) for c in cases)
    assert abs(float(suite.get("time", "-1")) - total) < 0.0005 * (len(cases) + 1)
    for c in cases:
        # A testcase is one outcome: at most one of failure / error / skipped.
        assert sum(c.find(t) is not None for t in ("failure", "error", "skipped")) <= 1
        assert c.find("properties") is None
    assert suite.get("timestamp")
    return suite
