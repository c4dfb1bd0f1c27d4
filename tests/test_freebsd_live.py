"""Live: a FreeBSD kernel built by the build room (`xenpvh build freebsd`) booted as a PVH
guest on the session's Xen host, with xenpvh's FreeBSD guest kit as its root (an ISO 9660
image holding our own /sbin/init, xenpvh.build.freebsdkit).

The kernel is the user's (`$XENPVH_FREEBSD_KERNEL`, else the newest in the build cache);
without one the tests skip with xenpvh.run.guest_inputs.NO_FREEBSD_KERNEL.  Before the nested-SVM
#VMEXIT fix (guestcfg/patches/qemu/0002) this kernel froze the whole nested host at unpause.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from xenpvh.check.verdict import StageStatus, VerdictValue
from xenpvh.host.base import Host
from xenpvh.profile.loader import guestcfg_dir
from xenpvh.run.guest_inputs import NO_FREEBSD_KERNEL, freebsd_kernel
from xenpvh.run.request import BootRequest
from xenpvh.run.session import Session
from xenpvh.toolstack.xl import Xl

pytestmark = pytest.mark.xen

IMAGES = "/var/lib/xenpvh/images"


# Session scope and first in each test's arguments: the skip comes before the session's host
# is booted (pytest sets up wider-scoped fixtures first, then in argument order).
@pytest.fixture(scope="session")
def kernel() -> Path:
    found = freebsd_kernel()
    if found is None or not found.is_file():
        pytest.skip(NO_FREEBSD_KERNEL)
    return found


def kit_profile(directory: Path, mountfrom: str) -> Path:
    """freebsd-pvh with `mountfrom` as its root (a second vfs.root.mountfrom appended to the
    command line loses to the first, so the profile's own is replaced)."""
    text = (guestcfg_dir() / "freebsd-pvh.toml").read_text()
    text, m = re.subn(r"(?m)^cmdline = .*$", f'cmdline = "vfs.root.mountfrom={mountfrom}"', text)
    assert m == 1
    path = directory / "freebsd-pvh.toml"
    path.write_text(text)
    return path


def _boot(profile: str, kernel: Path | None, host: Host, art: Path, vcpus: int):
    request = BootRequest(
        profile=profile,
        kernel=None if kernel is None else str(kernel),
        vcpus=vcpus,
        artifacts=art / "run",
        attempts=1,
        timeout=600,
    )
    v = Session(request, host=host).run().verdict
    console = (art / "run" / "console.log").read_text(errors="replace")
    print(f"vcpus={vcpus}: {v.verdict} {v.failed_stage}: {v.reason}")
    for s in v.stages:
        print(f"  {s.name}: {s.status} t={s.t} {s.evidence[:100]!r}")
    print("console head:\n" + "\n".join(console.splitlines()[:12]))
    return v, console


# 2 vCPUs is in the nightly tier (tests/conftest.py): 1 and 4 prove one and several APs.
@pytest.mark.parametrize("vcpus", [1, pytest.param(2, marks=pytest.mark.slow), 4])
def test_freebsd_passes_every_stage(
    kernel: Path, xen_host: Host, tmp_path: Path, vcpus: int
) -> None:
    """The shipped profile as it is (`xenpvh boot --profile freebsd-pvh`): the kernel the
    build room made, the kit's ISO as root."""
    # No --kernel: the profile's own `@freebsd:kernel` finds the same kernel the fixture did.
    v, console = _boot("freebsd-pvh", None, xen_host, tmp_path, vcpus)
    assert v.verdict == VerdictValue.PASS, f"{v.failed_stage}: {v.reason}"
    assert all(s.status == StageStatus.PASSED for s in v.stages)
    assert v.meta["xenstore_check"] == "connected"
    # Our init saw what the kernel gave it.
    assert f"xenpvh-init: cpus: {vcpus}" in console
    assert "xenpvh-init: root: cd9660 /dev/xbd0" in console
    assert [d.name for d in Xl(xen_host).list()] == ["Domain-0"]


def test_freebsd_root_mount_failure_fails_root_mount(
    kernel: Path, xen_host: Host, tmp_path: Path
) -> None:
    """The kernel tunable vfs.root.mountfrom pointing root at a device that does not exist:
    FreeBSD's own `Mounting from ... failed` line fails root-mount, the stages before it
    passed.  (Appending a second vfs.root.mountfrom to the command line does not work: the
    first one wins.)"""
    profile = kit_profile(tmp_path, "cd9660:/dev/xbd9")
    v, console = _boot(str(profile), kernel, xen_host, tmp_path, 1)
    assert v.verdict == VerdictValue.FAIL and v.failed_stage == "root-mount", v.reason
    by = {s.name: s.status for s in v.stages}
    assert by["early-init"] == by["xenbus"] == by["ap-launch"] == StageStatus.PASSED
    assert "cd9660:/dev/xbd9" in console
    assert [d.name for d in Xl(xen_host).list()] == ["Domain-0"]
