"""Where an ssh host is and how to reach it: `--host` specs and ~/.ssh/config.

A spec is `ssh://user@host[:port]`, `user@host[:port]`, `host[:port]` or a Host alias of an
OpenSSH client configuration (~/.ssh/config by default).  `resolve_target` turns it into an
`SSHTarget`: the address to connect to, the options (identity, known_hosts, ProxyCommand)
and the jump host (ProxyJump) it is reached through, itself an `SSHTarget`.  What the spec
says beats the config, the config beats xenpvh's defaults (user root for the Xen host, the
local user for a jump host, port 22), as with OpenSSH's command line; `--identity` and
`--known-hosts` beat the config for every hop.

Nothing here builds a shell string: names become argv or paramiko arguments only, and are
checked first (a host or user that starts with '-' would read as an option to OpenSSH).
"""

from __future__ import annotations

import dataclasses
import getpass
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from xenpvh.errors import BlockedError
from xenpvh.host.ssh_config import load_ssh_config

log = logging.getLogger(__name__)

# A longer ProxyJump chain than this is taken for a loop between config entries.
MAX_JUMPS = 8

_USER = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]*")
_HOST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+")
_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True)
class SSHAddress:
    """user@host:port of one ssh server (host: a name, an IPv4 or a bare IPv6 address)."""

    user: str
    host: str
    port: int = 22

    @classmethod
    def parse(cls, address: str, *, default_user: str = "root") -> SSHAddress:
        """Parse `ssh://[user@]host[:port]`, `[user@]host[:port]` (IPv6 in brackets) without
        consulting any ssh config; raises BlockedError naming what is wrong."""
        parts = split_address(address)
        return cls(parts.user or default_user, parts.host, parts.port or 22)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.user}@{host}:{self.port}"


@dataclass(frozen=True)
class AddressParts:
    """What a spec says itself: the user and port are None when it leaves them out."""

    user: str | None
    host: str
    port: int | None


def split_address(spec: str) -> AddressParts:
    """The user, host and port a spec names; BlockedError (`ssh address ...: why`) if it is
    not `ssh://[user@]host[:port][/]` or `[user@]host[:port]`."""
    if not isinstance(spec, str):
        raise BlockedError(f"ssh address {spec!r} must be a string")

    def bad(why: str) -> BlockedError:
        return BlockedError(f"ssh address {spec!r}: {why}")

    rest = spec
    if rest.startswith("ssh://"):
        rest = rest.removeprefix("ssh://")
        rest = rest.removesuffix("/")
        if "/" in rest:
            raise bad("a path is not allowed; expected ssh://user@host[:port]")
    elif "://" in rest:
        raise bad("the only scheme is ssh://")
    if not rest:
        raise bad("empty host name")
    user: str | None = None
    if "@" in rest:
        user, _, rest = rest.rpartition("@")
        if not user:
            raise bad("empty user name before '@'")
        if not _USER.fullmatch(user):
            raise bad(f"user name {user!r} may hold only letters, digits, '.', '_' and '-'")
    port_text: str | None = None
    if rest.startswith("["):
        host, sep, after = rest[1:].partition("]")
        if not sep or not _IPV6.fullmatch(host) or ":" not in host:
            raise bad("an IPv6 address in brackets must look like [2001:db8::1]")
        if after:
            if not after.startswith(":"):
                raise bad(f"unexpected {after!r} after the address")
            port_text = after[1:]
    elif rest.count(":") > 1:
        raise bad("an IPv6 address needs brackets: user@[2001:db8::1]:22")
    else:
        host, sep, port_text_or_empty = rest.partition(":")
        port_text = port_text_or_empty if sep else None
    if not host:
        raise bad("empty host name")
    if ":" not in host:
        check_host_name(host, f"ssh address {spec!r}")
    port: int | None = None
    if port_text is not None:
        port = _port(port_text, f"ssh address {spec!r}")
    return AddressParts(user, host, port)


def check_host_name(host: str, where: str) -> str:
    """A host name or IPv4 address that cannot be read as an option or hold a space."""
    if not _HOST_NAME.fullmatch(host):
        raise BlockedError(
            f"{where}: host name {host!r} may hold only letters, digits, '.', '_' and '-' "
            "and must not start with '-'"
        )
    return host


def _port(text: str, where: str) -> int:
    if not _PORT.fullmatch(text):
        raise BlockedError(f"{where}: port {text!r} is not a number 1-65535")
    port = int(text)
    if not 1 <= port <= 65535:
        raise BlockedError(f"{where}: port {port} is out of range 1-65535")
    return port


@dataclass(frozen=True)
class SSHOptions:
    """How to connect: the key offered, the host keys trusted, timeouts and the proxy."""

    identity: Path | None = None
    known_hosts: Path | None = None
    use_system_known_hosts: bool = True
    allow_agent: bool = True
    connect_timeout: float = 15.0
    keepalive: int = 15
    # Run commands under the remote `timeout(1)` so an overrun command dies even when the
    # ssh "signal" request is refused (OpenSSH refuses it for root sessions).
    remote_timeout: bool = True
    # ssh config's ProxyCommand: run as argv (shlex-split by paramiko), never by a shell.
    proxy_command: str | None = None


