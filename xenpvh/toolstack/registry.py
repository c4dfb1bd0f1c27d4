"""Toolstack drivers, registered by name rather than imported by their protocol.

`xenpvh.toolstack.base` defines the protocol and knows no driver; each driver module is
named here as "module:Class" and imported only when asked for, so the libvirt driver (an
optional extra) costs nothing to a run that uses xl, and base <-> driver import cycles
cannot arise.  A project may register a driver of its own with `register`.
"""

from __future__ import annotations

import importlib

from xenpvh.errors import BlockedError
from xenpvh.host.base import Host
from xenpvh.toolstack.base import Toolstack

_DRIVERS: dict[str, str] = {
    "xl": "xenpvh.toolstack.xl:Xl",
    "libvirt": "xenpvh.toolstack.libvirt:Libvirt",
}


def register(name: str, target: str) -> None:
    """Make `name` resolve to the class at `target` ("package.module:Class")."""
    if ":" not in target:
        raise ValueError(f"driver target {target!r} must look like 'module:Class'")
    _DRIVERS[name] = target


def names() -> tuple[str, ...]:
    return tuple(_DRIVERS)


def get_toolstack(name: str, host: Host) -> Toolstack:
    """A driver instance for `host`; `blocked` for an unknown or unavailable driver."""
    target = _DRIVERS.get(name)
    if target is None:
        raise BlockedError(f"unknown toolstack {name!r} (known: {', '.join(_DRIVERS)})")
    module_name, _, cls_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except ImportError as e:
        raise BlockedError(f"toolstack {name!r} is not available: {e}") from e
    return cls(host)  # type: ignore[no-any-return]


__all__ = ["get_toolstack", "names", "register"]
