"""Live: Xen 4.17.5 from Debian's source package with the sample patch series.

Uses the shared artifact cache (`${XDG_CACHE_HOME:-~/.cache}/xenpvh/builds`), so the first
run on a machine builds (~2-5 min at -j2) and later runs prove the cache hit; set
XENPVH_REBUILD=1 to force the real build.
"""

from __future__ import annotations

import gzip
import os
import re
import time
from pathlib import Path

import pexpect
import pytest

from xenpvh.build.builder import build_xen
from xenpvh.build.patching import PatchFailed
from xenpvh.build.tree import Patch, TreeSpec

pytestmark = pytest.mark.xen

SAMPLE = Path(__file__).resolve().parent.parent / "guestcfg/patches/xen"
MARKER = b"xenpvh: patched hypervisor XENPVH-SAMPLE-PATCH-1"


def test_patched_debian_xen_builds_and_second_build_hits_cache() -> None:
    spec = TreeSpec.from_toml(SAMPLE / "sample.toml")
    first = build_xen(spec, rebuild=os.environ.get("XENPVH_REBUILD") == "1")
    assert first.version == "4.17.5"
    image = first.image.read_bytes()
    assert image[:5] == b"\x7fELF\x01"  # ELF32: what QEMU's multiboot loader boots
    assert MARKER in image
    assert gzip.decompress(first.xen_gz.read_bytes()) == image
    # The name provisioning accepts (xen-<version>-<key12>.gz, a GRUB title).
    assert first.xen_gz.name == f"xen-4.17.5-{first.cache.key[:12]}.gz"
    assert "CC      drivers/char/console.o" in first.log.read_text()  # the patched file

    start = time.monotonic()
    second = build_xen(spec)
    took = time.monotonic() - start
    assert second.cache.hit, second.cache.describe()
    assert took < 1.0
    assert second.cache.key == first.cache.key
    assert second.image == first.image


def test_built_xen_prints_the_marker_when_qemu_boots_it() -> None:
    """The patched hypervisor really runs: QEMU's multiboot loader boots the image (TCG, no
    dom0, so Xen panics right after the banner and QEMU exits on the reboot)."""
    result = build_xen(TreeSpec.from_toml(SAMPLE / "sample.toml"))
    argv = ["-machine", "accel=tcg", "-cpu", "qemu64,+svm,+npt", "-m", "512", "-smp", "1"]
    argv += ["-nographic", "-no-reboot", "-kernel", str(result.image), "-append", "console=com1"]
    child = pexpect.spawn("qemu-system-x86_64", argv, timeout=120)
    try:
        child.expect(rb"\(XEN\) Xen version 4\.17\.5")
        child.expect(rb"\(XEN\) " + re.escape(MARKER))
        child.expect(rb"dom0 kernel not specified")
    finally:
        child.terminate(force=True)
        child.close()


def test_broken_patch_is_blocked_naming_patch_and_hunk(tmp_path: Path) -> None:
    good = (SAMPLE / "series").read_text().split()[-1]
    text = (SAMPLE / good).read_text()
    broken = tmp_path / "0001-broken.patch"
    # Change a context line so the hunk no longer matches Debian's console.c.
    broken.write_text(text.replace(" xen_compiler(), xen_build_info(),", " xen_compiler_x(),"))
    assert broken.read_text() != text
    spec = TreeSpec.from_toml(SAMPLE / "sample.toml")
    spec = TreeSpec(spec.source, (Patch(broken),))
    with pytest.raises(PatchFailed) as info:
        build_xen(spec)
    err = info.value
    assert err.patch == broken
    assert err.target == "xen/drivers/char/console.c"
    assert str(broken) in str(err)
    assert "@@ -1006,6 +1006,9 @@" in str(err)
