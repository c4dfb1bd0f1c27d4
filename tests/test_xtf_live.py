"""Live: one Xen Test Framework test (`test-hvm64-example`) booted as a PVH guest on the
session's Xen host through the `xtf` profile.  The binary is the user's build of XTF
(`$XENPVH_XTF_DIR`, else the newest `xenpvh build xtf --tree PATH` in the cache); without one
the test skips with xenpvh.run.guest_inputs.NO_XTF."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenpvh.check.verdict import StageStatus, VerdictValue
from xenpvh.host.base import Host
from xenpvh.run.guest_inputs import NO_XTF, xtf_test
from xenpvh.run.request import BootRequest
from xenpvh.run.session import Session
from xenpvh.toolstack.xl import Xl

pytestmark = pytest.mark.xen

EXAMPLE = "test-hvm64-example"


@pytest.fixture(scope="session")
def example() -> Path:
    found = xtf_test(EXAMPLE)
    if found is None:
        pytest.skip(NO_XTF)
    return found


def test_xtf_example_passes_through_the_xtf_profile(
    example: Path, xen_host: Host, tmp_path: Path
) -> None:
    request = BootRequest(profile="xtf", kernel=str(example), artifacts=tmp_path, attempts=1)
    v = Session(request, host=xen_host).run().verdict
    assert v.verdict == VerdictValue.PASS, f"{v.failed_stage}: {v.reason}"
    assert [(s.name, s.status) for s in v.stages] == [
        ("early-init", StageStatus.PASSED),
        ("test-result", StageStatus.PASSED),
    ]
    console = (tmp_path / "console.log").read_text(errors="replace")
    assert "Environment: HVM 64bit" in console and "Test result: SUCCESS" in console
    assert [d.name for d in Xl(xen_host).list()] == ["Domain-0"]
