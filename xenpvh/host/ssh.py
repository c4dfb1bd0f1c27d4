"""SSHHost: a Host reached over OpenSSH-compatible ssh with paramiko.

Host keys are verified by default: the system's known_hosts, plus an optional pinned
known_hosts file, with paramiko's RejectPolicy semantics — an unknown or changed key is refused
and the error names the host and the offered key's fingerprint.  Commands travel as argv lists
and are quoted with `shlex.join` because the remote side always runs them through a shell.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import math
import re
import shlex
import threading
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from pexpect.socket_pexpect import SocketSpawn

from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.base import CommandResult
from xenpvh.util.fs import sha256_file

_ADDRESS = re.compile(
    r"^ssh://(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)"
    r"(?::(?P<port>[0-9]{1,5}))?/?$"
)

# Output kept per stream of a run(): a runaway command must not exhaust our memory.
MAX_OUTPUT = 64 * 1024 * 1024


class HostKeyRejected(BlockedError):
    """The server's host key is unknown or differs from the pinned one.  Never retried:
    someone must pin the right key (or find out who is answering)."""


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style SHA256 fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class SSHAddress:
    user: str
    host: str
    port: int = 22

    @classmethod
    def parse(cls, address: str, *, default_user: str = "root") -> SSHAddress:
        """Parse `ssh://[user@]host[:port]`; raises BlockedError naming what is wrong."""
        if not isinstance(address, str) or not address.startswith("ssh://"):
            raise BlockedError(f"ssh address {address!r} must look like ssh://user@host[:port]")
        m = _ADDRESS.match(address)
        if m is None:
            raise BlockedError(
                f"ssh address {address!r} is malformed; expected ssh://user@host[:port] "
                "(host: a name, IPv4 address or [IPv6] address)"
            )
        port = int(m["port"]) if m["port"] else 22
        if not 1 <= port <= 65535:
            raise BlockedError(f"ssh address {address!r}: port {port} is out of range 1-65535")
        host = m["host"].strip("[]")
        return cls(user=m["user"] or default_user, host=host, port=port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.user}@{host}:{self.port}"


@dataclass(frozen=True)
class SSHOptions:
    identity: Path | None = None
    known_hosts: Path | None = None
    use_system_known_hosts: bool = True
    allow_agent: bool = True
    connect_timeout: float = 15.0
    keepalive: int = 15
    # Run commands under the remote `timeout(1)` so an overrun command dies even when the
    # ssh "signal" request is refused (OpenSSH refuses it for root sessions).
    remote_timeout: bool = True


@dataclass(frozen=True)
class InventoryEntry:
    name: str
    address: SSHAddress
    options: SSHOptions


def load_inventory(path: Path) -> dict[str, InventoryEntry]:
    """Read `[hosts.<name>]` tables (address, identity, known_hosts, port, ...) from TOML.

    Relative paths are taken relative to the inventory file.  `port` overrides the port in
    the address.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise BlockedError(f"inventory {path}: cannot read: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise BlockedError(f"inventory {path}: invalid TOML: {e}") from e
    hosts = data.get("hosts")
    if not isinstance(hosts, dict) or not hosts:
        raise BlockedError(f"inventory {path}: no [hosts.<name>] tables")
    known_keys = {
        "address",
        "identity",
        "known_hosts",
        "port",
        "user",
        "connect_timeout",
        "keepalive",
        "allow_agent",
        "use_system_known_hosts",
    }
    out: dict[str, InventoryEntry] = {}
    for name, t in hosts.items():
        where = f"inventory {path}: hosts.{name}"
        if not isinstance(t, dict):
            raise BlockedError(f"{where} must be a table")
        unknown = set(t) - known_keys
        if unknown:
            raise BlockedError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        if "address" not in t:
            raise BlockedError(f"{where}.address is missing")
        addr = SSHAddress.parse(str(t["address"]))
        if "port" in t:
            port = t["port"]
            if not isinstance(port, int) or not 1 <= port <= 65535:
                raise BlockedError(f"{where}.port must be an integer 1-65535, not {port!r}")
            addr = SSHAddress(addr.user, addr.host, port)
        if "user" in t:
            addr = SSHAddress(str(t["user"]), addr.host, addr.port)

        def _path(key: str, t: dict[str, Any] = t, where: str = where) -> Path | None:
            if key not in t:
                return None
            if not isinstance(t[key], str):
                raise BlockedError(f"{where}.{key} must be a path string")
            p = Path(t[key]).expanduser()
            return p if p.is_absolute() else path.parent / p

        out[name] = InventoryEntry(
            name=name,
            address=addr,
            options=SSHOptions(
                identity=_path("identity"),
                known_hosts=_path("known_hosts"),
                use_system_known_hosts=bool(t.get("use_system_known_hosts", True)),
                allow_agent=bool(t.get("allow_agent", True)),
                connect_timeout=float(t.get("connect_timeout", 15.0)),
                keepalive=int(t.get("keepalive", 15)),
            ),
        )
    return out


class _Reject(paramiko.MissingHostKeyPolicy):
    """RejectPolicy that says which key was offered."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey):
        raise HostKeyRejected(
            f"ssh host key of {hostname} is not known: {key.get_name()} {fingerprint(key)} "
            "(pin it in a known_hosts file)"
        )


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


class SSHHost:
    """A Host reached over ssh.  Connects on first use and reconnects when the transport
    dropped."""

    def __init__(
        self,
        address: str | SSHAddress,
        *,
        name: str | None = None,
        options: SSHOptions | None = None,
    ) -> None:
        self.address = address if isinstance(address, SSHAddress) else SSHAddress.parse(address)
        self.options = options or SSHOptions()
        self.name = name or f"{self.address.user}@{self.address.host}:{self.address.port}"
        self._client: paramiko.SSHClient | None = None
        # Channels of one transport may be opened from several threads (a run collects
        # evidence side by side); (re)connecting must happen once.
        self._connect_lock = threading.Lock()
        if self.options.identity is not None and not self.options.identity.is_file():
            raise BlockedError(f"ssh identity {self.options.identity} does not exist")
        if self.options.known_hosts is not None and not self.options.known_hosts.is_file():
            raise BlockedError(f"known_hosts file {self.options.known_hosts} does not exist")

    @classmethod
    def from_inventory(cls, path: Path, name: str) -> SSHHost:
        hosts = load_inventory(path)
        if name not in hosts:
            raise BlockedError(
                f"inventory {path} has no host {name!r} (has: {', '.join(sorted(hosts))})"
            )
        e = hosts[name]
        return cls(e.address, name=name, options=e.options)

    # -- connection -----------------------------------------------------------------------

    def connect(self) -> paramiko.SSHClient:
        with self._connect_lock:
            return self._connect()

    def _connect(self) -> paramiko.SSHClient:
        if self._client is not None:
            t = self._client.get_transport()
            if t is not None and t.is_active():
                return self._client
            self._client.close()
            self._client = None
        c = paramiko.SSHClient()
        if self.options.use_system_known_hosts:
            c.load_system_host_keys()
        if self.options.known_hosts is not None:
            c.load_host_keys(str(self.options.known_hosts))
        c.set_missing_host_key_policy(_Reject())
        a = self.address
        try:
            c.connect(
                a.host,
                port=a.port,
                username=a.user,
                key_filename=str(self.options.identity) if self.options.identity else None,
                allow_agent=self.options.allow_agent,
                look_for_keys=self.options.identity is None,
                timeout=self.options.connect_timeout,
                banner_timeout=self.options.connect_timeout,
                auth_timeout=self.options.connect_timeout,
            )
        except HostKeyRejected:
            c.close()
            raise
        except paramiko.BadHostKeyException as e:
            c.close()
            raise HostKeyRejected(
                f"ssh host key of {a.host}:{a.port} CHANGED: offered {e.key.get_name()} "
                f"{fingerprint(e.key)}, pinned {e.expected_key.get_name()} "
                f"{fingerprint(e.expected_key)}"
            ) from e
        except paramiko.AuthenticationException as e:
            c.close()
            raise BrokenError(f"ssh authentication to {self.address} failed: {e}") from e
        except (OSError, paramiko.SSHException, EOFError) as e:
            c.close()
            raise BrokenError(f"ssh connection to {self.address} failed: {e}") from e
        t = c.get_transport()
        assert t is not None
        t.set_keepalive(self.options.keepalive)
        self._client = c
        return c

    def _session(self, timeout: float) -> paramiko.Channel:
        t = self.connect().get_transport()
        assert t is not None
        try:
            return t.open_session(timeout=timeout)
        except (OSError, paramiko.SSHException, EOFError) as e:
            raise BrokenError(f"ssh {self.address}: cannot open a channel: {e}") from e

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> SSHHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- Host protocol --------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 120.0,
        input: bytes | None = None,
        check: bool = False,
    ) -> CommandResult:
        argv = _argv(argv)
        deadline = time.monotonic() + timeout
        ch = self._session(timeout)
        remote = argv
        if self.options.remote_timeout:
            remote = ["timeout", "-s", "KILL", str(math.ceil(timeout) + 1), *argv]
        try:
            ch.exec_command(shlex.join(remote))
            if input:
                ch.sendall(input)
            ch.shutdown_write()
            out, err = bytearray(), bytearray()
            ch.settimeout(0.2)

            def overdue() -> None:
                if time.monotonic() > deadline:
                    _kill(ch)
                    raise BrokenError(
                        f"ssh {self.name}: {shlex.join(argv)!r} timed out after {timeout:g}s"
                    )

            # Read until EOF, not until the exit status: sshd may send exit-status while
            # output is still in flight, and stopping then loses the tail of stdout.
            while True:
                progressed = False
                while ch.recv_ready():
                    _bounded_extend(out, ch.recv(65536))
                    progressed = True
                while ch.recv_stderr_ready():
                    _bounded_extend(err, ch.recv_stderr(65536))
                    progressed = True
                drained = not ch.recv_ready() and not ch.recv_stderr_ready()
                if (ch.eof_received or ch.closed) and drained:
                    break
                overdue()
                if not progressed:
                    time.sleep(0.01)
            while not ch.exit_status_ready() and not ch.closed:
                overdue()
                ch.status_event.wait(0.05)
            status = ch.recv_exit_status() if ch.exit_status_ready() else -1
        except (OSError, paramiko.SSHException, EOFError) as e:
            raise BrokenError(f"ssh {self.name}: {shlex.join(argv)!r} failed: {e}") from e
        finally:
            ch.close()
        if status == -1:
            # No exit status: the remote side died (e.g. killed by a signal, connection lost).
            raise BrokenError(f"ssh {self.name}: {shlex.join(argv)!r} ended without exit status")
        res = CommandResult(tuple(argv), status, bytes(out), bytes(err))
        return res.check() if check else res

    def sha256(self, remote: str, *, timeout: float = 120.0) -> str | None:
        """The remote file's sha256, or None when it does not exist."""
        r = self.run(["sha256sum", "--", remote], timeout=timeout)
        if not r.ok:
            return None
        return r.out.split()[0] if r.out.split() else None

    def put(self, local: Path, remote: str, *, mode: int | None = None) -> bool:
        local = Path(local)
        if not local.is_file():
            raise BlockedError(f"put: local file {local} does not exist")
        digest = sha256_file(local)
        if self.sha256(remote) == digest:
            if mode is not None:
                self._chmod(remote, mode)
            return False
        self._sftp_put(local, remote, mode)
        return True

    def put_bytes(self, data: bytes, remote: str, *, mode: int = 0o644) -> None:
        try:
            with self.connect().open_sftp() as sftp:
                tmp = f"{remote}.xenpvh-part"
                with sftp.open(tmp, "wb") as f:
                    f.write(data)
                sftp.chmod(tmp, mode)
                sftp.posix_rename(tmp, remote)
        except (OSError, paramiko.SSHException) as e:
            raise BrokenError(f"ssh {self.name}: writing {remote} failed: {e}") from e

    def get(self, remote: str, local: Path) -> None:
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        part = local.with_name(local.name + ".part")
        try:
            with self.connect().open_sftp() as sftp:
                sftp.get(remote, str(part))
            part.replace(local)
        except FileNotFoundError as e:
            part.unlink(missing_ok=True)
            raise BrokenError(f"ssh {self.name}: remote file {remote} does not exist") from e
        except (OSError, paramiko.SSHException) as e:
            part.unlink(missing_ok=True)
            raise BrokenError(f"ssh {self.name}: reading {remote} failed: {e}") from e

    def spawn(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        term: str = "vt100",
        width: int = 200,
        height: int = 50,
    ) -> ChannelSpawn:
        argv = _argv(argv)
        ch = self._session(timeout)
        try:
            ch.get_pty(term=term, width=width, height=height)
            ch.exec_command(shlex.join(argv))
        except (OSError, paramiko.SSHException, EOFError) as e:
            ch.close()
            raise BrokenError(f"ssh {self.name}: cannot start {shlex.join(argv)!r}: {e}") from e
        return ChannelSpawn(ch, argv, timeout)

    def open_stream(self, argv: Sequence[str]) -> ChannelStream:
        argv = _argv(argv)
        ch = self._session(self.options.connect_timeout)
        try:
            ch.exec_command(shlex.join(argv))
        except (OSError, paramiko.SSHException, EOFError) as e:
            ch.close()
            raise BrokenError(f"ssh {self.name}: cannot start {shlex.join(argv)!r}: {e}") from e
        return ChannelStream(ch)

    # -- helpers --------------------------------------------------------------------------

    def _chmod(self, remote: str, mode: int) -> None:
        self.run(["chmod", f"{mode:o}", "--", remote], check=True)

    def _sftp_put(self, local: Path, remote: str, mode: int | None) -> None:
        tmp = f"{remote}.xenpvh-part"
        try:
            with self.connect().open_sftp() as sftp:
                sftp.put(str(local), tmp)
                sftp.chmod(tmp, mode if mode is not None else local.stat().st_mode & 0o7777)
                # Atomic on the remote side: a reader never sees half a kernel.
                sftp.posix_rename(tmp, remote)
        except (OSError, paramiko.SSHException) as e:
            raise BrokenError(f"ssh {self.name}: copying {local} to {remote} failed: {e}") from e


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


def _argv(argv: Sequence[str]) -> list[str]:
    if isinstance(argv, str | bytes) or not argv:
        raise BlockedError(f"a command must be a non-empty argv list, not {argv!r}")
    out = [str(a) for a in argv]
    if any("\0" in a for a in out):
        raise BlockedError(f"argv {out!r} contains a NUL byte")
    return out


def _kill(ch: paramiko.Channel) -> None:
    """Stop a remote command that overran its deadline.

    Closing the channel alone would leave e.g. a `sleep` running on the remote side.  The
    "signal" channel request (RFC 4254 §6.9; paramiko has no public call for it) works for
    unprivileged sessions; root sessions rely on the `timeout(1)` wrapper of run().
    """
    with contextlib.suppress(Exception):
        m = paramiko.Message()
        m.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
        m.add_int(ch.remote_chanid)
        m.add_string("signal")
        m.add_boolean(False)
        m.add_string("KILL")
        ch.transport._send_user_message(m)  # type: ignore[union-attr]
    ch.close()


def _bounded_extend(buf: bytearray, data: bytes) -> None:
    room = MAX_OUTPUT - len(buf)
    if room > 0:
        buf.extend(data[:room])


__all__ = [
    "ChannelSpawn",
    "ChannelStream",
    "HostKeyRejected",
    "InventoryEntry",
    "SSHAddress",
    "SSHHost",
    "SSHOptions",
    "fingerprint",
    "load_inventory",
]
