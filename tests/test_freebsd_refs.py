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
from xenpvh.profile import load_profile
from xenpvh.run.boot import BootRun, RunHooks
from xenpvh.run.guest_disk import PackedImage, ensure_on_host
from xenpvh.run.guest_inputs import FREEBSD_KERNEL_ENV, NO_FREEBSD_KERNEL


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
            hooks=RunHooks(xenstore_factory=lambda h: FakeXenStore()),
        )
        with pytest.raises(BlockedError) as info:
            run.inputs.resolve("@freebsd:kernel", "kernel")
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


def _sparse_image(path: Path) -> bytes:
    """A 64-MiB image with three data regions and holes between (as an ext4 image has)."""
    with path.open("wb") as f:
        for off, data in ((0, b"boot" * 1024), (20 << 20, b"\x5a" * 70000), (63 << 20, b"end")):
            f.seek(off)
            f.write(data)
        f.truncate(64 << 20)
    return path.read_bytes()


def test_a_packed_sparse_image_is_unpacked_whole_with_its_holes(tmp_path: Path) -> None:
    """GNU tar's sparse pack (what `xenpvh build debian-guest` ships), unpacked by the script
    a host runs: the same bytes, holes kept, no temp dir and no pack left."""
    import subprocess

    img = tmp_path / "disk.img"
    content = _sparse_image(img)
    pack = tmp_path / "disk.tar.gz"
    subprocess.run(["tar", "-C", str(tmp_path), "-cSzf", str(pack), "disk.img"], check=True)
    image = PackedImage(pack, "disk.img", "cd" * 32)
    remote_root = tmp_path / "host-root"
    base, took = ensure_on_host(LocalHost(), image, str(remote_root))
    out = Path(base)
    assert out.read_bytes() == content
    assert out.stat().st_blocks * 512 < 1 << 20  # 64 MiB long, under 1 MiB allocated
    assert out.stat().st_mode & 0o777 == 0o644
    assert took["unpack_s"] > 0
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]


def test_a_pack_without_its_member_is_broken_and_leaves_nothing(tmp_path: Path) -> None:
    import tarfile

    from xenpvh.errors import BrokenError

    pack = tmp_path / "other.tar.gz"
    (tmp_path / "other.img").write_bytes(b"x")
    with tarfile.open(pack, "w:gz") as tf:
        tf.add(tmp_path / "other.img", arcname="other.img")
    image = PackedImage(pack, "disk.img", "ef" * 32)
    remote_root = tmp_path / "host-root"
    with pytest.raises(BrokenError):
        ensure_on_host(LocalHost(), image, str(remote_root))
    assert list((remote_root / "images").iterdir()) == []
