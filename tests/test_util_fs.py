"""xenpvh.util.fs: atomic writes that honour the umask, sha256 helpers, flock, cache root."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenpvh.errors import BrokenError
from xenpvh.util import fs
from xenpvh.util.fs import (
    atomic_write_bytes,
    atomic_write_text,
    cache_root,
    flock,
    process_umask,
    sha256_bytes,
    sha256_file,
)

ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.fixture
def umask() -> Iterator[None]:
    """Restores the process umask the test changes."""
    old = os.umask(0o022)
    os.umask(old)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize(
    ("mask", "mode"),
    [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)],
    ids=["umask022", "umask027", "umask077"],
)
def test_atomic_write_mode_honours_umask(tmp_path: Path, umask: None, mask: int, mode: int) -> None:
    os.umask(mask)
    assert process_umask() == mask
    p = atomic_write_text(tmp_path / "verdict.json", "{}\n")
    assert stat.S_IMODE(p.stat().st_mode) == mode
    # A fresh open() would give the same: what a web server publishing artifacts expects.
    with (tmp_path / "plain").open("w"):
        pass
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == mode


def test_atomic_write_explicit_mode_and_content(tmp_path: Path, umask: None) -> None:
    os.umask(0o022)
    p = atomic_write_bytes(tmp_path / "key", b"\x00secret", mode=0o600)
    assert p.read_bytes() == b"\x00secret"
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    atomic_write_text(tmp_path / "t.txt", "a\r\nb ü")
    assert (tmp_path / "t.txt").read_bytes() == "a\r\nb ü".encode()


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_write_keeps_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    target = tmp_path / "verdict.json"
    atomic_write_text(target, "old\n")

    def fail(fd: int) -> None:
        raise error

    monkeypatch.setattr(fs.os, "fsync", fail)
    with pytest.raises(type(error)):
        atomic_write_text(target, "new, half written\n")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["verdict.json"]


def test_sha256_helpers(tmp_path: Path) -> None:
    assert sha256_bytes(b"abc") == ABC_SHA256
    (tmp_path / "f").write_bytes(b"abc")
    assert sha256_file(tmp_path / "f") == ABC_SHA256
    big = os.urandom(3 * (1 << 20) + 7)  # more than one read chunk
    (tmp_path / "big").write_bytes(big)
    assert sha256_file(str(tmp_path / "big")) == sha256_bytes(big)


def test_flock_is_exclusive_and_times_out(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    with flock(lock):
        t0 = time.monotonic()
        with pytest.raises(BrokenError, match="still held"), flock(lock, timeout=0.3):
            pass
        assert time.monotonic() - t0 >= 0.3
    with flock(lock, timeout=0.3):  # released: taken at once
        pass


def test_flock_waits_for_the_holder(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    order: list[str] = []
    held = threading.Event()

    def holder() -> None:
        with flock(lock):
            held.set()
            time.sleep(0.3)
            order.append("holder done")

    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)
    with flock(lock, timeout=10):
        order.append("waiter in")
    t.join()
    assert order == ["holder done", "waiter in"]


def test_cache_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "xenpvh"
    assert cache_root("nested") == tmp_path / "xenpvh" / "nested"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root("apt") == tmp_path / "home" / ".cache" / "xenpvh" / "apt"
