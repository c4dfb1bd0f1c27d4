"""Module dependency resolution from a fake modules.dep and from real ELF .modinfo sections."""

from __future__ import annotations

import lzma
import shutil
import subprocess
from pathlib import Path

import pytest

from xenpvh.build.kmod import ModuleDb, modinfo, module_name, read_module
from xenpvh.errors import BlockedError

MODULES_DEP = """\
kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko.xz kernel/fs/jbd2/jbd2.ko.xz
kernel/fs/jbd2/jbd2.ko.xz:
kernel/fs/mbcache.ko.xz:
kernel/lib/crc16.ko.xz:
kernel/drivers/block/xen-blkfront.ko.xz:
kernel/drivers/net/xen-netfront.ko.xz:
kernel/crypto/crc32c_generic.ko.xz:
"""


def test_module_name_folds_dashes_and_suffixes() -> None:
    assert module_name("kernel/drivers/block/xen-blkfront.ko.xz") == "xen_blkfront"
    assert module_name("kernel/fs/ext4/ext4.ko") == "ext4"


def test_load_order_puts_dependencies_first() -> None:
    db = ModuleDb.from_modules_dep(MODULES_DEP)
    order = db.load_order(["xen-blkfront", "ext4", "xen-netfront"])
    assert order[0] == "xen_blkfront"
    assert order[-1] == "xen_netfront"
    assert set(order) == {"xen_blkfront", "crc16", "mbcache", "jbd2", "ext4", "xen_netfront"}
    for dep in ("crc16", "mbcache", "jbd2"):
        assert order.index(dep) < order.index("ext4")
    assert db.paths["ext4"] == "kernel/fs/ext4/ext4.ko.xz"


def test_builtin_module_is_not_loaded() -> None:
    text = "kernel/drivers/block/xen-blkfront.ko: \n"
    db = ModuleDb.from_modules_dep(text, builtin=["kernel/fs/ext4/ext4.ko"])
    assert db.load_order(["ext4", "xen-blkfront"]) == ["xen_blkfront"]


def test_missing_module_is_named_with_its_user() -> None:
    db = ModuleDb.from_modules_dep("kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\n")
    with pytest.raises(BlockedError, match=r"'jbd2' not found \(needed by ext4\)"):
        db.load_order(["ext4"])


def test_cycle_is_reported() -> None:
    db = ModuleDb.from_modules_dep("a.ko: b.ko\nb.ko: a.ko\n")
    with pytest.raises(BlockedError, match="cycle: a -> b -> a"):
        db.load_order(["a"])


def test_malformed_modules_dep_names_the_line() -> None:
    with pytest.raises(BlockedError, match="line 2"):
        ModuleDb.from_modules_dep("a.ko:\nno colon here\n")


def _fake_module(tmp_path: Path, name: str, depends: str) -> Path:
    """A real ELF object whose .modinfo carries what a kernel module's would."""
    src = tmp_path / f"{name}.c"
    src.write_text(
        '__attribute__((section(".modinfo"), used)) static const char info[] = '
        f'"license=GPL\\0depends={depends}\\0name={name}";\n'
    )
    out = tmp_path / f"{name}.o"
    subprocess.run(["gcc", "-c", "-o", str(out), str(src)], check=True)
    return out


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_tree_without_modules_dep_reads_modinfo(tmp_path: Path) -> None:
    moddir = tmp_path / "lib/modules/6.1.0-test"
    (moddir / "kernel/fs/ext4").mkdir(parents=True)
    (moddir / "kernel/fs/jbd2").mkdir(parents=True)
    ext4 = _fake_module(tmp_path, "ext4", "jbd2,mbcache")
    assert modinfo(ext4.read_bytes())["depends"] == ["jbd2,mbcache"]
    shutil.copy(ext4, moddir / "kernel/fs/ext4/ext4.ko")
    jbd2 = _fake_module(tmp_path, "jbd2", "")
    (moddir / "kernel/fs/jbd2/jbd2.ko.xz").write_bytes(lzma.compress(jbd2.read_bytes()))
    shutil.copy(_fake_module(tmp_path, "mbcache", ""), moddir / "kernel/fs/mbcache.ko")
    (moddir / "modules.builtin").write_text("kernel/drivers/block/xen-blkfront.ko\n")

    db = ModuleDb.from_tree(moddir)
    order = db.load_order(["xen-blkfront", "ext4"])
    assert order[-1] == "ext4"
    assert set(order) == {"jbd2", "mbcache", "ext4"}
    # Compressed modules come out decompressed: busybox insmod loads plain ELF.
    assert read_module(moddir / db.paths["jbd2"]) == jbd2.read_bytes()
