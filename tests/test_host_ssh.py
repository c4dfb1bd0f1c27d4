"""SSHHost against a real OpenSSH sshd on a loopback port, plus pure address/inventory tests."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from xenpvh.errors import BlockedError, BrokenError, CommandFailed
from xenpvh.host.base import Host
from xenpvh.host.ssh import (
    HostKeyRejected,
    SSHAddress,
    SSHHost,
    SSHOptions,
    fingerprint,
    load_inventory,
)

SSHD = "/usr/sbin/sshd"


# -- pure ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ssh://root@lab1", SSHAddress("root", "lab1", 22)),
        ("ssh://ci@10.0.0.5:2222", SSHAddress("ci", "10.0.0.5", 2222)),
        ("ssh://lab1.example.org", SSHAddress("root", "lab1.example.org", 22)),
        ("ssh://u@[::1]:22", SSHAddress("u", "::1", 22)),
        ("ssh://root@lab1/", SSHAddress("root", "lab1", 22)),
        ("root@lab1", SSHAddress("root", "lab1", 22)),
        ("ci@10.0.0.5:2222", SSHAddress("ci", "10.0.0.5", 2222)),
        ("lab1", SSHAddress("root", "lab1", 22)),
        ("lab1:2200", SSHAddress("root", "lab1", 2200)),
        ("u@[fe80::1]", SSHAddress("u", "fe80::1", 22)),
        ("[::1]:2222", SSHAddress("root", "::1", 2222)),
    ],
)
def test_address_parse(text: str, expected: SSHAddress) -> None:
    assert SSHAddress.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("root@", "empty host name"),
        ("", "empty host name"),
        ("ssh://", "empty host name"),
        ("@lab1", "empty user name"),
        ("ssh://root@lab1:0", "out of range"),
        ("ssh://root@lab1:70000", "out of range"),
        ("lab1:", "not a number"),
        ("lab1:22x", "not a number"),
        ("ssh://root@lab 1", "host name 'lab 1'"),
        ("ssh://root@lab1;reboot", "host name"),
        ("root@$(reboot)", "host name"),
        ("-oProxyCommand=sh", "must not start with '-'"),
        ("root@-oProxyCommand=sh", "must not start with '-'"),
        ("ssh://-oProxyCommand=x@lab1", "user name"),
        ("a b@lab1", "user name"),
        ("ssh://root@lab1:22/path", "path"),
        ("http://lab1", "scheme"),
        ("fe80::1", "needs brackets"),
        ("[lab1]:22", "IPv6"),
        ("[::1]x", "unexpected"),
    ],
)
def test_address_parse_rejects(text: str, problem: str) -> None:
    with pytest.raises(BlockedError, match="ssh address") as ei:
        SSHAddress.parse(text)
    assert problem in str(ei.value)


def test_inventory(tmp_path: Path) -> None:
    (tmp_path / "id").write_text("x")
    inv = tmp_path / "hosts.toml"
    inv.write_text(
        '[hosts.lab1]\naddress = "ssh://ci@lab1.example.org"\nidentity = "id"\n'
        'known_hosts = "/etc/ssh/ssh_known_hosts"\nport = 2200\n'
    )
    e = load_inventory(inv)["lab1"]
    assert e.address == SSHAddress("ci", "lab1.example.org", 2200)
    assert e.options.identity == tmp_path / "id"
    assert e.options.known_hosts == Path("/etc/ssh/ssh_known_hosts")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[hosts.a]\nidentity='x'\n", "hosts.a.address is missing"),
        ("[hosts.a]\naddress='ssh://a'\nport='22'\n", "hosts.a.port"),
        ("[hosts.a]\naddress='ssh://a'\npasword='x'\n", "unknown key"),
        ("[other]\n", "no \\[hosts"),
        ("[hosts.a\n", "invalid TOML"),
    ],
)
def test_inventory_errors(tmp_path: Path, body: str, message: str) -> None:
    inv = tmp_path / "hosts.toml"
    inv.write_text(body)
    with pytest.raises(BlockedError, match=message):
        load_inventory(inv)


# -- a real sshd ---------------------------------------------------------------------------


@dataclass
class Sshd:
    port: int
    client_key: Path
    host_pub: Path
    known_hosts: Path
    dir: Path

    def host(self, **kw: object) -> SSHHost:
        opts = SSHOptions(
            identity=self.client_key,
            known_hosts=self.known_hosts,
            use_system_known_hosts=False,
            allow_agent=False,
            connect_timeout=10,
            **kw,  # type: ignore[arg-type]
        )
        return SSHHost(f"ssh://root@127.0.0.1:{self.port}", options=opts)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@contextlib.contextmanager
def _running_sshd(d: Path) -> Iterator[Sshd]:
    """An OpenSSH sshd on a free loopback port, with its own host and client keys in `d`."""
    if not os.path.exists(SSHD) or os.geteuid() != 0:
        pytest.skip("needs root and OpenSSH's sshd")
    _keygen(d / "host_key")
    _keygen(d / "client_key")
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    port = _free_port()
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n"
        f"AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\n"
        f"PidFile {d}/sshd.pid\nSubsystem sftp internal-sftp\n"
    )
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
        stdout=subprocess.DEVNULL,
        stderr=(d / "sshd.log").open("wb"),
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    msg = "sshd did not start: " + (d / "sshd.log").read_text()
                    raise RuntimeError(msg) from None
                time.sleep(0.1)
        keytype, data = (d / "host_key.pub").read_text().split()[:2]
        (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {keytype} {data}\n")
        yield Sshd(port, d / "client_key", d / "host_key.pub", d / "known_hosts", d)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with _running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="module")
def jump_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A second sshd, the jump host (bastion) of ProxyJump tests."""
    with _running_sshd(tmp_path_factory.mktemp("jump-sshd")) as server:
        yield server


