"""Resolving `--host` specs through an OpenSSH client config (no server needed)."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest

from xenpvh.errors import BlockedError
from xenpvh.host.ssh_target import SSHAddress, SSHOptions, resolve_target


@pytest.fixture
def files(tmp_path: Path) -> Path:
    for name in ("id_lab", "id_jump", "id_cli", "kh_lab", "kh_cli"):
        (tmp_path / name).write_text("")
    return tmp_path


def _config(d: Path, text: str) -> Path:
    p = d / "ssh_config"
    p.write_text(text.replace("@D@", str(d)))
    return p


def test_alias_takes_hostname_user_port_identity_known_hosts(files: Path) -> None:
    cfg = _config(
        files,
        "Host lab\n  HostName 10.1.2.3\n  User ci\n  Port 2222\n"
        "  IdentityFile @D@/missing\n  IdentityFile @D@/id_lab\n"
        "  UserKnownHostsFile @D@/kh_lab\n",
    )
    t = resolve_target("lab", ssh_config=cfg)
    assert t.address == SSHAddress("ci", "10.1.2.3", 2222)
    assert t.options.identity == files / "id_lab"  # the first that exists
    assert t.options.known_hosts == files / "kh_lab"
    assert t.options.use_system_known_hosts is False  # it replaces ~/.ssh/known_hosts
    assert t.jump is None and t.options.proxy_command is None


def test_spec_and_flags_beat_the_config(files: Path) -> None:
    cfg = _config(
        files,
        "Host lab\n  HostName 10.1.2.3\n  User ci\n  Port 2222\n"
        "  IdentityFile @D@/id_lab\n  UserKnownHostsFile @D@/kh_lab\n",
    )
    t = resolve_target(
        "root@lab:22",
        identity=files / "id_cli",
        known_hosts=files / "kh_cli",
        ssh_config=cfg,
        options=SSHOptions(connect_timeout=3),
    )
    assert t.address == SSHAddress("root", "10.1.2.3", 22)
    assert (t.options.identity, t.options.known_hosts) == (files / "id_cli", files / "kh_cli")
    assert t.options.use_system_known_hosts is True
    assert t.options.connect_timeout == 3


def test_unknown_name_and_no_config(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config(files, "Host other\n  Port 1\n")
    assert resolve_target("box", ssh_config=cfg).address == SSHAddress("root", "box", 22)
    monkeypatch.setenv("HOME", str(files / "nohome"))  # no ~/.ssh/config at all
    assert resolve_target("u@box:2").address == SSHAddress("u", "box", 2)
    with pytest.raises(BlockedError, match="does not exist"):
        resolve_target("box", ssh_config=files / "nope")


def test_proxy_jump_chain(files: Path) -> None:
    cfg = _config(
        files,
        "Host lab\n  HostName 10.0.0.9\n  ProxyJump ops@bastion:2200,inner\n"
        "Host inner\n  HostName 192.168.1.1\n  ProxyJump ignored-for-a-later-hop\n"
        "Host bastion\n  HostName bastion.example.org\n  IdentityFile @D@/id_jump\n",
    )
    t = resolve_target("lab", ssh_config=cfg, known_hosts=files / "kh_cli")
    assert [h.address for h in t.hops()] == [
        SSHAddress("ops", "bastion.example.org", 2200),
        SSHAddress(getpass.getuser(), "192.168.1.1", 22),  # a jump host's default user
        SSHAddress("root", "10.0.0.9", 22),
    ]
    bastion = t.hops()[0]
    assert bastion.options.identity == files / "id_jump"
    # --known-hosts pins the keys of every hop.
    assert {h.options.known_hosts for h in t.hops()} == {files / "kh_cli"}


def test_proxy_command_kept_as_text(files: Path) -> None:
    cfg = _config(files, "Host lab\n  ProxyCommand relay --to %h:%p\n")
    assert resolve_target("lab", ssh_config=cfg).options.proxy_command == "relay --to lab:22"
    cfg = _config(files, "Host lab\n  ProxyCommand none\n  ProxyJump none\n")
    t = resolve_target("lab", ssh_config=cfg)
    assert t.options.proxy_command is None and t.jump is None


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ("Host lab\n  ProxyJump j\n  ProxyCommand relay\n", "both ProxyJump and ProxyCommand"),
        ("Host lab\n  ProxyJump lab\n", "a ProxyJump loop"),
        ("Host lab\n  UserKnownHostsFile @D@/none\n", "UserKnownHostsFile"),
        ("Host lab\n  HostName -oProxyCommand=sh\n", "must not start with '-'"),
        ("Host lab\n  Port twenty\n", "not a number"),
        ("Host lab\n  ProxyJump root@\n", "empty host name"),
    ],
)
def test_config_problems_are_blocked(files: Path, config: str, problem: str) -> None:
    with pytest.raises(BlockedError) as ei:
        resolve_target("lab", ssh_config=_config(files, config))
    assert problem in str(ei.value)
