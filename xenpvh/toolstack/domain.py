"""A domain as every toolstack piece names it: the `Domain` record, the rule for its name and
the one question any piece may ask the host about it (does it exist?).

Below both the Toolstack protocol (`base`) and the console capture (`console`), so neither
needs the other to know what a domain is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from xenpvh.errors import BlockedError
from xenpvh.host.base import Host

# Stricter than xl: names end up in paths (/var/log/xen/console/guest-<name>.log).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Domain:
    """A domain the toolstack created (or found)."""

    name: str
    domid: int
    state: str = ""  # `xl list` state flags, e.g. "-b----" (empty when unknown)
    memory_mb: int | None = None
    vcpus: int | None = None


def check_domain_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise BlockedError(
            f"domain name {name!r} is not allowed: use 1-64 of [A-Za-z0-9_.-], "
            "starting with a letter or digit"
        )
    return name


def xl_domain_exists(host: Host, name: str, *, timeout: float = 60.0) -> bool:
    """`xl domid NAME` succeeds on the host.  60 s: on a loaded TCG dom0, `xl domid` over a
    connection that replaced a dropped one took over 30 s (CI, 2026-12-03), and a timeout
    here turns a run broken."""
    return bool(host.run(["xl", "domid", check_domain_name(name)], timeout=timeout).ok)


__all__ = ["Domain", "check_domain_name", "xl_domain_exists"]
