"""Lab hosts named by an inventory: xenpvh's TOML one (`--inventory`, `load_inventory`)
or an ansible one (`--hosts inventory:FILE[:GROUP]`, `ansible_hosts`).

An ansible inventory is read by ansible's own inventory plugins.

The `ini` and `yaml` inventory plugins of ansible-core (the ones `ansible-playbook -i`
uses) parse the file, so ranges (`box[01:03]`), `[group:children]`, `[group:vars]` and
host vars mean exactly what they mean to ansible.  We drive the plugins ourselves rather
than through `InventoryManager`: the manager turns a file it cannot parse into a warning on
stderr and an empty inventory, where we want the plugin's reason in a blocked error.

Of the host vars, those that say how to reach a box count: `ansible_host`,
`ansible_port`, `ansible_user`, `ansible_ssh_private_key_file` (a relative key path is
taken relative to the inventory file, as xenpvh's TOML inventory does).
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleError
from ansible.inventory.data import InventoryData
from ansible.inventory.helpers import get_group_vars
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import inventory_loader
from ansible.utils.vars import combine_vars

from xenpvh.errors import BlockedError
from xenpvh.host.ssh_target import SSHAddress, SSHOptions

log = logging.getLogger(__name__)

# The plugins tried, in ansible's default order for files (`yaml` declines non-YAML names).
PLUGINS = ("yaml", "ini")


@dataclass(frozen=True)
class AnsibleHost:
    """One host of an inventory: its inventory name and how to reach it."""

    name: str
    address: str  # ansible_host, else the name
    user: str | None = None
    port: int | None = None
    identity: Path | None = None


def load_ansible_inventory(path: Path) -> InventoryData:
    """The parsed inventory at `path`; BlockedError naming the file and why it is not one."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BlockedError(f"inventory {path}: no such file")
    source = str(path.resolve())
    loader = DataLoader()
    reasons: list[str] = []
    for name in PLUGINS:
        plugin = inventory_loader.get(name)
        if not plugin.verify_file(source):
            continue
        data = InventoryData()
        try:
            plugin.parse(data, loader, source, cache=False)
        except AnsibleError as e:
            reasons.append(f"{name}: {e.message if hasattr(e, 'message') else e}")
            continue
        data.reconcile_inventory()
        return data
    raise BlockedError(
        f"inventory {path}: not an ansible INI or YAML inventory"
        + (f" ({'; '.join(reasons)})" if reasons else "")
    )


def ansible_hosts(path: Path, group: str | None = None) -> list[AnsibleHost]:
    """The hosts of the inventory at `path` (of `group` and its children when given), in the
    inventory's order; BlockedError for a missing group or a host var we cannot use."""
    data = load_ansible_inventory(path)
    chosen = group or "all"
    if chosen not in data.groups:
        groups = sorted(g for g in data.groups if g not in ("all", "ungrouped"))
        raise BlockedError(
            f"inventory {path}: no group {chosen!r} (groups: {', '.join(groups) or 'none'})"
        )
    members = set(data.groups[chosen].get_hosts())
    # In the inventory's order (ansible's default `order: inventory`), not the group tree's.
    return [_host(h, Path(path)) for h in data.hosts.values() if h in members]


def _host(host: Any, path: Path) -> AnsibleHost:
    # Group vars by depth and priority, then the host's own: ansible's precedence.
    hostvars = combine_vars(get_group_vars(host.get_groups()), host.get_vars())
    where = f"inventory {path}: host {host.name!r}"

    def text(key: str) -> str | None:
        value = hostvars.get(key)
        if value is None:
            return None
        value = str(value)
        if "{{" in value or "{%" in value:
            raise BlockedError(f"{where}: {key} is a template ({value!r}); give a plain value")
        return value

    port_text = text("ansible_port")
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise BlockedError(f"{where}: ansible_port {port_text!r} is not a port 1-65535")
        port = int(port_text)
    key = text("ansible_ssh_private_key_file") or text("ansible_private_key_file")
    identity: Path | None = None
    if key is not None:
        identity = Path(key).expanduser()
        if not identity.is_absolute():
            identity = path.expanduser().resolve().parent / identity
    return AnsibleHost(
        name=host.name,
        address=text("ansible_host") or host.name,
        user=text("ansible_user"),
        port=port,
        identity=identity,
    )


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


__all__ = [
    "AnsibleHost",
    "InventoryEntry",
    "ansible_hosts",
    "load_ansible_inventory",
    "load_inventory",
]
