"""Profiles choose their stages and device checks: the five OS stages stay the default, a
`stage_set = "custom"` profile names its own (XTF: early-init, test-result), `device_checks`
say what XenStore must show, and `[[blocked]]` lines make a blocked verdict."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from xenpvh.check.checker import StageChecker
from xenpvh.check.verdict import VerdictValue
from xenpvh.errors import ProfileError
from xenpvh.profile.loader import load_profile, parse_profile
from xenpvh.profile.model import DEVICE_CHECKS
from xenpvh.run.devices import DeviceCheck
from xenpvh.toolstack.xenstore import DeviceState

CUSTOM = """
name = "unikernel"
stage_set = "custom"
device_checks = ["vbd"]
[[stages]]
name = "early-init"
deadline = 10
required = ['hello']
[[stages]]
name = "test-result"
deadline = 10
required = ['done']
"""


def _parse(text: str) -> object:
    return parse_profile(tomllib.loads(text), Path("t.toml"))


def test_custom_stage_set_is_the_profiles_own_order() -> None:
    p = _parse(CUSTOM)
    assert [s.name for s in p.stages] == ["early-init", "test-result"]
    assert p.device_checks == ("vbd",)


def test_os_profiles_still_need_the_five_stages_and_say_how_to_opt_out() -> None:
    os_set = CUSTOM.replace('stage_set = "custom"\n', "")
    with pytest.raises(ProfileError, match=r"unknown stage 'test-result'.*stage_set = .custom."):
        _parse(os_set)
    with pytest.raises(ProfileError, match=r"missing stage\(s\): ap-launch.*stage_set = .custom."):
        _parse(os_set.replace('name = "test-result"', 'name = "login"'))
    linux = load_profile("linux-pvh")
    assert linux.stage_set == "os" and linux.device_checks == DEVICE_CHECKS


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('stage_set = "custom"', 'stage_set = "bespoke"'), "stage_set"),
        (('device_checks = ["vbd"]', 'device_checks = ["tty"]'), "device_checks"),
        (('name = "test-result"', 'name = "Test Result"'), "stage name"),
        (('name = "test-result"', 'name = "early-init"'), "duplicate stage"),
    ],
)
def test_bad_stage_sets_are_blocked_naming_the_key(edit: tuple[str, str], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        _parse(CUSTOM.replace(*edit))


XTF_OK = b"""--- Xen Test Framework ---
Environment: HVM 64bit (Long mode 4 levels)
Hello World
Test result: SUCCESS
"""


@pytest.mark.parametrize(
    ("console", "verdict", "stage"),
    [
        (XTF_OK, VerdictValue.PASS, None),
        (XTF_OK.replace(b"SUCCESS", b"SUCCESS with warnings"), VerdictValue.PASS, None),
        (XTF_OK.replace(b"SUCCESS", b"FAILURE"), VerdictValue.FAIL, "test-result"),
        (XTF_OK.replace(b"SUCCESS", b"ERROR"), VerdictValue.FAIL, "test-result"),
        (XTF_OK.replace(b"SUCCESS", b"SKIP"), VerdictValue.BLOCKED, None),
        (XTF_OK.replace(b"Test result: SUCCESS\n", b""), VerdictValue.FAIL, "test-result"),
    ],
)
def test_xtf_profile_judges_xtfs_own_result_line(
    console: bytes, verdict: VerdictValue, stage: str | None
) -> None:
    checker = StageChecker(load_profile("xtf"), vcpus=1, disks=0, vifs=0, clock=None)
    checker.feed(console)
    v = checker.verdict if checker.done else checker.finish("console ended")
    assert (v.verdict, v.failed_stage) == (verdict, stage)
    if verdict == VerdictValue.BLOCKED:
        assert "xtf-skip" in v.reason and "Test result: SKIP" in v.reason


# XTF's PV environments (arch/x86/include/arch/config.h: ENVIRONMENT_DESCRIPTION, printed by
# common/setup.c as "Environment: %s"): a PV test binary is no PVH guest, even if it passes.
@pytest.mark.parametrize(
    "environment", ["PV 64bit (Long mode 4 levels)", "PV 32bit (PAE 3 levels)"]
)
@pytest.mark.parametrize("result", [b"SUCCESS", b"FAILURE"])
def test_xtf_profile_fails_a_pv_environment_at_early_init(environment: str, result: bytes) -> None:
    console = XTF_OK.replace(b"HVM 64bit (Long mode 4 levels)", environment.encode())
    checker = StageChecker(load_profile("xtf"), vcpus=1, disks=0, vifs=0, clock=None)
    checker.feed(console.replace(b"SUCCESS", result))
    v = checker.finish("console ended")
    assert (v.verdict, v.failed_stage) == (VerdictValue.FAIL, "early-init")
    early = next(s for s in v.stages if s.name == "early-init")
    assert early.evidence == f"Environment: {environment}"
    assert "xtf-pv-environment" in v.reason and early.line == 2


def _vbd(state: int) -> DeviceState:
    return DeviceState("vbd", "51712", "/local/domain/5/device/vbd/51712", state, "/be", 4)


def test_device_check_asks_no_tty_of_an_exited_guest_and_only_the_profiles_checks() -> None:
    check = DeviceCheck(0.0)
    assert check.judge([], None, domid=5, disks=0, vifs=0) == [
        "/local/domain/5/console/tty missing"
    ]
    check = DeviceCheck(0.0)
    assert check.judge([], None, domid=5, disks=0, vifs=0, exited=True) == []
    assert check.result == "connected"
    check = DeviceCheck(0.0)
    problems = check.judge([_vbd(3)], "/dev/pts/1", domid=5, disks=1, vifs=1, checks=("vbd",))
    assert problems == [_vbd(3).describe()]  # the vif is not this profile's check
    check = DeviceCheck(0.0)
    assert check.judge([_vbd(3)], None, domid=5, disks=1, vifs=0, checks=()) == []
