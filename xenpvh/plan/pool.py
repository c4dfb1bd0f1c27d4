"""The host pool of a plan run: which hosts, one pytest-xdist worker each.

nested:N                 N nested Xen hosts on this machine (each a QEMU, ~3 GB)
box1,root@box2:2222      ssh hosts or ~/.ssh/config aliases (host keys verified)
inventory:FILE           every host of an ansible inventory (INI or YAML)
ssh-config[:FILE]        every concrete `Host` alias of an ssh config (default ~/.ssh/config)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xenpvh.errors import BlockedError

MAX_NESTED = 16
_ALIAS = re.compile(r"^[A-Za-z0-9_.@:\[\]/-]+$")


@dataclass(frozen=True)
class PoolHost:
    """One host of the pool: `name` (shown, leased, recorded) and the `spec` that opens it
    (`nested` or an ssh address / alias, as `--host` takes)."""

    name: str
    spec: str

    @property
    def nested(self) -> bool:
        return self.spec == "nested"

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "spec": self.spec}


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
        return _unique(text, ansible_inventory(Path(text.partition(":")[2]).expanduser()))
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


def _unique(text: str, hosts: list[PoolHost]) -> tuple[PoolHost, ...]:
    if not hosts:
        raise BlockedError(f"--hosts {text}: no hosts found")
    names = [h.name for h in hosts]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise BlockedError(f"--hosts {text}: {dup} is listed twice (one worker per host)")
    return tuple(hosts)


def ansible_inventory(path: Path) -> list[PoolHost]:
    """The hosts of an ansible inventory file, INI or YAML (`ansible_host`, `ansible_user`,
    `ansible_port` honoured; the inventory name is the pool name)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise BlockedError(f"inventory {path}: {e.strerror or e}") from e
    if path.suffix in (".yml", ".yaml") or text.lstrip().startswith(("all:", "---")):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise BlockedError(f"inventory {path}: invalid YAML: {e}") from e
        found: dict[str, dict[str, Any]] = {}
        _yaml_hosts(data, found, path)
        return [_inventory_host(name, found[name], path) for name in found]
    hosts: dict[str, dict[str, Any]] = {}
    section = ""
    for n, raw in enumerate(text.splitlines(), start=1):
        line = (
            raw.split("#", 1)[0].split(";", 1)[0].strip()
            if not raw.lstrip().startswith(("#", ";"))
            else ""
        )
        if not line:
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section.endswith((":vars", ":children")):
            continue
        name, *pairs = line.split()
        vars_: dict[str, Any] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise BlockedError(f"inventory {path}:{n}: {pair!r} is not key=value")
            vars_[key] = value
        hosts.setdefault(name, {}).update(vars_)
    return [_inventory_host(name, v, path) for name, v in hosts.items()]


def _yaml_hosts(node: Any, found: dict[str, dict[str, Any]], path: Path) -> None:
    if not isinstance(node, dict):
        return
    for group in node.values():
        if not isinstance(group, dict):
            continue
        for name, v in (group.get("hosts") or {}).items():
            found.setdefault(str(name), {}).update(v if isinstance(v, dict) else {})
        _yaml_hosts(group.get("children") or {}, found, path)


def _inventory_host(name: str, v: dict[str, Any], path: Path) -> PoolHost:
    if not _ALIAS.match(name) or any(c in name for c in "[]"):
        raise BlockedError(f"inventory {path}: host {name!r}: ranges and odd names unsupported")
    address = str(v.get("ansible_host", name))
    user = v.get("ansible_user")
    port = v.get("ansible_port")
    spec = f"ssh://{user + '@' if user else ''}{address}{':' + str(port) if port else ''}"
    if not _ALIAS.match(spec.removeprefix("ssh://")):
        raise BlockedError(f"inventory {path}: host {name!r}: bad address {spec!r}")
    return PoolHost(name, spec if (user or port or address != name) else name)


def ssh_config_hosts(path: Path) -> list[PoolHost]:
    """Every concrete `Host` alias (no wildcard, no negation) of an ssh config file."""
    try:
        text = path.read_text()
    except OSError as e:
        raise BlockedError(f"ssh config {path}: {e.strerror or e}") from e
    hosts = []
    for raw in text.splitlines():
        parts = raw.strip().split()
        if len(parts) >= 2 and parts[0].lower() == "host":
            for alias in parts[1:]:
                if not any(c in alias for c in "*?!") and _ALIAS.match(alias):
                    hosts.append(PoolHost(alias, alias))
    return hosts


__all__ = ["PoolHost", "ansible_inventory", "parse_pool", "ssh_config_hosts"]
