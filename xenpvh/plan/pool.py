"""The host pool of a plan run: which hosts, one pytest-xdist worker each.

nested:N                 N nested Xen hosts on this machine (each a QEMU, ~3 GB)
box1,root@box2:2222      ssh hosts or ~/.ssh/config aliases (host keys verified)
inventory:FILE[:GROUP]   every host of an ansible inventory (INI or YAML), or of one group
ssh-config[:FILE]        every concrete `Host` alias of an ssh config (default ~/.ssh/config)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from xenpvh.errors import BlockedError
from xenpvh.host.inventory import AnsibleHost, ansible_hosts
from xenpvh.host.ssh_config import host_aliases, load_ssh_config

MAX_NESTED = 16
_ALIAS = re.compile(r"^[A-Za-z0-9_.@:\[\]/-]+$")


@dataclass(frozen=True)
class PoolHost:
    """One host of the pool: `name` (shown, leased, recorded), the `spec` that opens it
    (`nested` or an ssh address / alias, as `--host` takes) and the key to offer, when
    the inventory names one."""

    name: str
    spec: str
    identity: str | None = None

    @property
    def nested(self) -> bool:
        return self.spec == "nested"

    def as_dict(self) -> dict[str, str]:
        doc = {"name": self.name, "spec": self.spec}
        if self.identity:
            doc["identity"] = self.identity
        return doc


def parse_pool(text: str) -> tuple[PoolHost, ...]:
    """The pool a `--hosts` value names; blocked naming what is wrong."""
    text = text.strip()
    if not text:
        raise BlockedError("--hosts: empty (nested:N, host names, inventory:FILE, ssh-config)")
    if text.startswith("nested:") or text == "nested":
        count = text.partition(":")[2] or "1"
        if not count.isdigit() or not 1 <= int(count) <= MAX_NESTED:
            raise BlockedError(f"--hosts {text}: nested:N takes N from 1 to {MAX_NESTED}")
        n = int(count)
        return tuple(PoolHost(f"nested-{i}" if n > 1 else "nested", "nested") for i in range(n))
    if text.startswith("inventory:"):
        path, group = _inventory_spec(text.partition(":")[2])
        return _unique(text, ansible_inventory(path, group))
    if text == "ssh-config" or text.startswith("ssh-config:"):
        path = text.partition(":")[2] or str(Path.home() / ".ssh" / "config")
        return _unique(text, ssh_config_hosts(Path(path).expanduser()))
    hosts = []
    for part in text.split(","):
        part = part.strip()
        if not part or not _ALIAS.match(part):
            raise BlockedError(f"--hosts: {part!r} is not a host name or ssh address")
        hosts.append(PoolHost(part, part))
    return _unique(text, hosts)


def _inventory_spec(rest: str) -> tuple[Path, str | None]:
    """FILE or FILE:GROUP (a file whose own name holds ':' wins over a group)."""
    whole = Path(rest).expanduser()
    if ":" not in rest or whole.exists():
        return whole, None
    file, _, group = rest.rpartition(":")
    if not group:
        raise BlockedError(f"--hosts inventory:{rest}: empty group name after ':'")
    return Path(file).expanduser(), group


def _unique(text: str, hosts: list[PoolHost]) -> tuple[PoolHost, ...]:
    if not hosts:
        raise BlockedError(f"--hosts {text}: no hosts found")
    names = [h.name for h in hosts]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise BlockedError(f"--hosts {text}: {dup} is listed twice (one worker per host)")
    return tuple(hosts)


def ansible_inventory(path: Path, group: str | None = None) -> list[PoolHost]:
    """The hosts of an ansible inventory file, INI or YAML, read by ansible's own plugins
    (ranges, `:children`, group and host vars); of `group` only when given.  The inventory
    name is the pool name; `ansible_host`, `ansible_user`, `ansible_port` make its ssh
    address and `ansible_ssh_private_key_file` its identity."""
    return [_pool_host(h, path) for h in ansible_hosts(path, group)]


def _pool_host(host: AnsibleHost, path: Path) -> PoolHost:
    if not _ALIAS.match(host.name) or any(c in host.name for c in "[]"):
        raise BlockedError(f"inventory {path}: host {host.name!r} is not a host name")
    address = f"[{host.address}]" if ":" in host.address else host.address
    user = f"{host.user}@" if host.user else ""
    port = f":{host.port}" if host.port else ""
    spec = f"ssh://{user}{address}{port}"
    if not _ALIAS.match(spec.removeprefix("ssh://")):
        raise BlockedError(f"inventory {path}: host {host.name!r}: bad address {spec!r}")
    plain = not (user or port or host.address != host.name)
    identity = str(host.identity) if host.identity else None
    return PoolHost(host.name, host.name if plain else spec, identity)


def ssh_config_hosts(path: Path) -> list[PoolHost]:
    """Every concrete `Host` alias (no wildcard, no negation) of an ssh config file."""
    config = load_ssh_config(path)
    if config is None:  # not reached: an explicit path exists or is blocked
        raise BlockedError(f"ssh config {path} does not exist")
    return [
        PoolHost(alias, alias)
        for alias in host_aliases(config, f"ssh config {path}")
        if _ALIAS.match(alias)
    ]


__all__ = ["PoolHost", "ansible_inventory", "parse_pool", "ssh_config_hosts"]
