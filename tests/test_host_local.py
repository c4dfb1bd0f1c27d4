"""LocalHost with real processes on this machine."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pexpect
import pytest

from xenpvh.errors import BlockedError, BrokenError, CommandFailed
from xenpvh.host.base import Host
from xenpvh.host.local import LocalHost

pytestmark = pytest.mark.host


def test_is_a_host() -> None:
    assert isinstance(LocalHost(), Host)


def test_run_status_streams_and_input() -> None:
    h = LocalHost()
    r = h.run(["sh", "-c", "cat; echo err >&2; exit 4"], input=b"in\n")
    assert (r.exit_status, r.stdout, r.stderr) == (4, b"in\n", b"err\n")
    with pytest.raises(CommandFailed):
        h.run(["false"], check=True)


def test_run_args_are_not_a_shell(tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    args = ["a b", f"$(touch {canary})", f"; touch {canary}", "'\"", "*"]
    r = LocalHost().run(["printf", "%s\\0", *args], check=True)
    assert r.stdout.split(b"\0")[:-1] == [a.encode() for a in args]
    assert not canary.exists()


def test_run_timeout_and_missing_program() -> None:
    t0 = time.monotonic()
    with pytest.raises(BrokenError, match="timed out"):
        LocalHost().run(["sleep", "30"], timeout=0.5)
    assert time.monotonic() - t0 < 5
    with pytest.raises(BrokenError, match="not found"):
        LocalHost().run(["/nonexistent/program"])
    with pytest.raises(BlockedError, match="argv list"):
        LocalHost().run("echo hi")  # type: ignore[arg-type]


def test_put_skips_unchanged_put_bytes_and_get(tmp_path: Path) -> None:
    h = LocalHost()
    src = tmp_path / "src"
    src.write_bytes(os.urandom(4096))
    dst = tmp_path / "sub" / "dst"
    assert h.put(src, str(dst), mode=0o600) is True
    assert h.put(src, str(dst), mode=0o600) is False
    assert dst.read_bytes() == src.read_bytes()
    assert dst.stat().st_mode & 0o777 == 0o600
    src.write_bytes(b"new")
    assert h.put(src, str(dst)) is True
    h.put_bytes(b"x", str(tmp_path / "pb"), mode=0o640)
    assert (tmp_path / "pb").stat().st_mode & 0o777 == 0o640
    h.get(str(dst), tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == b"new"
    with pytest.raises(BrokenError, match="does not exist"):
        h.get(str(tmp_path / "missing"), tmp_path / "x")


def test_spawn_is_bytes_mode_pty() -> None:
    child = LocalHost().spawn(["cat"], timeout=5)
    try:
        child.sendline(b"ping")
        child.expect(b"ping\r\nping\r\n")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()


def test_open_stream_round_trip() -> None:
    s = LocalHost().open_stream(["cat"])
    try:
        s.settimeout(5)
        s.sendall(b"hello stream")
        got = b""
        while len(got) < 12:
            got += s.recv(100)
        assert got == b"hello stream"
        s.settimeout(0.2)
        with pytest.raises(TimeoutError):
            s.recv(100)
    finally:
        s.close()
