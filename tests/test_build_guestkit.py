"""The Linux guest kit: init script, cache key, the artifact cache serving it, atomic failure,
and a real boot under QEMU."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import time
from pathlib import Path

import pexpect
import pytest

from xenpvh.build import debpkg, guestkit
from xenpvh.build.cache import Built
from xenpvh.build.guestkit import build_linux_guest_kit, kit_key
from xenpvh.build.guestkit_initramfs import render_init
from xenpvh.errors import BrokenError

KERNEL = debpkg.DebPackage("linux-image-6.1.0-56-amd64", "6.1.192-2")
BUSYBOX = debpkg.DebPackage("busybox-static", "1:1.35.0-4+deb12u1+b1")


def test_init_reopens_console_before_printing_and_loads_modules_in_order() -> None:
    text = render_init("6.1.0-test", ["kernel/lib/crc16.ko", "kernel/fs/ext4/ext4.ko"])
    assert text.startswith("#!/bin/sh\n")
    reopen = text.index("exec 0</dev/console 1>/dev/console 2>/dev/console")
    assert text.index("mount -t devtmpfs devtmpfs /dev") < reopen < text.index("echo ")
    assert "for mod in kernel/lib/crc16.ko kernel/fs/ext4/ext4.ko; do" in text
    assert 'insmod "/lib/modules/6.1.0-test/$mod"' in text
    assert "hostname xenpvh-guest" in text
    assert 'echo "xenpvh-init: netfront $ifname up"' in text
    assert "/sbin/getty -L $tty 115200 vt100" in text
    assert "@" not in text.replace("$@", "")


def test_init_is_valid_shell() -> None:
    text = render_init("6.1.0-test", ["kernel/fs/ext4/ext4.ko"])
    subprocess.run(["sh", "-n"], input=text.encode(), check=True)


def test_key_changes_with_every_input(monkeypatch: pytest.MonkeyPatch) -> None:
    base = kit_key(KERNEL, BUSYBOX)
    assert base == kit_key(KERNEL, BUSYBOX)
    assert kit_key(debpkg.DebPackage(KERNEL.name, "6.1.193-1"), BUSYBOX) != base
    assert kit_key(KERNEL, debpkg.DebPackage(BUSYBOX.name, "1:1.36")) != base
    monkeypatch.setattr(guestkit, "INIT_TEMPLATE", guestkit.INIT_TEMPLATE + "\n# changed\n")
    assert kit_key(KERNEL, BUSYBOX) != base


def test_failed_build_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        debpkg, "candidates", lambda *names: {n: debpkg.DebPackage(n, "1") for n in names}
    )
    monkeypatch.setattr(debpkg, "pinned_dependency", lambda meta, prefix: KERNEL)

    def no_mirror(pkg: debpkg.DebPackage, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "half.deb").write_bytes(b"partial")
        raise BrokenError("mirror unreachable")

    monkeypatch.setattr(debpkg, "download", no_mirror)
    with pytest.raises(BrokenError, match="mirror unreachable"):
        build_linux_guest_kit(tmp_path)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in (".locks", "work")]
    assert leftovers == [".resolved.json"]  # the version memo, never a kit or a temp dir
    assert list((tmp_path / "work").iterdir()) == []  # the build's work dir is gone


@pytest.fixture
def fake_kit_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Package resolution from a fake index (`versions`, edited by the test) and a build step
    that writes two small files; `built` counts the builds.  The cache is the unit here."""
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "Packages").write_text("0")
    state: dict[str, object] = {"built": 0, "versions": {"kernel": KERNEL.version}}
    versions = state["versions"]
    assert isinstance(versions, dict)

    def candidates(*names: str) -> dict[str, debpkg.DebPackage]:
        return {n: debpkg.DebPackage(n, "1") for n in names}

    def pinned(meta: debpkg.DebPackage, prefix: str) -> debpkg.DebPackage:
        return debpkg.DebPackage(KERNEL.name, versions["kernel"])

    def build(work: Path, kernel, busybox, progress) -> Built:
        state["built"] = int(state["built"]) + 1  # type: ignore[call-overload]
        (work / "vmlinuz").write_bytes(b"kernel " + kernel.version.encode())
        (work / "initrd.gz").write_bytes(b"initrd")
        manifest = {
            "recipe": guestkit.CACHE_RECIPE,
            "kernel_release": "6.1.0-test",
            "kernel_package": [kernel.name, kernel.version],
            "busybox_package": [busybox.name, busybox.version],
            "modules": list(guestkit.MODULES),
            "seconds": 0.0,
        }
        files = {
            "kernel": (work / "vmlinuz", "vmlinuz"),
            "ramdisk": (work / "initrd.gz", "initrd.gz"),
        }
        return Built(files, manifest)

    monkeypatch.setattr(guestkit, "APT_LISTS", lists)
    monkeypatch.setattr(debpkg, "candidates", candidates)
    monkeypatch.setattr(debpkg, "pinned_dependency", pinned)
    monkeypatch.setattr(guestkit, "_build", build)
    state["lists"] = lists
    return state


