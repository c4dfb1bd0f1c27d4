"""Live: a FreeBSD kernel built by the build room (`xenpvh build freebsd`) booted as a PVH
guest on the session's Xen host.  The kernel is the user's (`$XENPVH_FREEBSD_KERNEL`, else
the newest in the build cache); without one the test skips with
xenpvh.live_inputs.NO_FREEBSD_KERNEL.

There is no FreeBSD root filesystem yet (the FreeBSD guest kit is future work): the guest
gets an empty scratch disk, so FreeBSD must come up through early-init, xenbus (its disk
and vif named on the console) and ap-launch on every vCPU count, then fail to mount root,
and the run must fail at root-mount on FreeBSD's own line.  Before the nested-SVM #VMEXIT
fix (guestcfg/patches/qemu/0002) this kernel froze the whole nested host at unpause.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from xenpvh.check.verdict import StageStatus, VerdictValue
from xenpvh.host.base import Host
from xenpvh.live_inputs import NO_FREEBSD_KERNEL, freebsd_kernel
from xenpvh.profile.loader import guestcfg_dir
from xenpvh.run.request import BootRequest
from xenpvh.run.session import Session
from xenpvh.toolstack.xl import Xl

pytestmark = pytest.mark.xen


# Session scope and first in each test's arguments: the skip comes before the session's host
# is booted (pytest sets up wider-scoped fixtures first, then in argument order).
@pytest.fixture(scope="session")
def kernel() -> Path:
    found = freebsd_kernel()
    if found is None or not found.is_file():
        pytest.skip(NO_FREEBSD_KERNEL)
    return found


def scratch_profile(tmp_path: Path) -> Path:
    """freebsd-pvh with a 16 MB scratch disk instead of a root image on the host."""
    text = (guestcfg_dir() / "freebsd-pvh.toml").read_text()
    text, n = re.subn(r"(?m)^disks = .*$", 'disks = [{ vdev = "xvda", size_mb = 16 }]', text)
    assert n == 1
    path = tmp_path / "freebsd-pvh.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("vcpus", [1, 2, 4])
def test_freebsd_boots_to_root_mount(
    kernel: Path, xen_host: Host, tmp_path: Path, vcpus: int
) -> None:
    art = tmp_path / "run"
    request = BootRequest(
        profile=str(scratch_profile(tmp_path)),
        kernel=str(kernel),
        vcpus=vcpus,
        artifacts=art,
        attempts=1,
        timeout=600,
    )
    v = Session(request, host=xen_host).run().verdict
    by = {s.name: s for s in v.stages}
    console = (art / "console.log").read_text(errors="replace")
    print(f"vcpus={vcpus}: {v.verdict} {v.failed_stage}: {v.reason}")
    for s in v.stages:
        print(f"  {s.name}: {s.status} t={s.t} {s.evidence[:100]!r}")
    print("console head:\n" + "\n".join(console.splitlines()[:15]))
    for stage in ("early-init", "xenbus", "ap-launch"):
        assert by[stage].status == StageStatus.PASSED, (stage, v.reason)
    assert v.verdict == VerdictValue.FAIL and v.failed_stage == "root-mount", v.reason
    assert "Trying to mount root from ufs:/dev/xbd0p2" in console
    assert [d.name for d in Xl(xen_host).list()] == ["Domain-0"]