@pytest.fixture
def host(sshd: Sshd) -> Iterator[SSHHost]:
    h = sshd.host()
    try:
        yield h
    finally:
        h.close()


@pytest.mark.host
def test_is_a_host(host: SSHHost) -> None:
    assert isinstance(host, Host)


@pytest.mark.host
def test_run_exit_status_and_streams(host: SSHHost) -> None:
    r = host.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (r.exit_status, r.out, r.err) == (3, "out\n", "err\n")
    with pytest.raises(CommandFailed, match="exited 3"):
        host.run(["sh", "-c", "exit 3"], check=True)
    assert host.run(["true"]).ok


@pytest.mark.host
def test_run_input(host: SSHHost) -> None:
    data = bytes(range(256)) * 1000
    assert host.run(["cat"], input=data).stdout == data


@pytest.mark.host
def test_run_awkward_args_no_injection(host: SSHHost, tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    args = [
        "two words",
        "it's",
        'say "hi"',
        f"x; touch {canary}",
        f"$(touch {canary})",
        f"`touch {canary}`",
        "*",
        "a\nb",
        "",
        "--",
        "\\",
        f"| touch {canary}",
    ]
    r = host.run(["printf", "%s\\0", *args], check=True)
    assert r.stdout.split(b"\0")[:-1] == [a.encode() for a in args]
    assert not canary.exists()


@pytest.mark.host
def test_run_timeout_kills_remote_command(host: SSHHost, tmp_path: Path) -> None:
    # A sleep no other process runs: found by its argument even if the deadline struck
    # before the shell wrote its pid (a loaded machine).
    nap = f"60.{os.getpid()}"
    t0 = time.monotonic()
    with pytest.raises(BrokenError, match="timed out"):
        host.run(["sh", "-c", f"exec sleep {nap}"], timeout=1.5)
    assert time.monotonic() - t0 < 10

    def survivors() -> list[str]:
        return [
            d.name
            for d in Path("/proc").iterdir()
            if d.name.isdigit() and _cmdline(d) == ["sleep", nap]
        ]

    deadline = time.monotonic() + 5
    while survivors() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not survivors(), "remote command survived its deadline"
    # The connection stays usable after a timeout.
    assert host.run(["echo", "ok"]).out == "ok\n"


def _cmdline(proc: Path) -> list[str]:
    try:
        return (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


@pytest.mark.host
def test_put_skips_unchanged_and_get(host: SSHHost, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(300_000))
    remote = str(tmp_path / "remote dir" / "dst.bin")
    Path(remote).parent.mkdir()
    assert host.put(src, remote, mode=0o600) is True
    assert Path(remote).read_bytes() == src.read_bytes()
    assert Path(remote).stat().st_mode & 0o777 == 0o600
    assert host.put(src, remote) is False
    src.write_bytes(b"changed")
    assert host.put(src, remote) is True
    assert Path(remote).read_bytes() == b"changed"

    host.put_bytes(b"hello\n", str(tmp_path / "pb.txt"), mode=0o640)
    assert (tmp_path / "pb.txt").read_bytes() == b"hello\n"
    assert (tmp_path / "pb.txt").stat().st_mode & 0o777 == 0o640

    host.get(remote, tmp_path / "back" / "got.bin")
    assert (tmp_path / "back" / "got.bin").read_bytes() == b"changed"
    with pytest.raises(BrokenError, match="does not exist"):
        host.get(str(tmp_path / "missing"), tmp_path / "x")


@pytest.mark.host
def test_spawn_pty_echo(host: SSHHost) -> None:
    child = host.spawn(["cat"], timeout=10)
    seen = io.BytesIO()
    child.logfile_read = seen  # console capture relies on this
    try:
        assert child.isalive()
        child.sendline(b"hello pty")
        # The pty echoes the line, then cat writes it back: two copies, CRLF line ends
        # (ONLCR) prove it is a real terminal.
        child.expect(b"hello pty\r\nhello pty\r\n")
        child.sendeof()
        child.expect(pexpect_eof())
    finally:
        child.close()
    assert child.closed
    assert seen.getvalue().count(b"hello pty") == 2


def pexpect_eof() -> type:
    import pexpect

    return pexpect.EOF


@pytest.mark.host
def test_open_stream_round_trip(host: SSHHost) -> None:
    s = host.open_stream(["cat"])
    try:
        s.settimeout(10)
        payload = os.urandom(100_000)
        s.sendall(payload)
        got = bytearray()
        while len(got) < len(payload):
            chunk = s.recv(65536)
            assert chunk, "stream ended early"
            got += chunk
        assert bytes(got) == payload
    finally:
        s.close()


@pytest.mark.host
def test_unknown_host_key_rejected(sshd: Sshd, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    h = SSHHost(
        f"ssh://root@127.0.0.1:{sshd.port}",
        options=SSHOptions(
            identity=sshd.client_key,
            known_hosts=empty,
            use_system_known_hosts=False,
            allow_agent=False,
        ),
    )
    key = paramiko.Ed25519Key.from_private_key_file(str(sshd.dir / "host_key"))
    with pytest.raises(HostKeyRejected, match="not known") as ei:
        h.run(["true"])
    assert fingerprint(key) in str(ei.value)
    assert "127.0.0.1" in str(ei.value)


@pytest.mark.host
def test_changed_host_key_rejected(sshd: Sshd, tmp_path: Path) -> None:
    other = tmp_path / "other"
    _keygen(other)
    keytype, data = Path(f"{other}.pub").read_text().split()[:2]
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{sshd.port} {keytype} {data}\n")
    h = SSHHost(
        f"ssh://root@127.0.0.1:{sshd.port}",
        options=SSHOptions(identity=sshd.client_key, known_hosts=kh, use_system_known_hosts=False),
    )
    with pytest.raises(HostKeyRejected, match="CHANGED"):
        h.run(["true"])


@pytest.mark.host
def test_pinned_host_key_accepted(sshd: Sshd) -> None:
    with sshd.host() as h:
        assert h.run(["id", "-u"], check=True).out.strip() == "0"


@pytest.mark.host
def test_unreachable_is_broken(tmp_path: Path) -> None:
    h = SSHHost(
        f"ssh://root@127.0.0.1:{_free_port()}",
        options=SSHOptions(use_system_known_hosts=False, allow_agent=False, connect_timeout=3),
    )
    with pytest.raises(BrokenError, match="connection"):
        h.run(["true"])


# -- --host specs and ~/.ssh/config against real sshds -------------------------------------

# What the tests run instead of OpenSSH's options that would pick up this machine's keys.
_QUIET = SSHOptions(use_system_known_hosts=False, allow_agent=False, connect_timeout=10)


def _ssh_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _host_block(alias: str, server: Sshd, known_hosts: Path | None = None) -> str:
    return (
        f"Host {alias}\n  HostName 127.0.0.1\n  Port {server.port}\n  User root\n"
        f"  IdentityFile {server.client_key}\n"
        f"  UserKnownHostsFile {known_hosts or server.known_hosts}\n"
    )


@pytest.mark.host
def test_spec_forms_connect(sshd: Sshd) -> None:
    for spec in (f"root@127.0.0.1:{sshd.port}", f"ssh://root@127.0.0.1:{sshd.port}"):
        with SSHHost.from_spec(
            spec,
            identity=sshd.client_key,
            known_hosts=sshd.known_hosts,
            ssh_config=_ssh_config(sshd.dir / "empty_config", ""),
            options=_QUIET,
        ) as h:
            assert h.run(["echo", "ok"], check=True).out == "ok\n"


@pytest.mark.host
def test_ssh_config_alias_connects(sshd: Sshd, tmp_path: Path) -> None:
    cfg = _ssh_config(tmp_path / "config", _host_block("lab", sshd))
    with SSHHost.from_spec("lab", ssh_config=cfg, options=_QUIET) as h:
        assert h.address == SSHAddress("root", "127.0.0.1", sshd.port)
        assert h.run(["id", "-u"], check=True).out.strip() == "0"


@pytest.mark.host
def test_proxy_jump_through_a_second_sshd(sshd: Sshd, jump_sshd: Sshd, tmp_path: Path) -> None:
    cfg = _ssh_config(
        tmp_path / "config",
        _host_block("bastion", jump_sshd) + _host_block("lab", sshd) + "  ProxyJump bastion\n",
    )
    with SSHHost.from_spec("lab", ssh_config=cfg, options=_QUIET) as h:
        assert h.jump is not None
        assert h.jump.address == SSHAddress("root", "127.0.0.1", jump_sshd.port)
        assert h.run(["echo", "via bastion"], check=True).out == "via bastion\n"
        # The lab's ssh runs inside a channel of the bastion's connection, not over TCP.
        sock = h.connect().get_transport().sock  # type: ignore[union-attr]
        assert isinstance(sock, paramiko.Channel)
        assert sock.get_transport() is h.jump.connect().get_transport()
    assert h.jump._client is None  # closed with the host it carried


@pytest.mark.host
@pytest.mark.parametrize("unpinned", ["lab", "bastion"])
def test_proxy_jump_verifies_both_host_keys(
    sshd: Sshd, jump_sshd: Sshd, tmp_path: Path, unpinned: str
) -> None:
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    servers = {"bastion": jump_sshd, "lab": sshd}
    cfg = _ssh_config(
        tmp_path / "config",
        "".join(
            _host_block(alias, server, known_hosts=empty if alias == unpinned else None)
            for alias, server in servers.items()
        )
        + "  ProxyJump bastion\n",
    )
    key_file = servers[unpinned].dir / "host_key"
    offered = paramiko.Ed25519Key.from_private_key_file(str(key_file))
    with SSHHost.from_spec("lab", ssh_config=cfg, options=_QUIET) as h:
        # An unknown bastion is refused before the lab is tried; an unknown lab after the
        # bastion was reached and verified.
        with pytest.raises(HostKeyRejected, match="not known") as ei:
            h.run(["true"])
        assert fingerprint(offered) in str(ei.value)
        assert h.jump is not None
        assert (h.jump._client is not None) == (unpinned == "lab")


RELAY = """\
import socket, sys, threading
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def up():
    while data := sys.stdin.buffer.read1(65536):
        s.sendall(data)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while data := s.recv(65536):
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
"""


@pytest.mark.host
def test_proxy_command_connects(sshd: Sshd, tmp_path: Path) -> None:
    relay = tmp_path / "relay.py"
    relay.write_text(RELAY)
    cfg = _ssh_config(
        tmp_path / "config",
        _host_block("lab", sshd) + f"  ProxyCommand {sys.executable} {relay} %h %p\n",
    )
    with SSHHost.from_spec("lab", ssh_config=cfg, options=_QUIET) as h:
        assert h.run(["echo", "relayed"], check=True).out == "relayed\n"
        sock = h.connect().get_transport().sock  # type: ignore[union-attr]
        assert isinstance(sock, paramiko.ProxyCommand)


@pytest.mark.host
def test_alias_with_unknown_host_key_is_rejected(sshd: Sshd, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    cfg = _ssh_config(tmp_path / "config", _host_block("lab", sshd, known_hosts=empty))
    with (
        SSHHost.from_spec("lab", ssh_config=cfg, options=_QUIET) as h,
        pytest.raises(HostKeyRejected, match="not known"),
    ):
        h.run(["true"])


def test_from_spec_bad_input_is_blocked(tmp_path: Path) -> None:
    with pytest.raises(BlockedError, match="empty host name"):
        SSHHost.from_spec("root@", ssh_config=_ssh_config(tmp_path / "c", ""))
