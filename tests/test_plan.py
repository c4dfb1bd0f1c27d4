"""Plans: TOML → points; every mistake is blocked naming the file and the key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from xenpvh.errors import BlockedError
from xenpvh.plan import load_plan
from xenpvh.plan.loader import parse_plan

ROOT = Path(__file__).resolve().parents[1]


def _plan(tmp_path: Path, text: str):
    path = tmp_path / "p.toml"
    path.write_text(text)
    return load_plan(str(path))


BASE = """
name = "t"
[[matrix]]
profile = "linux-pvh"
"""


def test_shipped_plans_expand() -> None:
    nightly = load_plan("nightly")
    ids = [p.id for p in nightly.points]
    assert len(ids) == 8 and len(set(ids)) == 8
    assert "linux-pvh.libvirt.vcpus2.mem256.disks1.vifs1.xen-host.kernel-guestkit" in ids
    assert {p.vcpus for p in nightly.points if p.toolstack == "xl"} == {1, 2, 4}
    assert {(p.disks, p.vifs) for p in nightly.points} >= {(0, 0), (2, 2), (1, 1)}
    smoke = load_plan("smoke")
    assert 1 <= len(smoke.points) <= 2
    assert all(p.attempts == 2 and p.timeout == 600 for p in smoke.points)


def test_defaults_come_from_the_profile(tmp_path: Path) -> None:
    plan = _plan(tmp_path, BASE)
    (p,) = plan.points
    assert (p.toolstack, p.vcpus, p.memory_mb, p.disks, p.vifs) == ("xl", 2, 256, 1, 1)
    assert (p.xen.name, p.kernel.name, p.attempts, p.timeout) == ("host", "profile", 3, 900.0)


def test_cross_product_of_axes_builds_and_kernels(tmp_path: Path) -> None:
    (tmp_path / "series").mkdir()
    plan = _plan(
        tmp_path,
        """
name = "x"
[defaults]
attempts = 2
[[xen]]
name = "stock"
[[xen]]
name = "patched"
tree = "debian:xen"
patches = ["series"]
[[kernel]]
name = "kit"
[[kernel]]
name = "nosmp"
cmdline_append = "nosmp"
[[matrix]]
profile = "linux-pvh"
toolstack = ["xl", "libvirt"]
vcpus = [1, 2, 4]
timeout = 60
""",
    )
    assert len(plan.points) == 2 * 2 * 2 * 3
    patched = [p for p in plan.points if p.xen.name == "patched"]
    assert patched[0].xen.tree == "debian:xen"
    assert patched[0].xen.patches == (str(tmp_path / "series"),)
    nosmp = [p for p in plan.points if p.kernel.name == "nosmp"]
    assert all(p.full_cmdline_append == "nosmp" for p in nosmp)
    assert all(p.attempts == 2 and p.timeout == 60.0 for p in plan.points)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (BASE + "vcpu = 3\n", "matrix[0].vcpu: unknown key"),
        (BASE + "vcpus = 0\n", "matrix[0].vcpus: must be 1-512"),
        (BASE + "vcpus = [1, 1]\n", "matrix[0].vcpus: a value is listed twice"),
        (BASE + "vcpus = []\n", "matrix[0].vcpus: an empty list"),
        (BASE + "vcpus = true\n", "matrix[0].vcpus: expected an integer"),
        (BASE + "memory_mb = 8\n", "matrix[0].memory_mb: must be 16-"),
        (BASE + "disks = 17\n", "matrix[0].disks: must be 0-16"),
        (BASE + 'toolstack = "xm"\n', "matrix[0].toolstack: 'xm'"),
        (BASE + "timeout = -1\n", "matrix[0].timeout: must be > 0"),
        (BASE + "timeout = inf\n", "matrix[0].timeout: must be > 0"),
        (BASE + "attempts = 50\n", "matrix[0].attempts: must be 1-20"),
        (BASE + 'cmdline_append = "a\\nb"\n', "matrix[0].cmdline_append: must be one line"),
        ('name = "t"\n[[matrix]]\nprofile = "nope"\n', "matrix[0].profile: profile 'nope' not"),
        ('name = "t"\n[[matrix]]\nvcpus = 1\n', "matrix[0].profile: missing"),
        ('name = "t"\n', "matrix: missing"),
        ('name = "bad name"\n' + BASE.split("\n", 2)[2], "name: a name of"),
        ('colour = "red"\n' + BASE, "colour: unknown key"),
        (BASE + '[[xen]]\nname = "a"\npatches = ["x"]\n', "xen[0].patches[0]: x does not exist"),
        (BASE + '[[xen]]\nname = "a"\n[[xen]]\nname = "a"\n', "xen.name: 'a' is named twice"),
        (BASE + '[[kernel]]\nname = "k"\nkernel = "/no/such"\n', "kernel[0].kernel: /no/such"),
        (BASE + "[defaults]\nretries = 1\n", "defaults.retries: unknown key"),
        (BASE + BASE.split("\n", 2)[2], "is listed twice"),
    ],
)
def test_bad_plans_are_blocked_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(BlockedError) as e:
        _plan(tmp_path, text)
    assert key in str(e.value)
    assert str(tmp_path / "p.toml") in str(e.value)


def test_invalid_toml_and_unknown_plan(tmp_path: Path) -> None:
    with pytest.raises(BlockedError, match="invalid TOML"):
        _plan(tmp_path, "name = ")
    with pytest.raises(BlockedError, match=r"plan 'nope' not found.*known: .*nightly"):
        load_plan("nope")
    with pytest.raises(BlockedError, match="matrix: expected one or more"):
        parse_plan({"matrix": {}}, tmp_path / "x.toml")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xenpvh", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )


def test_plan_show_cli(tmp_path: Path) -> None:
    out = _cli("plan", "show", "smoke", "--format", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["plan"] == "smoke" and len(doc["points"]) == 2
    text = _cli("plan", "show", "nightly")
    assert "linux-pvh.libvirt.vcpus2" in text.stdout and "8 points" in text.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE + "vcpu = 3\n")
    out = _cli("plan", "show", str(bad), "--format", "json")
    assert out.returncode == 2
    assert "matrix[0].vcpu" in json.loads(out.stdout)["reason"]


def test_plan_run_blocks_a_bad_pool_before_anything(tmp_path: Path) -> None:
    out = _cli("plan", "run", "smoke", "--hosts", "nested:0", "--db", str(tmp_path / "h.sqlite"),
               "--out", str(tmp_path / "runs"), "--format", "json")  # fmt: skip
    assert out.returncode == 2
    assert "nested:N" in json.loads(out.stdout)["reason"]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "h.sqlite").exists()
