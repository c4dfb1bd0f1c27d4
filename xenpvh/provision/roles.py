"""The project's ansible roles (ansible/site.yml) applied to a lab box or an image tree.

One definition for both worlds: `provision_ssh` turns a plain Debian 12 box into a Xen lab
host over ssh, `apply_roles_to_chroot` applies the same roles to the nested host's image
directory through ansible's chroot connection.  Both generate a throw-away inventory and
run the playbook (`playbook.PlaybookRun`); the result is the recap's counts and the tasks
that failed, with ansible's message.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from xenpvh.errors import BlockedError, BrokenError
from xenpvh.provision.events import PlaybookEvents, TaskFailed
from xenpvh.provision.playbook import PlaybookRun
from xenpvh.util.progress import ProgressSink

CHROOT_CONNECTION = "community.general.chroot"


class SSHEndpoint(Protocol):
    """Where ansible's OpenSSH connects (host.ssh_target.SSHEndpoint is one): provisioning
    sits below the host room, which resolves `--host` specs and ssh configs."""

    user: str
    host: str
    port: int


# A build artifact as `xenpvh build xen` names it; the name becomes a GRUB menu title.
_XEN_ARTIFACT = re.compile(r"^xen-[A-Za-z0-9._+~-]+\.gz$")


@dataclass(frozen=True)
class ProvisionResult:
    changed: int
    ok: int
    failed: int
    log: Path
    unreachable: int = 0
    # Per host that failed, the task that stopped it and ansible's message.
    failures: tuple[TaskFailed, ...] = ()

    def describe_failures(self) -> str:
        return "; ".join(f.describe() for f in self.failures)


def provision_log_path(name: str) -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:64]
    return Path(base) / "xenpvh" / "provision" / f"{stamp}-{safe}.log"


def check_artifact(xen_artifact: Path | str | None) -> str | None:
    if xen_artifact is None:
        return None
    p = Path(xen_artifact).expanduser().resolve()
    if not _XEN_ARTIFACT.match(p.name):
        raise BlockedError(f"Xen artifact {p.name!r} is not named xen-<id>.gz")
    if not p.is_file():
        raise BlockedError(f"Xen artifact {p} does not exist")
    return str(p)


def recap_totals(events: PlaybookEvents, log: Path) -> ProvisionResult:
    recap = events.recap or {}
    return ProvisionResult(
        changed=sum(c.changed for c in recap.values()),
        ok=sum(c.ok for c in recap.values()),
        failed=sum(c.failed for c in recap.values()),
        unreachable=sum(c.unreachable for c in recap.values()),
        log=log,
        failures=tuple(events.fatal()),
    )


def ssh_inventory(
    target: SSHEndpoint, *, identity: Path | None = None, known_hosts: Path | None = None
) -> dict[str, Any]:
    """The generated inventory for one lab box (group `xen_lab`)."""
    ssh_args = ["-o", "StrictHostKeyChecking=yes"]
    if known_hosts is not None:
        # Only the given file: a stale entry in ~/.ssh/known_hosts must not vouch for the box.
        ssh_args += [
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
        ]
    if identity is not None:
        ssh_args += ["-o", "IdentitiesOnly=yes"]
    hostvars: dict[str, Any] = {
        "ansible_host": target.host,
        "ansible_port": target.port,
        "ansible_user": target.user,
        "ansible_connection": "ssh",
        # ansible splits this with shlex: quoting keeps paths with spaces in one piece.
        "ansible_ssh_common_args": shlex.join(ssh_args),
    }
    if identity is not None:
        hostvars["ansible_ssh_private_key_file"] = str(identity)
    return {"all": {"children": {"xen_lab": {"hosts": {target.host: hostvars}}}}}


@contextlib.contextmanager
def _no_service_starts(root: Path) -> Iterator[None]:
    """Keep maintainer scripts from starting daemons inside the image tree.

    Without systemd running in the chroot, invoke-rc.d would run init scripts directly
    (libvirtd would start inside it); policy-rc.d exit 101 forbids that, as debootstrap
    does during its own install.  Removed afterwards unless it was there already.
    """
    policy = root / "usr/sbin/policy-rc.d"
    if policy.exists() or policy.is_symlink():
        yield
        return
    policy.write_text("#!/bin/sh\n# xenpvh: building an image, start nothing\nexit 101\n")
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink(missing_ok=True)


def chroot_inventory(root: Path) -> dict[str, Any]:
    """The generated inventory for an image directory (group `nested`)."""
    return {
        "all": {
            "children": {
                "nested": {
                    "hosts": {
                        str(root): {
                            "ansible_connection": CHROOT_CONNECTION,
                            "ansible_python_interpreter": "/usr/bin/python3",
                        }
                    }
                }
            }
        }
    }


def apply_roles_to_chroot(
    root: Path,
    *,
    extra_vars: Mapping[str, Any],
    progress: ProgressSink | None = None,
    log: Path | None = None,
    timeout: float = 3600.0,
) -> ProvisionResult:
    """Apply site.yml to a debootstrapped Debian tree through the chroot connection.

    Services are enabled, never started; update-grub is skipped (the roles check the
    connection).  The build host role is off unless `extra_vars` turns it on.  Raises
    BrokenError naming the log when a task fails.
    """
    root = Path(root).resolve()
    if os.geteuid() != 0:
        raise BlockedError("applying the roles to an image directory needs root (chroot)")
    if not (root / "usr/bin/python3").exists():
        raise BlockedError(f"{root} has no /usr/bin/python3: debootstrap it with --include=python3")
    ev = {"xenpvh_build_host": False, **dict(extra_vars)}
    log = log or provision_log_path(f"chroot-{root.name}")
    with _no_service_starts(root):
        events = PlaybookRun(
            chroot_inventory(root),
            extra_vars=ev,
            log=log,
            progress=progress,
            timeout=timeout,
            label="applying the ansible roles to the image",
        ).run()
    result = recap_totals(events, log)
    if result.failed or result.unreachable or not result.ok:
        raise BrokenError(
            f"provisioning the image {root} failed: {result.failed} task(s) failed: "
            f"{result.describe_failures() or 'no task ran'} (log: {log})"
        )
    return result


__all__ = [
    "CHROOT_CONNECTION",
    "ProvisionResult",
    "apply_roles_to_chroot",
    "chroot_inventory",
    "ssh_inventory",
]
