"""The FreeBSD guest kit, built for real with Debian's clang/lld and xorriso: a static
FreeBSD/amd64 init of our own and an ISO 9660 root holding it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from xenpvh.build.freebsdkit import ROOT_MOUNTFROM, build_freebsd_kit

pytestmark = pytest.mark.skipif(
    shutil.which("xorriso") is None or not Path("/usr/lib/llvm-14/bin/clang").exists(),
    reason="needs clang-14, lld-14 and xorriso (scripts/setup installs them)",
)

ELFOSABI_FREEBSD = 9
PT_INTERP = 3


def test_kit_init_is_a_static_freebsd_amd64_executable(tmp_path: Path) -> None:
    kit = build_freebsd_kit(tmp_path)
    elf = kit.init.read_bytes()
    assert elf[:4] == b"\x7fELF" and elf[4] == 2  # ELF64
    assert elf[7] == ELFOSABI_FREEBSD  # FreeBSD's image activator brands on this
    assert int.from_bytes(elf[18:20], "little") == 62  # EM_X86_64
    assert int.from_bytes(elf[16:18], "little") == 2  # ET_EXEC: static, no interpreter
    phoff, phentsize, phnum = (
        int.from_bytes(elf[32:40], "little"),
        int.from_bytes(elf[54:56], "little"),
        int.from_bytes(elf[56:58], "little"),
    )
    types = [
        int.from_bytes(elf[phoff + i * phentsize : phoff + i * phentsize + 4], "little")
        for i in range(phnum)
    ]
    assert PT_INTERP not in types
    # It reports what it sees and offers a prompt (strings of our own init.c).
    assert b"xenpvh-init: cpus: " in elf and b"login: " in elf and b"/dev/console" in elf
    # A second call is served from the cache.
    assert build_freebsd_kit(tmp_path) == kit
    assert ROOT_MOUNTFROM == "cd9660:/dev/xbd0"


def test_kit_rootfs_is_iso9660_with_init_executable_and_dev(tmp_path: Path) -> None:
    kit = build_freebsd_kit(tmp_path)
    assert kit.rootfs.read_bytes()[0x8001:0x8006] == b"CD001"  # the primary volume descriptor
    out = subprocess.run(
        ["xorriso", "-indev", str(kit.rootfs), "-lsdl", "/sbin/init", "/dev"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = {line.split()[-1].strip("'"): line for line in out.splitlines() if line.strip()}
    assert lines["/sbin/init"].startswith("-rwxr-xr-x"), out
    assert lines["/dev"].startswith("d"), out
