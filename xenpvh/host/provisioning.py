"""Provisioning a lab box over ssh: a `--host` spec resolved by the host room (ssh config,
identity, pinned known_hosts), then the project's roles (`xenpvh.provision`) run against it.

It lives in the host room because resolving the box is the host room's work; the roles
themselves sit below it, where the nested host's image also applies them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.ssh_target import resolve_target
from xenpvh.provision.playbook import PlaybookRun
from xenpvh.provision.roles import (
    ProvisionResult,
    check_artifact,
    provision_log_path,
    recap_totals,
    ssh_inventory,
)
from xenpvh.util.progress import ProgressSink


def provision_ssh(
    address: str,
    *,
    identity: Path | None = None,
    known_hosts: Path | None = None,
    ssh_config: Path | None = None,
    xen_artifact: Path | str | None = None,
    extra_vars: Mapping[str, Any] | None = None,
    progress: ProgressSink | None = None,
    log: Path | None = None,
    timeout: float = 3600.0,
) -> ProvisionResult:
    """Provision a Debian 12 box into a Xen lab host.  `address` is a `--host` spec:
    `ssh://user@host[:port]`, `user@host[:port]`, `host[:port]` or an alias of `ssh_config`
    (default ~/.ssh/config), whose HostName, User, Port, IdentityFile and UserKnownHostsFile
    count unless `identity`/`known_hosts` are given.

    Host keys are checked (against `known_hosts` when given, else ssh's defaults).  Failed
    tasks are reported in the result; an unreachable host raises BrokenError.
    """
    resolved = resolve_target(
        address, identity=identity, known_hosts=known_hosts, ssh_config=ssh_config
    )
    if resolved.jump is not None or resolved.options.proxy_command:
        # ansible's OpenSSH would start the jump hop itself, without our pinned known_hosts.
        raise BlockedError(
            f"ssh {address!r} goes through ProxyJump/ProxyCommand: provisioning over ansible "
            "supports direct connections only"
        )
    target = resolved.address
    identity, known_hosts = resolved.options.identity, resolved.options.known_hosts
    for name, p in (("identity", identity), ("known_hosts", known_hosts)):
        if p is not None and not Path(p).is_file():
            raise BlockedError(f"{name} file {p} does not exist")
    ev: dict[str, Any] = dict(extra_vars or {})
    artifact = check_artifact(xen_artifact)
    if artifact is not None:
        ev["xen_artifact"] = artifact
    inventory = ssh_inventory(
        target,
        identity=Path(identity).resolve() if identity else None,
        known_hosts=Path(known_hosts).resolve() if known_hosts else None,
    )
    log = log or provision_log_path(target.host)
    events = PlaybookRun(
        inventory,
        extra_vars=ev,
        log=log,
        progress=progress,
        timeout=timeout,
        label=f"provisioning {target.host}",
    ).run()
    result = recap_totals(events, log)
    if result.unreachable:
        raise BrokenError(
            f"{target.host}:{target.port} is unreachable over ssh: "
            f"{result.describe_failures()} (log: {log})"
        )
    return result


__all__ = ["provision_ssh"]
