"""Loading guest profiles: the shipped ones, points, and malformed files named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenpvh.errors import BlockedError, ProfileError
from xenpvh.profile import GUEST_STAGES, guestcfg_dir, list_profiles, load_profile
from xenpvh.profile.domain import DiskSpec, VifSpec
from xenpvh.profile.loader import required_literals

GOOD = """
name = "tiny"
description = "test profile"
[domain]
kernel = "/boot/k"
vcpus = 2
disks = [{ vdev = "xvda", size_mb = 8 }]
vifs = [{ bridge = "br0" }]
STAGES
[[forbidden]]
name = "panic"
pattern = 'panic: '
"""
STAGE = """
[[stages]]
name = "{name}"
deadline = 10
required = ['{name} ok']
"""


def write(tmp_path: Path, body: str, stages: tuple[str, ...] = GUEST_STAGES) -> Path:
    text = GOOD.replace("STAGES", "".join(STAGE.format(name=n) for n in stages))
    text = text if body == "" else text + body
    p = tmp_path / "tiny.toml"
    p.write_text(text)
    return p


def test_shipped_profiles_load() -> None:
    names = {p.name for p in list_profiles()}
    assert {"freebsd-pvhv1", "freebsd-pvh", "linux-pvh", "xtf"} <= names
    for p in list_profiles():
        if p.stage_set == "os":
            assert sorted(s.name for s in p.stages) == sorted(GUEST_STAGES)
        else:  # a guest with its own stages (XTF)
            assert p.stages
        assert p.forbidden and p.description
        assert p.path.parent == guestcfg_dir()


def test_linux_defaults() -> None:
    d = load_profile("linux-pvh").point()
    assert (d.kernel, d.ramdisk, d.cmdline) == (
        "@guestkit:vmlinuz",
        "@guestkit:initrd",
        "console=hvc0",
    )
    assert (d.memory_mb, d.vcpus, d.on_crash, d.mode) == (256, 2, "destroy", "pvh")
    assert d.disks == (DiskSpec(vdev="xvda", size_mb=16, fs="ext4"),)
    assert d.vifs == (VifSpec(bridge="xenbr0"),)
    assert load_profile("freebsd-pvhv1").point().mode == "pvhv1"


def test_point_overrides_and_validation() -> None:
    p = load_profile("linux-pvh")
    d = p.point(vcpus=4, memory_mb=512, kernel="/k", cmdline="quiet", name="x", disks=[], vifs=())
    assert (d.vcpus, d.memory_mb, d.kernel, d.cmdline, d.name) == (4, 512, "/k", "quiet", "x")
    assert d.disks == () and d.vifs == ()
    assert p.point().vcpus == 2  # the profile is not mutated
    with pytest.raises(BlockedError, match="vcpus must be an integer >= 1"):
        p.point(vcpus=0)
    with pytest.raises(BlockedError, match="memory_mb must be 32-"):
        p.point(memory_mb=4)
    with pytest.raises(BlockedError, match="duplicate disk vdev"):
        p.point(disks=[DiskSpec(size_mb=1), DiskSpec(size_mb=1)])


def test_load_by_name_from_env_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "")
    monkeypatch.setenv("XENPVH_GUESTCFG", str(tmp_path))
    p = load_profile("tiny")
    assert p.name == "tiny" and p.point().kernel == "/boot/k"
    assert [x.name for x in list_profiles()] == ["tiny"]
    with pytest.raises(ProfileError, match=r"profile 'nope' not found.*known: tiny"):
        load_profile("nope")


def test_unknown_top_key(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text("bogus = 1\n" + write(tmp_path, "").read_text())
    with pytest.raises(ProfileError) as e:
        load_profile(str(path))
    assert str(path) in str(e.value) and "bogus: unknown key" in str(e.value)


@pytest.mark.parametrize(
    ("needle", "replacement", "message"),
    [
        ("vcpus = 2", "vcpus = 2\nvcpu = 3", "domain.vcpu: unknown key"),
        ("size_mb = 8", "size_mb = 8, sizemb = 1", "domain.disks[0].sizemb: unknown key"),
        ('bridge = "br0"', 'bridge = "br0", mtu = "1500"', "domain.vifs[0].mtu: unknown key"),
        (
            "deadline = 10\nrequired = ['xenbus ok']",
            "deadline = 10\nrequird = ['xenbus ok']",
            "stages[2] (xenbus).requird: unknown key",
        ),
        (
            "pattern = 'panic: '",
            "pattern = 'panic: '\nlevel = 1",
            "forbidden[0].level: unknown key",
        ),
        ("required = ['login ok']", "required = ['login (ok']", "bad regex 'login (ok'"),
        ("pattern = 'panic: '", "pattern = '[panic'", "forbidden[0]: bad regex '[panic'"),
        ("vcpus = 2", 'vcpus = "two"', "domain.vcpus: must be int, got str"),
        ("vcpus = 2", "vcpus = true", "domain.vcpus: must be int, got bool"),
        ("vcpus = 2", "vcpus = 0", "domain.vcpus: must be 1-512, got 0"),
        ("vcpus = 2", "vcpus = 100000", "domain.vcpus: must be 1-512, got 100000"),
        ("vcpus = 2", "vcpus = 2\nmemory_mb = 999999999", "domain.memory_mb: must be 32-1048576"),
        ("vcpus = 2", f"vcpus = 2\ncmdline = '{'x' * 100_000}'", "at most 4096"),
        ("deadline = 10\nrequired = ['login ok']", "deadline = inf", "must be > 0 and <= 86400"),
        ("deadline = 10\nrequired = ['login ok']", "deadline = nan", "must be > 0 and <= 86400"),
        ("deadline = 10\nrequired = ['login ok']", "deadline = -1", "must be > 0 and <= 86400"),
        # Catastrophic backtracking in Python's re: RE2 runs it in linear time instead ...
        # ... and refuses what it cannot run in linear time, naming the pattern.
        ("pattern = 'panic: '", "pattern = '(a)\\1'", "forbidden[0]: bad regex '(a)\\\\1'"),
        ("pattern = 'panic: '", "pattern = '(?=panic)p'", "look-arounds"),
        ("pattern = 'panic: '", f"pattern = '{'a' * 2000}'", "at most 1024"),
        (
            "required = ['early-init ok']",
            "required = 'early-init ok'",
            "stages[0] (early-init).required: must be list, got str",
        ),
        (
            "deadline = 10\nrequired = ['login ok']",
            "deadline = 'soon'\nrequired = ['login ok']",
            "stages[4] (login).deadline: must be int or float, got str",
        ),
        ('kernel = "/boot/k"', 'kernel = "/boot/k"\nmode = "hvm"', "domain.mode: 'hvm' is not one"),
        ("required = ['login ok']", "required = ['']", "empty pattern"),
        ("required = ['login ok']", "required = ['x*']", "matches the empty string"),
    ],
)
def test_bad_profiles_name_file_and_key(
    tmp_path: Path, needle: str, replacement: str, message: str
) -> None:
    path = write(tmp_path, "")
    text = path.read_text()
    assert needle in text, needle
    path.write_text(text.replace(needle, replacement, 1))
    with pytest.raises(ProfileError) as e:
        load_profile(str(path))
    assert str(path) in str(e.value)
    assert message in str(e.value)


def test_missing_and_misordered_stages(tmp_path: Path) -> None:
    path = write(tmp_path, "", stages=("early-init", "ap-launch", "root-mount", "login"))
    with pytest.raises(ProfileError, match=r"tiny\.toml: stages: missing stage\(s\): xenbus"):
        load_profile(str(path))
    # Guest stages come in the OS's own order; host stages must come first.
    order = ("early-init", "xenbus", "ap-launch", "root-mount", "login")
    path = write(tmp_path, "", stages=order)
    assert [s.name for s in load_profile(str(path)).stages] == list(order)
    path = write(tmp_path, "", stages=("early-init", "hypervisor", *GUEST_STAGES[1:]))
    with pytest.raises(ProfileError, match="out of order"):
        load_profile(str(path))
    path = write(tmp_path, "", stages=(*GUEST_STAGES, "hvm"))
    with pytest.raises(ProfileError, match="unknown stage 'hvm'"):
        load_profile(str(path))
    path.write_text('name = "x"\n')
    with pytest.raises(ProfileError, match="stages: missing"):
        load_profile(str(path))


def test_counting_patterns_need_their_group(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    path.write_text(
        path.read_text().replace("required = ['ap-launch ok']", r"ap_ids = ['AP (\d+) up']")
    )
    with pytest.raises(ProfileError, match=r"needs a named group \(\?P<ids>"):
        load_profile(str(path))


def test_invalid_toml_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("name = \n")
    with pytest.raises(ProfileError, match=r"broken\.toml: invalid TOML"):
        load_profile(str(path))


def test_required_literals() -> None:
    assert required_literals(r"Booting (paravirtualized )?kernel on Xen PVH") == (
        "kernel on Xen PVH",
    )
    assert required_literals(r"Run /init as init process|VFS: Mounted root") == (
        "Run /init as init process",
        "VFS: Mounted root",
    )
    assert required_literals(r"(?P<dev>xn\d+): <Virtual") == (": <Virtual",)
    assert required_literals(r"\d+ widgets|x") == ()  # a branch without a literal
    assert required_literals(r"(?i)login:") == ()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'name = "caf\xe9"\n', "not UTF-8 (byte 0xe9 at offset 11)"),
        (bytes(range(256)) * 4, "a binary file (NUL byte at offset 0)"),
        (b"[" * 100_000, "invalid TOML"),
    ],
)
def test_unreadable_profile_files_are_one_line_profile_errors(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "odd.toml"
    path.write_bytes(content)
    with pytest.raises(ProfileError) as e:
        load_profile(str(path))
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_catastrophic_pattern_runs_in_linear_time(tmp_path: Path) -> None:
    """`(a+)+$` backtracks exponentially in Python's re (23 characters: ~0.2 s, every extra
    one doubles it); the profile's engine answers a 64 KiB hostile line at once."""
    import time

    from xenpvh.check.checker import StageChecker

    path = write(tmp_path, "")
    path.write_text(path.read_text().replace("pattern = 'panic: '", "pattern = '(a+)+$'", 1))
    profile = load_profile(str(path))
    checker = StageChecker(profile, vcpus=1, disks=0, vifs=0, clock=None)
    t0 = time.process_time()
    checker.feed(("a" * 65_000 + "!\n").encode())
    assert time.process_time() - t0 < 1.0
    assert not checker.done
