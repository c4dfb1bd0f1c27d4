"""CLI conventions a new user relies on, each one a defect the front end once had:
--version, --help that never acts, exit codes, one JSON object whatever the outcome,
errors on one line, `check` defaults and stdin, the `latest` link."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xenpvh.cli import main
from xenpvh.cli.main import EXIT_BLOCKED, EXIT_BUG, build_parser

SEED = Path(__file__).parent / "seed_freebsd_pvhv1_2013.txt"


def _xenpvh(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xenpvh", *args], capture_output=True, text=True, timeout=60, **kw
    )


def test_version() -> None:
    from xenpvh import __version__

    r = _xenpvh("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"xenpvh {__version__}"


@pytest.mark.parametrize(
    "argv",
    [
        ["host", "nested", "up", "--help"],
        ["host", "nested", "ssh", "--help"],
        ["host", "nested", "down", "--help"],
        ["host", "provision", "--help"],
        ["boot", "--help"],
    ],
)
def test_help_never_acts(argv: list[str], tmp_path: Path) -> None:
    """--help prints help and exits 0: it boots no QEMU, runs no ssh, touches no state."""
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path)}
    r = _xenpvh(*argv, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: xenpvh")
    assert list(tmp_path.iterdir()) == []  # no state file, no cache, nothing started


def test_exit_codes_and_environment_are_documented() -> None:
    text = build_parser().format_help()
    for needle in (
        "0  pass",
        "1  fail",
        "2  blocked",
        "3  broken",
        "4  internal error",
        "XDG_CACHE_HOME",
        "XENPVH_NESTED_FRESH",
    ):
        assert needle in text, needle


def test_json_is_one_object_when_blocked(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["check", "/nonexistent.log", "--profile", "linux-pvh", "--format", "json"])
    out = capsys.readouterr().out
    assert rc == EXIT_BLOCKED
    assert json.loads(out)["verdict"] == "blocked"


def test_json_is_one_object_for_a_blocked_boot_with_no_host_touched(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc = main(
        [
            "boot",
            "--profile",
            "linux-pvh",
            "--kernel",
            "/no/such/vmlinuz",
            "--host",
            "ssh://root@192.0.2.1",
            "--format",
            "json",
            "--artifacts",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert rc == EXIT_BLOCKED
    doc = json.loads(out)
    assert doc["verdict"] == "blocked" and "/no/such/vmlinuz" in doc["reason"]


def test_json_is_one_object_on_a_usage_error() -> None:
    r = _xenpvh(
        "check", SEED.as_posix(), "--profile", "linux-pvh", "--vcpus", "x", "--format", "json"
    )
    assert r.returncode == EXIT_BLOCKED
    assert json.loads(r.stdout)["verdict"] == "blocked"


def test_a_bug_exits_4_with_the_traceback_in_a_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from xenpvh.cli import commands

    def boom(args: object) -> int:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(commands, "cmd_profiles", boom)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    rc = main(["profiles"])
    err = capsys.readouterr().err
    assert rc == EXIT_BUG and rc != 1  # never a guest `fail`
    logs = list((tmp_path / "xenpvh" / "logs").glob("crash-*.log"))
    assert len(logs) == 1 and "RuntimeError: a bug of ours" in logs[0].read_text()
    assert str(logs[0]) in err and "Traceback" not in err


def test_errors_are_one_line_however_long(capsys: pytest.CaptureFixture[str]) -> None:
    long = "/no/such/" + "very-long-directory-name/" * 8 + "console.log"
    assert main(["check", long, "--profile", "linux-pvh"]) == EXIT_BLOCKED
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if ln.strip()]
    assert long in line


def test_check_takes_the_profiles_vcpus_and_reads_stdin() -> None:
    # freebsd-pvhv1's default is 7 vCPUs, like the seed console.
    r = _xenpvh(
        "check", "-", "--profile", "freebsd-pvhv1", "--format", "json", input=SEED.read_text()
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["verdict"] == "pass"


def test_config_render_names_the_profile_for_an_old_xen(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "render", "--profile", "linux-pvh", "--xen", "4.8"]) == EXIT_BLOCKED
    err = capsys.readouterr().err
    assert "freebsd-pvhv1" in err or "pvhv1 profile" in err
    assert "use mode pvhv1" not in err


def test_host_provision_is_a_real_command(capsys: pytest.CaptureFixture[str]) -> None:
    """It once died with ImportError (`provision_command` never existed); a bad address is
    now `blocked` before ansible or ssh runs."""
    rc = main(["host", "provision", "ssh://root@-oProxyCommand=x", "--format", "json"])
    err = capsys.readouterr().err
    assert rc == EXIT_BLOCKED and "ImportError" not in err


@pytest.mark.parametrize("bad", ["noequals", "1x=y", "@/nonexistent/vars.json"])
def test_provision_extra_vars_are_checked(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["host", "provision", "ssh://root@box", "-e", bad])
    assert rc == EXIT_BLOCKED and "--extra-vars" in capsys.readouterr().err


def test_host_provision_prints_the_recap_as_one_json_object(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the ansible live test reads: the recap counts and the log, from the command."""
    import xenpvh.cli.commands as commands
    from xenpvh.provision import ProvisionResult

    seen: dict[str, object] = {}

    def fake_provision_ssh(address: str, **kw: object) -> ProvisionResult:
        seen.update(kw, address=address)
        return ProvisionResult(changed=3, ok=40, failed=0, log=tmp_path / "p.log")

    monkeypatch.setattr(commands, "provision_ssh", fake_provision_ssh)
    vars_file = tmp_path / "vars.json"
    vars_file.write_text('{"xen_host_libvirt": false}')
    rc = main(
        [
            "host",
            "provision",
            "ssh://root@box",
            "-e",
            f"@{vars_file}",
            "-e",
            "a=b",
            "--log",
            str(tmp_path / "p.log"),
            "--format",
            "json",
        ]
    )
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert doc == {
        "address": "ssh://root@box",
        "ok": 40,
        "changed": 3,
        "failed": 0,
        "unreachable": 0,
        "log": str(tmp_path / "p.log"),
    }
    assert seen["extra_vars"] == {"xen_host_libvirt": False, "a": "b"}
    assert seen["log"] == tmp_path / "p.log"


def test_sigterm_takes_the_interrupt_path_and_exits_143() -> None:
    """What CI runners and systemd send: no traceback, a documented exit code.  (`check -`
    waits on its standard input, a pipe we never close.)"""
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "xenpvh", "check", "-", "--profile", "linux-pvh"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)  # past the imports, into the read
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "terminated" in err and "Traceback" not in err
