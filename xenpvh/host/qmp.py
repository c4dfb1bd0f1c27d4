"""A minimal QMP (QEMU Machine Protocol) client over a UNIX socket.

Enough for what a nested host needs: quit, savevm (through the human monitor) and status.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from xenpvh.errors import BrokenError

# One QMP reply line is small; a larger one means the socket is not QMP.
MAX_LINE = 1 << 20


class Qmp:
    def __init__(self, path: Path, *, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = b""

    def __enter__(self) -> Qmp:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(str(self.path))
        except OSError as e:
            s.close()
            raise BrokenError(f"QMP socket {self.path}: {e}") from e
        self._sock = s
        greeting = self._read()
        if "QMP" not in greeting:
            raise BrokenError(f"QMP socket {self.path} sent no greeting: {greeting!r}")
        self.execute("qmp_capabilities")

    def execute(
        self, command: str, arguments: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Run a QMP command; returns its `return` value, raises BrokenError on `error`."""
        if self._sock is None:
            raise BrokenError("QMP: not connected")
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self._sock.settimeout(timeout if timeout is not None else self.timeout)
        try:
            self._sock.sendall(json.dumps(msg).encode() + b"\n")
            while True:
                reply = self._read()
                if "event" in reply:
                    continue  # asynchronous events interleave with replies
                if "error" in reply:
                    raise BrokenError(f"QMP {command}: {reply['error'].get('desc', reply)}")
                return reply.get("return")
        finally:
            self._sock.settimeout(self.timeout)

    def hmp(self, command_line: str, *, timeout: float | None = None) -> str:
        """A human-monitor command (e.g. `savevm NAME`); its output text."""
        out = self.execute("human-monitor-command", {"command-line": command_line}, timeout=timeout)
        return str(out or "")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _read(self) -> dict[str, Any]:
        assert self._sock is not None
        while b"\n" not in self._buf:
            try:
                chunk = self._sock.recv(65536)
            except OSError as e:
                raise BrokenError(f"QMP socket {self.path}: {e}") from e
            if not chunk:
                raise BrokenError(f"QMP socket {self.path} closed")
            self._buf += chunk
            if len(self._buf) > MAX_LINE:
                raise BrokenError(f"QMP socket {self.path}: reply too long")
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError as e:
            raise BrokenError(f"QMP socket {self.path}: not JSON: {line[:200]!r}") from e
