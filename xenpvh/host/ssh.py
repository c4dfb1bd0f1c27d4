"""SSHHost: a Host reached over OpenSSH-compatible ssh with paramiko.

`SSHHost.from_spec("root@lab1")` (or `ssh://...`, `host:port`, a ~/.ssh/config alias) is what
the front ends call; `ssh_target` resolves the spec, including ProxyJump hops (connected
through the previous hop's `direct-tcpip` channel) and ProxyCommand (`paramiko.ProxyCommand`,
argv without a shell).

Host keys are verified by default, on every hop: the system's known_hosts, plus an optional
pinned known_hosts file, with paramiko's RejectPolicy semantics — an unknown or changed key is
refused and the error names the host and the offered key's fingerprint.  Commands travel as
argv lists and are quoted with `shlex.join` because the remote side always runs them through
a shell.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import math
import shlex
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import paramiko

from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.base import CommandResult, argv_list
from xenpvh.host.inventory import InventoryEntry, load_inventory
from xenpvh.host.ssh_channel import ChannelSpawn, ChannelStream
from xenpvh.host.ssh_target import SSHAddress, SSHOptions, SSHTarget, resolve_target
from xenpvh.util.fs import sha256_file

# Output kept per stream of a run(): a runaway command must not exhaust our memory.
MAX_OUTPUT = 64 * 1024 * 1024


class HostKeyRejected(BlockedError):
    """The server's host key is unknown or differs from the pinned one.  Never retried:
    someone must pin the right key (or find out who is answering)."""


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style SHA256 fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _Reject(paramiko.MissingHostKeyPolicy):
    """RejectPolicy that says which key was offered."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey):
        raise HostKeyRejected(
            f"ssh host key of {hostname} is not known: {key.get_name()} {fingerprint(key)} "
            "(pin it in a known_hosts file)"
        )


class SSHHost:
    """A Host reached over ssh.  Connects on first use and reconnects when the transport
    dropped."""

    def __init__(
        self,
        address: str | SSHAddress,
        *,
        name: str | None = None,
        options: SSHOptions | None = None,
        jump: SSHHost | None = None,
    ) -> None:
        self.address = address if isinstance(address, SSHAddress) else SSHAddress.parse(address)
        self.options = options or SSHOptions()
        # The jump host (ProxyJump) this one is reached through; owned: closed with it.
        self.jump = jump
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
    def from_spec(
        cls,
        spec: str,
        *,
        identity: str | Path | None = None,
        known_hosts: str | Path | None = None,
        ssh_config: Path | None = None,
        options: SSHOptions | None = None,
    ) -> SSHHost:
        """The host a `--host` spec names: `ssh://user@host[:port]`, `user@host[:port]`,
        `host[:port]` or an alias of `ssh_config` (default ~/.ssh/config, if present).

        `identity` and `known_hosts` beat the config's IdentityFile/UserKnownHostsFile;
        `options` gives the rest (timeouts, agent).  Bad input is BlockedError.
        """
        target = resolve_target(
            spec,
            identity=identity,
            known_hosts=known_hosts,
            ssh_config=ssh_config,
            options=options,
        )
        return cls.from_target(target)

    @classmethod
    def from_target(cls, target: SSHTarget) -> SSHHost:
        """The host of a resolved target, its jump hosts (if any) connected first."""
        jump = cls.from_target(target.jump) if target.jump is not None else None
        return cls(target.address, options=target.options, jump=jump)

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
            sock = self._proxy()
        except BaseException:
            c.close()
            raise
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
                sock=sock,
            )
        except BaseException as e:
            c.close()
            if sock is not None:
                # A ProxyCommand process or a jump host's channel: the client does not own it
                # until the transport started.
                sock.close()
            if isinstance(e, paramiko.BadHostKeyException):
                raise HostKeyRejected(
                    f"ssh host key of {a.host}:{a.port} CHANGED: offered {e.key.get_name()} "
                    f"{fingerprint(e.key)}, pinned {e.expected_key.get_name()} "
                    f"{fingerprint(e.expected_key)}"
                ) from e
            if isinstance(e, paramiko.AuthenticationException):
                raise BrokenError(f"ssh authentication to {self.address} failed: {e}") from e
            if isinstance(e, OSError | paramiko.SSHException | EOFError):
                raise BrokenError(f"ssh connection to {self.address} failed: {e}") from e
            raise
        t = c.get_transport()
        assert t is not None
        t.set_keepalive(self.options.keepalive)
        self._client = c
        return c

    def _proxy(self) -> paramiko.Channel | paramiko.ProxyCommand | None:
        """The socket to speak ssh over when not a direct TCP connection: a `direct-tcpip`
        channel of the jump host (whose own host key was verified when it connected), or
        the ProxyCommand's stdin/stdout."""
        a = self.address
        if self.jump is not None:
            transport = self.jump.connect().get_transport()
            assert transport is not None
            try:
                return transport.open_channel(
                    "direct-tcpip",
                    (a.host, a.port),
                    ("127.0.0.1", 0),
                    timeout=self.options.connect_timeout,
                )
            except (OSError, paramiko.SSHException, EOFError) as e:
                raise BrokenError(
                    f"ssh {self.address}: jump host {self.jump.address} cannot reach it: {e}"
                ) from e
        if self.options.proxy_command:
            try:
                return paramiko.ProxyCommand(self.options.proxy_command)
            except (OSError, ValueError) as e:
                raise BlockedError(
                    f"ssh {self.address}: ProxyCommand {self.options.proxy_command!r} "
                    f"cannot start: {e}"
                ) from e
        return None

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
        if self.jump is not None:
            self.jump.close()

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


def _argv(argv: Sequence[str]) -> list[str]:
    out = argv_list(argv)
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
    "SSHTarget",
    "fingerprint",
    "load_inventory",
]
