"""The CLI front end: exit codes, formats, and what it prints from hostile consoles."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from xenpvh.check.hostconsole import HostExpectation, check_hypervisor, read_expect_file
from xenpvh.check.verdict import StageResult, StageStatus, Verdict, VerdictValue
from xenpvh.cli import main
from xenpvh.cli.console import terminal_safe

SEED = Path(__file__).parent / "seed_freebsd_pvhv1_2013.txt"


def test_check_seed_json_pass(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        ["check", str(SEED), "--profile", "freebsd-pvhv1", "--vcpus", "7", "--format", "json"]
    )
    out = capsys.readouterr().out
    doc = json.loads(out)  # exactly one JSON object
    assert rc == 0
    assert doc["verdict"] == "pass" and doc["failed_stage"] is None
    assert [s["status"] for s in doc["stages"]] == ["passed"] * 5


def test_check_seed_eight_vcpus_fails_at_ap_launch(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        ["check", str(SEED), "--profile", "freebsd-pvhv1", "--vcpus", "8", "--format", "json"]
    )
    doc = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert doc["verdict"] == "fail" and doc["failed_stage"] == "ap-launch"


def test_check_junit_is_xml(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        ["check", str(SEED), "--profile", "freebsd-pvhv1", "--vcpus", "8", "--format", "junit"]
    )
    root = ET.fromstring(capsys.readouterr().out)
    assert rc == 1
    assert root.iter("failure").__next__() is not None


def test_check_text_timeline(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(SEED), "--profile", "freebsd-pvhv1", "--vcpus", "7"]) == 0
    out = capsys.readouterr().out
    assert "verdict: pass" in out and "ap-launch" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (
            ["check", "/nonexistent.log", "--profile", "freebsd-pvhv1", "--vcpus", "1"],
            "does not exist",
        ),
        (["check", str(SEED), "--profile", "no-such-profile", "--vcpus", "1"], "no-such-profile"),
        (["config", "render", "--profile", "linux-pvh", "--xen", "4.9"], "4.9"),
        (["config", "render", "--profile", "freebsd-pvhv1", "--kernel", "/k"], "PV"),
        (["config", "render", "--profile", "freebsd-pvhv1", "--xen", "4.4"], "kernel"),
        (["boot", "--profile", "linux-pvh", "--kernel", "/no/such/vmlinuz"], "/no/such/vmlinuz"),
    ],
)
def test_blocked_inputs_exit_2_and_name_the_problem(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_config_render_xl_and_libvirt(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["config", "render", "--profile", "linux-pvh", "--vcpus", "4", "--xen", "4.17"]) == 0
    )
    out = capsys.readouterr().out
    assert 'type = "pvh"' in out and "vcpus = 4" in out
    assert (
        main(["config", "render", "--profile", "freebsd-pvhv1", "--xen", "4.4", "--kernel", "/k"])
        == 0
    )
    assert "pvh = 1" in capsys.readouterr().out
    assert main(["config", "render", "--profile", "linux-pvh", "--libvirt"]) == 0
    dom = ET.fromstring(capsys.readouterr().out)
    assert dom.find("os/type").get("machine") == "xenpvh"


def test_profiles_lists_all_with_stages(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "--format", "json"]) == 0
    names = {p["name"]: p["stages"] for p in json.loads(capsys.readouterr().out)}
    assert {"linux-pvh", "freebsd-pvh", "freebsd-pvhv1"} <= set(names)
    assert names["linux-pvh"][:2] == ["early-init", "ap-launch"]


def test_python_m_xenpvh_works() -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "xenpvh",
            "check",
            str(SEED),
            "--profile",
            "freebsd-pvhv1",
            "--vcpus",
            "7",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["verdict"] == "pass"


def test_terminal_safe_neutralises_escapes() -> None:
    hostile = "ok\x1b]0;pwned\x07\x1b[2J\x00end"
    safe = terminal_safe(hostile)
    assert "\x1b" not in safe and "\x07" not in safe and "\x00" not in safe
    assert safe.startswith("ok") and safe.endswith("end")
    assert len(terminal_safe("x" * 10_000, limit=50)) == 50


def test_text_timeline_does_not_interpret_markup(capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console

    from xenpvh.cli.console import render_timeline

    v = Verdict(
        VerdictValue.FAIL,
        "[bold]x[/bold]",
        "login",
        [StageResult("login", StageStatus.FAILED, 1.0, "[red]evil[/red]", "")],
    )
    Console(force_terminal=False, width=200).print(render_timeline(v))
    out = capsys.readouterr().out
    assert "[red]evil[/red]" in out and "[bold]x[/bold]" in out


DMESG = """(XEN) Xen version 4.17.5-pre (Debian 4.17.5+72-g01140da4e8-1) (pkg@debian.org) gcc
(XEN) [  0.000000] xenpvh: patched hypervisor XENPVH-SAMPLE-PATCH-1
(XEN) Command line: console=com1
"""


def test_hypervisor_stage_passes_with_marker_and_version() -> None:
    exp = HostExpectation("4.17.5", ("xenpvh: patched hypervisor XENPVH-SAMPLE-PATCH-1",))
    r = check_hypervisor(DMESG, "4.17.5-pre", exp)
    assert r.status is StageStatus.PASSED, r.detail
    assert "XENPVH-SAMPLE-PATCH-1" in r.evidence


@pytest.mark.parametrize(
    ("dmesg", "xl_version", "missing"),
    [
        (DMESG.replace("XENPVH-SAMPLE-PATCH-1", "OTHER"), "4.17.5-pre", "XENPVH-SAMPLE-PATCH-1"),
        (DMESG.replace("4.17.5-pre", "4.17.3"), "4.17.5-pre", "Xen version 4.17.5"),
        (DMESG, "4.16.0", "xl info"),
    ],
)
def test_hypervisor_stage_fails_naming_what_is_missing(
    dmesg: str, xl_version: str, missing: str
) -> None:
    exp = HostExpectation("4.17.5", ("xenpvh: patched hypervisor XENPVH-SAMPLE-PATCH-1",))
    r = check_hypervisor(dmesg, xl_version, exp)
    assert r.status is StageStatus.FAILED
    assert missing in r.detail


def test_expect_file_skips_comments() -> None:
    assert read_expect_file("# c\n\n  marker one \n#x\nmarker two\n") == (
        "marker one",
        "marker two",
    )


def test_bundled_expect_file_matches_sample_patch() -> None:
    root = Path(__file__).parents[1] / "guestcfg" / "patches" / "xen"
    lines = read_expect_file((root / "expect-console").read_text())
    patch = next(root.glob("0001-*.patch")).read_text()
    assert lines and all(line in patch for line in lines)


@pytest.mark.parametrize("profile", ["linux-pvh", "debian-pvh", "debian-pvh-grub", "freebsd-pvh"])
def test_config_render_previews_built_files_by_their_names(
    profile: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`@source:item` kernels and disks are previewed as the paths a run gives them."""
    assert main(["config", "render", "--profile", profile]) == 0
    out = capsys.readouterr().out
    assert "@" not in out, out
    assert 'kernel = "/var/lib/xenpvh/kernels/SHA256-' in out