def test_a_second_build_is_a_cache_hit_and_a_new_kernel_a_miss(
    tmp_path: Path, fake_kit_build: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    first = build_linux_guest_kit(cache)
    assert fake_kit_build["built"] == 1
    assert first.kernel.read_bytes() == b"kernel " + KERNEL.version.encode()
    assert first.kernel.parent == cache / first.key  # an entry of the artifact cache
    assert build_linux_guest_kit(cache) == first
    assert fake_kit_build["built"] == 1  # served from the cache
    # apt-get update brought a new kernel: a new key, a new build.
    versions = fake_kit_build["versions"]
    assert isinstance(versions, dict)
    versions["kernel"] = "6.1.999-1"
    lists = fake_kit_build["lists"]
    assert isinstance(lists, Path)
    (lists / "Packages").write_text("after apt-get update")
    second = build_linux_guest_kit(cache)
    assert fake_kit_build["built"] == 2
    assert second.key != first.key and second.kernel_package.version == "6.1.999-1"
    # The /init template is part of the key too.
    monkeypatch.setattr(guestkit, "INIT_TEMPLATE", guestkit.INIT_TEMPLATE + "\n# changed\n")
    build_linux_guest_kit(cache)
    assert fake_kit_build["built"] == 3


def test_package_resolution_is_memoised_until_apt_lists_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, ...]] = []

    def candidates(*names: str) -> dict[str, debpkg.DebPackage]:
        calls.append(names)
        return {n: debpkg.DebPackage(n, str(len(calls))) for n in names}

    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "Packages").write_text("a")
    monkeypatch.setattr(guestkit, "APT_LISTS", lists)
    monkeypatch.setattr(debpkg, "candidates", candidates)
    monkeypatch.setattr(debpkg, "pinned_dependency", lambda meta, prefix: KERNEL)
    first = guestkit._resolve_packages(tmp_path / "cache")
    assert guestkit._resolve_packages(tmp_path / "cache") == first
    assert len(calls) == 1
    (lists / "Packages").write_text("after apt-get update")
    second = guestkit._resolve_packages(tmp_path / "cache")
    assert len(calls) == 2
    assert second[1].version == "2"


@pytest.mark.host
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="no qemu-system-x86_64")
def test_real_kit_boots_to_login_under_plain_qemu(tmp_path: Path) -> None:
    """Build the kit from Debian's packages and boot it with TCG (no Xen: blkfront/netfront
    refuse with ENODEV, /dev/xvda never appears, getty falls back to ttyS0)."""
    kit = build_linux_guest_kit(tmp_path / "cache")
    assert kit.kernel.read_bytes()[0x202:0x206] == b"HdrS"  # a bzImage
    assert gzip.decompress(kit.ramdisk.read_bytes())[:6] == b"070701"
    start = time.monotonic()
    again = build_linux_guest_kit(tmp_path / "cache")
    assert again == kit
    assert time.monotonic() - start < 10

    argv = ["-machine", "q35,accel=tcg", "-m", "512", "-smp", "1", "-nographic", "-no-reboot"]
    argv += ["-kernel", str(kit.kernel), "-initrd", str(kit.ramdisk)]
    argv += ["-append", "console=ttyS0 panic=-1"]
    child = pexpect.spawn("qemu-system-x86_64", argv, encoding="utf-8", timeout=180)
    try:
        child.expect(f"xenpvh-init: started, kernel {kit.kernel_release}")
        child.expect("xenpvh-init: no /dev/xvda")
        child.expect("xenpvh-init: getty on ttyS0")
        child.expect("xenpvh-guest login:")
        child.sendline("root")
        child.expect("# ")
        child.sendline("cut -d' ' -f1 /proc/modules | sort | tr '\\n' ' '; echo END")
        child.expect("END")
        child.expect("# ")
        loaded = child.before.split()
        assert {"ext4", "jbd2", "mbcache", "crc16", "crc32c_generic"} <= set(loaded)
    finally:
        child.terminate(force=True)
        child.close()
