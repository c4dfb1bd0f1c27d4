"""The newc writer against the real cpio(1): listing, extraction, device nodes, bad names."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from xenpvh.build.cpio import NewcWriter
from xenpvh.errors import BlockedError

pytestmark = pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio(1) is not installed")


def _archive() -> bytes:
    buf = io.BytesIO()
    with NewcWriter(buf) as writer:
        writer.add_file("bin/busybox", b"\x7fELF fake", 0o755)
        writer.add_symlink("bin/sh", "/bin/busybox")
        writer.add_file("etc/deep/nested/file.txt", b"odd length!", 0o640)
        writer.add_char_device("dev/console", 5, 1, 0o600)
        writer.add_char_device("dev/null", 1, 3, 0o666)
        writer.add_directory("mnt", 0o700)
    return buf.getvalue()


def test_cpio_lists_members_with_modes_owners_and_devices() -> None:
    listing = subprocess.run(
        ["cpio", "-tv", "--quiet"], input=_archive(), capture_output=True, check=True
    ).stdout.decode()
    # The member name is the last field before any " -> target".
    lines = {line.split(" -> ")[0].split()[-1]: line for line in listing.splitlines()}
    # Parent directories come first and exist even though only leaves were added.
    names = list(lines)
    assert names.index("etc") < names.index("etc/deep") < names.index("etc/deep/nested/file.txt")
    assert lines["bin/busybox"].startswith("-rwxr-xr-x")
    assert " root " in lines["bin/busybox"]
    assert lines["etc/deep/nested/file.txt"].startswith("-rw-r-----")
    assert lines["dev/console"].startswith("crw-------")
    assert "5,   1" in lines["dev/console"]
    assert "1,   3" in lines["dev/null"]
    assert lines["mnt"].startswith("drwx------")
    assert "bin/sh -> /bin/busybox" in listing


def test_cpio_extracts_identical_contents(tmp_path: Path) -> None:
    subprocess.run(
        ["cpio", "-i", "--quiet", "--make-directories", "--no-absolute-filenames"],
        input=_archive(),
        cwd=tmp_path,
        check=True,
    )
    assert (tmp_path / "bin/busybox").read_bytes() == b"\x7fELF fake"
    assert os.readlink(tmp_path / "bin/sh") == "/bin/busybox"
    assert (tmp_path / "etc/deep/nested/file.txt").read_bytes() == b"odd length!"
    assert stat.S_IMODE((tmp_path / "bin/busybox").stat().st_mode) == 0o755
    if os.geteuid() == 0:
        console = (tmp_path / "dev/console").stat()
        assert stat.S_ISCHR(console.st_mode)
        assert (os.major(console.st_rdev), os.minor(console.st_rdev)) == (5, 1)


def test_output_is_deterministic_and_aligned() -> None:
    data = _archive()
    assert data == _archive()
    assert data.startswith(b"070701")
    assert len(data) % 4 == 0
    assert b"TRAILER!!!" in data[-140:]


@pytest.mark.parametrize("name", ["../etc/passwd", "a/../../b", "", "/"])
def test_names_escaping_the_root_are_refused(name: str) -> None:
    writer = NewcWriter(io.BytesIO())
    with pytest.raises(BlockedError, match="not a plain relative path"):
        writer.add_file(name, b"x")


def test_duplicate_member_is_refused() -> None:
    writer = NewcWriter(io.BytesIO())
    writer.add_file("init", b"a")
    with pytest.raises(BlockedError, match="'init' added twice"):
        writer.add_file("init", b"b")
