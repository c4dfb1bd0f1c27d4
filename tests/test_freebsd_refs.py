"""freebsd-pvh out of the box: its kernel is `@freebsd:kernel` (the newest kernel the build
room made, or $XENPVH_FREEBSD_KERNEL) and its root `@freebsd-kit:rootfs` (the FreeBSD guest
kit's ISO, sent to the host as it is, once).  Real files on LocalHost; the live boots are in
tests/test_freebsd_live.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_run_boot import FakeXenStore
from test_toolstack_fakes import FakeXenHost

from xenpvh.errors import BlockedError
from xenpvh.host.local import LocalHost
from xenpvh.live_inputs import FREEBSD_KERNEL_ENV, NO_FREEBSD_KERNEL
from xenpvh.profile import load_profile
from xenpvh.run import BootRun
from xenpvh.run.guest_disk import PackedImage, ensure_on_host


def test_the_profile_names_the_built_kernel_and_the_kit_root() -> None:
    d = load_profile("freebsd-pvh").defaults
    assert d.kernel == "@freebsd:kernel"
    assert [x.target for x in d.disks] == ["@freebsd-kit:rootfs"]
    assert d.cmdline == "vfs.root.mountfrom=cd9660:/dev/xbd0"


def test_no_freebsd_kernel_is_blocked_naming_how_to_get_one(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(FREEBSD_KERNEL_ENV, str(tmp_path / "missing-kernel"))
    host = FakeXenHost()
    try:
        run = BootRun(
            host,
            load_profile("freebsd-pvh"),
            load_profile("freebsd-pvh").point(),
            artifacts=tmp_path / "art",
            xenstore_factory=lambda h: FakeXenStore(),
        )
        with pytest.raises(BlockedError) as info:
            run._resolve("@freebsd:kernel", "kernel")
    finally:
        host.close()
    assert NO_FREEBSD_KERNEL in str(info.value)


def test_a_plain_image_is_sent_once_under_its_content_name(tmp_path: Path) -> None:
    iso = tmp_path / "rootfs.iso"
    iso.write_bytes(b"CD001" * 1000)
    image = PackedImage(iso, "", "ab" * 32, name="freebsd-kit.iso")
    remote_root = tmp_path / "host-root"
    host = LocalHost()
    base, took = ensure_on_host(host, image, str(remote_root))
    assert base == f"{remote_root}/images/{'ab' * 8}-freebsd-kit.iso"
    assert Path(base).read_bytes() == iso.read_bytes()
    assert took["unpack_s"] == 0.0
    assert not list(Path(base).parent.glob("*.part"))
    # A host that has it is sent nothing.
    iso.write_bytes(b"changed")
    again, took2 = ensure_on_host(host, image, str(remote_root))
    assert again == base and took2 == {"send_s": 0.0, "unpack_s": 0.0}
    assert Path(base).read_bytes() != b"changed"
