"""LocalHost: the dom0 you sit on.  Commands run as subprocesses, files are copied."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pexpect

from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.base import CommandResult, argv_list
from xenpvh.util.fs import atomic_write_bytes, sha256_file


class PipeStream:
    """A ByteStream over a child's stdin/stdout pipes."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        # A socketpair would need a pump thread; polling the pipe fd directly is simpler.
        self._out = proc.stdout
        self._in = proc.stdin
        self._timeout: float | None = None

    def sendall(self, data: bytes) -> None:
        try:
            self._in.write(data)
            self._in.flush()
        except (BrokenPipeError, ValueError) as e:
            raise BrokenError(f"stream to {self.proc.args!r} closed: {e}") from e

    def recv(self, n: int) -> bytes:

        fd = self._out.fileno()
        r, _, _ = select.select([fd], [], [], self._timeout)
        if not r:
            raise TimeoutError("recv timed out")
        return os.read(fd, n)

    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout

    def close(self) -> None:
        for f in (self._in, self._out):
            with contextlib.suppress(OSError):
                f.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class LocalHost:
    name = "local"

    def __init__(self, name: str = "local") -> None:
        self.name = name

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 120.0,
        input: bytes | None = None,
        check: bool = False,
    ) -> CommandResult:
        argv = argv_list(argv)
        try:
            p = subprocess.run(
                argv,
                input=input,
                capture_output=True,
                timeout=timeout,
                stdin=None if input is not None else subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as e:
            # subprocess.run kills the child before re-raising.
            raise BrokenError(f"{' '.join(argv)!r} timed out after {timeout:g}s") from e
        except FileNotFoundError as e:
            raise BrokenError(f"{argv[0]!r} not found on {self.name}") from e
        except OSError as e:
            raise BrokenError(f"cannot run {argv[0]!r} on {self.name}: {e}") from e
        res = CommandResult(tuple(argv), p.returncode, p.stdout, p.stderr)
        return res.check() if check else res

    def put(self, local: Path, remote: str, *, mode: int | None = None) -> bool:
        local = Path(local)
        if not local.is_file():
            raise BlockedError(f"put: local file {local} does not exist")
        dst = Path(remote)
        changed = not (dst.is_file() and sha256_file(dst) == sha256_file(local))
        if changed:
            dst.parent.mkdir(parents=True, exist_ok=True)
            part = dst.with_name(dst.name + ".xenpvh-part")
            shutil.copyfile(local, part)
            os.replace(part, dst)
        os.chmod(dst, mode if mode is not None else local.stat().st_mode & 0o7777)
        return changed

    def put_bytes(self, data: bytes, remote: str, *, mode: int = 0o644) -> None:
        dst = Path(remote)
        dst.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(dst, data, mode=mode)

    def get(self, remote: str, local: Path) -> None:
        src = Path(remote)
        if not src.is_file():
            raise BrokenError(f"{self.name}: file {remote} does not exist")
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, local)

    def spawn(self, argv: Sequence[str], *, timeout: float = 30.0) -> pexpect.spawn:
        argv = argv_list(argv)
        try:
            return pexpect.spawn(argv[0], argv[1:], timeout=timeout, encoding=None)
        except pexpect.ExceptionPexpect as e:
            raise BrokenError(f"cannot spawn {argv[0]!r}: {e}") from e

    def open_stream(self, argv: Sequence[str]) -> PipeStream:
        argv = argv_list(argv)
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
        except OSError as e:
            raise BrokenError(f"cannot start {argv[0]!r}: {e}") from e
        return PipeStream(proc)

    def close(self) -> None:
        pass


__all__ = ["LocalHost", "PipeStream"]