@dataclass(frozen=True)
class SSHTarget:
    """One resolved hop: where to connect, with which options, and the jump host (if any)
    whose `direct-tcpip` channel carries the connection."""

    address: SSHAddress
    options: SSHOptions
    jump: SSHTarget | None = None
    # The spec as given (an alias, or an address), for messages.
    spec: str = ""

    def hops(self) -> list[SSHTarget]:
        """The jump hosts, the first one connected to first, then this target."""
        return [*(self.jump.hops() if self.jump else []), self]


def resolve_target(
    spec: str,
    *,
    identity: str | Path | None = None,
    known_hosts: str | Path | None = None,
    ssh_config: Path | None = None,
    options: SSHOptions | None = None,
    default_user: str = "root",
) -> SSHTarget:
    """Resolve a `--host` spec through the ssh config (see the module docstring).

    `options` gives the settings no spec or config has (timeouts, agent use); `identity`
    and `known_hosts` beat the config's IdentityFile and UserKnownHostsFile on every hop.
    """
    base = options or SSHOptions()
    if identity is not None:
        base = dataclasses.replace(base, identity=Path(identity).expanduser())
    if known_hosts is not None:
        base = dataclasses.replace(base, known_hosts=Path(known_hosts).expanduser())
    resolver = _Resolver(
        load_ssh_config(ssh_config),
        base,
        identity_given=identity is not None,
        known_hosts_given=known_hosts is not None,
    )
    return resolver.target(spec, default_user=default_user)


@dataclass(frozen=True)
class _Resolver:
    """Resolves one spec and, recursively, its jump hosts with the same config and flags."""

    config: paramiko.SSHConfig | None
    base: SSHOptions
    identity_given: bool
    known_hosts_given: bool

    def target(
        self, spec: str, *, default_user: str, via: SSHTarget | None = None, depth: int = 0
    ) -> SSHTarget:
        """`spec` resolved; reached through `via` when given (a later hop of a ProxyJump
        list: its own ProxyJump and ProxyCommand then do not count, as in OpenSSH)."""
        if depth > MAX_JUMPS:
            raise BlockedError(
                f"ssh {spec!r}: more than {MAX_JUMPS} jump hosts (a ProxyJump loop?)"
            )
        parts = split_address(spec)
        found = dict(self.config.lookup(parts.host)) if self.config is not None else {}
        where = f"ssh config entry for {parts.host!r}"
        host = str(found.get("hostname") or parts.host)
        if ":" not in host:
            check_host_name(host, where)
        user = parts.user or found.get("user") or default_user
        if not _USER.fullmatch(user):
            raise BlockedError(f"{where}: user name {user!r} is not a plain user name")
        port = parts.port or (_port(str(found["port"]), where) if "port" in found else 22)
        options = self._options(found, where)
        jump = via
        if via is None:
            proxy_jump = _none_is_absent(found.get("proxyjump"))
            if proxy_jump and options.proxy_command:
                raise BlockedError(
                    f"{where} sets both ProxyJump and ProxyCommand; OpenSSH would use the "
                    "first in the file, which cannot be told here: keep one"
                )
            for hop in proxy_jump.split(",") if proxy_jump else []:
                # A jump host's own default user is the local one, as with OpenSSH.
                jump = self.target(
                    hop.strip(), default_user=getpass.getuser(), via=jump, depth=depth + 1
                )
        if jump is not None:
            options = dataclasses.replace(options, proxy_command=None)
        target = SSHTarget(SSHAddress(user, host, port), options, jump, spec)
        log.debug("ssh %s: %s", spec, " -> ".join(str(t.address) for t in target.hops()))
        return target

    def _options(self, found: dict[str, Any], where: str) -> SSHOptions:
        """The base options with the config's ProxyCommand, and its IdentityFile and
        UserKnownHostsFile unless `--identity` / `--known-hosts` were given."""
        proxy_command = _none_is_absent(found.get("proxycommand"))
        options = dataclasses.replace(self.base, proxy_command=proxy_command)
        if not self.identity_given and found.get("identityfile"):
            # OpenSSH tries each; the first that exists is the one we offer.
            files = [Path(f).expanduser() for f in found["identityfile"]]
            present = [f for f in files if f.is_file()]
            if present:
                options = dataclasses.replace(options, identity=present[0])
            else:
                log.info("%s: no IdentityFile exists (%s)", where, ", ".join(map(str, files)))
        if not self.known_hosts_given and found.get("userknownhostsfile"):
            files = [Path(f).expanduser() for f in str(found["userknownhostsfile"]).split()]
            present = [f for f in files if f.is_file()]
            if not present:
                raise BlockedError(
                    f"{where}: UserKnownHostsFile {', '.join(map(str, files))} does not exist, "
                    "so no host key could be verified"
                )
            # It replaces ~/.ssh/known_hosts, as in OpenSSH.
            options = dataclasses.replace(
                options, known_hosts=present[0], use_system_known_hosts=False
            )
        return options


def _none_is_absent(value: object) -> str | None:
    text = str(value).strip() if value else ""
    return None if not text or text.lower() == "none" else text


__all__ = [
    "AddressParts",
    "SSHAddress",
    "SSHOptions",
    "SSHTarget",
    "check_host_name",
    "load_ssh_config",
    "resolve_target",
    "split_address",
]
