"""The two shapes of an ssh channel that SSHHost hands out: a byte stream over an exec
channel (`open_stream`: the XenStore relay) and pexpect over a pty channel (`spawn`:
`xl console`)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

import paramiko
from pexpect.socket_pexpect import SocketSpawn

from xenpvh.errors import BrokenError


class ChannelStream:
    """A ByteStream over an exec channel (no pty): stdin/stdout of the remote process."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self.channel = channel

    def sendall(self, data: bytes) -> None:
        try:
            self.channel.sendall(data)
        except (OSError, paramiko.SSHException) as e:
            raise BrokenError(f"stream write failed: {e}") from e

    def recv(self, n: int) -> bytes:
        # socket.timeout propagates like a socket's would: callers poll with settimeout.
        return self.channel.recv(n)

    def settimeout(self, timeout: float | None) -> None:
        self.channel.settimeout(timeout)

    def close(self) -> None:
        self.channel.close()

    @property
    def exit_status(self) -> int | None:
        return self.channel.recv_exit_status() if self.channel.exit_status_ready() else None


class ChannelSpawn(SocketSpawn):
    """pexpect over a pty channel (bytes mode).  Closing it closes the channel, which hangs
    up the remote pty (the remote process gets SIGHUP)."""

    def __init__(self, channel: paramiko.Channel, argv: Sequence[str], timeout: float) -> None:
        super().__init__(channel, args=list(argv), timeout=timeout)  # type: ignore[arg-type]
        self.channel = channel
        self.name = f"<ssh pty {shlex.join(argv)}>"

    def read_nonblocking(self, size: int = 1, timeout: float | None = -1) -> bytes:
        # SocketSpawn (pexpect 4.9) never writes to logfile/logfile_read; callers capture
        # the console through them, so log here.
        data = super().read_nonblocking(size, timeout)
        self._log(data, "read")
        return data

    def sendcontrol(self, char: str) -> int:
        """Send a control character, e.g. `sendcontrol("]")` detaches `xl console`."""
        return self.send(bytes([_control_code(char)]))

    def sendeof(self) -> None:
        # The remote pty's line discipline turns ^D at line start into EOF.
        self.send(b"\x04")

    def close(self) -> None:  # type: ignore[override]
        if self.closed:
            return
        self.channel.close()
        self.child_fd = -1
        self.closed = True

    def isalive(self) -> bool:
        return not self.closed and not self.channel.exit_status_ready()

    @property
    def exitstatus(self) -> int | None:  # type: ignore[override]
        return self.channel.recv_exit_status() if self.channel.exit_status_ready() else None

    @exitstatus.setter
    def exitstatus(self, value: int | None) -> None:
        # SpawnBase assigns it in __init__; the channel is the real source.
        pass


_CONTROL = {"@": 0, "`": 0, "[": 27, "{": 27, "\\": 28, "|": 28, "]": 29, "}": 29}
_CONTROL.update({"^": 30, "~": 30, "_": 31, "?": 127})


def _control_code(char: str) -> int:
    c = char.lower()
    if len(c) != 1:
        raise ValueError(f"sendcontrol takes one character, not {char!r}")
    if "a" <= c <= "z":
        return ord(c) - ord("a") + 1
    if c not in _CONTROL:
        raise ValueError(f"no control code for {char!r}")
    return _CONTROL[c]


__all__ = ["ChannelSpawn", "ChannelStream"]
