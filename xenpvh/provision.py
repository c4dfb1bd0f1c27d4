"""Provisioning with the project's ansible roles (ansible/site.yml).

One definition for both worlds: `provision_ssh` turns a plain Debian 12 box into a Xen lab
host over ssh, `apply_roles_to_chroot` applies the same roles to the nested host's image
directory through ansible's chroot connection.  Both generate a throw-away inventory, run
`ansible-playbook` as an argv list (no shell), stream task names to an optional rich console
and read the counts from the PLAY RECAP.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.ssh_target import SSHAddress, resolve_target

ANSIBLE_DIR = Path(__file__).resolve().parent.parent / "ansible"
CHROOT_CONNECTION = "community.general.chroot"

# A build artifact as `xenpvh build xen` names it; the name becomes a GRUB menu title.
_XEN_ARTIFACT = re.compile(r"^xen-[A-Za-z0-9._+~-]+\.gz$")
_RECAP = re.compile(
    r"^(?P<host>\S.*?)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)"
)
_TASK = re.compile(r"^(?:TASK|RUNNING HANDLER) \[(?P<name>.*)\] \**$")
_RESULT = re.compile(r"^(?P<status>changed|fatal|failed|unreachable): \[(?P<host>[^\]]*)\]")
# ansible output is ours, but a task can echo remote text: keep memory bounded anyway.
_MAX_LINE = 4096
_TAIL_LINES = 40


@dataclass(frozen=True)
class RecapCounts:
    """One host's line of the PLAY RECAP."""

    ok: int
    changed: int
    unreachable: int
    failed: int


@dataclass(frozen=True)
class ProvisionResult:
    changed: int
    ok: int
    failed: int
    log: Path
    unreachable: int = 0


def parse_recap(text: str) -> dict[str, RecapCounts]:
    """The PLAY RECAP of an ansible-playbook run, per host; empty if there is none."""
    out: dict[str, RecapCounts] = {}
    in_recap = False
    for line in text.splitlines():
        if line.startswith("PLAY RECAP"):
            in_recap = True
            continue
        if in_recap:
            m = _RECAP.match(line.strip())
            if m:
                out[m["host"]] = RecapCounts(
                    ok=int(m["ok"]),
                    changed=int(m["changed"]),
                    unreachable=int(m["unreachable"]),
                    failed=int(m["failed"]),
                )
    return out


def ansible_playbook() -> str:
    """The ansible-playbook of this interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("ansible-playbook")
    if found is None:
        raise BlockedError(
            "ansible-playbook not found: install xenpvh's dev extra (ansible-core and the "
            "`ansible` bundle that carries community.general)"
        )
    return found


class PlaybookRun:
    """One `ansible-playbook site.yml` run against a generated inventory.

    The inventory and extra vars are JSON files (JSON is YAML) in a temp directory that is
    removed afterwards, so no value is ever parsed as ansible's INI syntax or by a shell.
    """

    def __init__(
        self,
        inventory: Mapping[str, Any],
        *,
        extra_vars: Mapping[str, Any],
        log: Path,
        progress: Console | None = None,
        ansible_dir: Path = ANSIBLE_DIR,
        timeout: float = 3600.0,
    ) -> None:
        self.inventory = inventory
        self.extra_vars = dict(extra_vars)
        self.log = log
        self.console = progress
        self.ansible_dir = ansible_dir
        self.timeout = timeout

    def argv(self, inventory_file: Path, vars_file: Path) -> list[str]:
        return [
            ansible_playbook(),
            "-i",
            str(inventory_file),
            "-e",
            f"@{vars_file}",
            str(self.ansible_dir / "site.yml"),
        ]

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "ANSIBLE_CONFIG": str(self.ansible_dir / "ansible.cfg"),
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_STDOUT_CALLBACK": "default",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "PYTHONUNBUFFERED": "1",
            "LANG": "C.UTF-8",
        }

    def run(self) -> dict[str, RecapCounts]:
        """Run the playbook; the recap per host.  Raises BrokenError when ansible ends
        without a recap (it crashed, or the playbook could not even start)."""
        if not (self.ansible_dir / "site.yml").is_file():
            raise BlockedError(f"no ansible/site.yml at {self.ansible_dir}")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="xenpvh-ansible-") as tmp:
            inv = Path(tmp) / "inventory.json"
            inv.write_text(json.dumps(self.inventory, indent=1))
            ev = Path(tmp) / "vars.json"
            ev.write_text(json.dumps(self.extra_vars, indent=1))
            rc, text, tail = self._stream(self.argv(inv, ev))
        recap = parse_recap(text)
        if not recap:
            raise BrokenError(
                f"ansible-playbook exited {rc} without a PLAY RECAP (log: {self.log}):\n"
                + "\n".join(tail)
            )
        return recap

    def _stream(self, argv: list[str]) -> tuple[int, str, list[str]]:
        recap_lines: list[str] = []
        tail: list[str] = []
        in_recap = False
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env(),
            cwd=self.ansible_dir,
            # Its own process group: a timeout or an interrupt ends ansible's ssh children too.
            start_new_session=True,
        )
        timed_out = threading.Event()

        def kill() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        def expire() -> None:
            timed_out.set()
            kill()

        timer = threading.Timer(self.timeout, expire)
        timer.start()
        try:
            assert proc.stdout is not None
            with self.log.open("w", buffering=1) as log, self._status() as status:
                log.write(f"# {shlex.join(argv)}\n")
                stdout = proc.stdout
                for raw in iter(lambda: stdout.readline(_MAX_LINE), b""):
                    line = raw.decode(errors="replace").rstrip()
                    log.write(line + "\n")
                    tail = [*tail[-(_TAIL_LINES - 1) :], line]
                    if line.startswith("PLAY RECAP"):
                        in_recap = True
                    if in_recap:
                        recap_lines.append(line)
                    self._show(line, status)
            rc = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                kill()
                proc.wait()
        if timed_out.is_set():
            raise BrokenError(
                f"ansible-playbook timed out after {self.timeout:.0f} s (log: {self.log})"
            )
        return rc, "\n".join(recap_lines), tail

    @contextlib.contextmanager
    def _status(self) -> Iterator[Callable[[str], None] | None]:
        if self.console is None:
            yield None
            return
        with self.console.status("provisioning…") as st:
            yield lambda text: st.update(text)

    def _show(self, line: str, status: Callable[[str], None] | None) -> None:
        if self.console is None or status is None:
            return
        m = _TASK.match(line)
        if m:
            status(f"provisioning: {m['name'][:120]}")
            return
        r = _RESULT.match(line)
        if r and r["status"] != "changed":
            self.console.log(f"[red]{r['status']}[/] {line[:300]}", markup=True, highlight=False)


def _log_path(name: str) -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:64]
    return Path(base) / "xenpvh" / "provision" / f"{stamp}-{safe}.log"


def _check_artifact(xen_artifact: Path | str | None) -> str | None:
    if xen_artifact is None:
        return None
    p = Path(xen_artifact).expanduser().resolve()
    if not _XEN_ARTIFACT.match(p.name):
        raise BlockedError(f"Xen artifact {p.name!r} is not named xen-<id>.gz")
    if not p.is_file():
        raise BlockedError(f"Xen artifact {p} does not exist")
    return str(p)


def _totals(recap: Mapping[str, RecapCounts], log: Path) -> ProvisionResult:
    return ProvisionResult(
        changed=sum(c.changed for c in recap.values()),
        ok=sum(c.ok for c in recap.values()),
        failed=sum(c.failed for c in recap.values()),
        unreachable=sum(c.unreachable for c in recap.values()),
        log=log,
    )


def ssh_inventory(
    target: SSHAddress, *, identity: Path | None = None, known_hosts: Path | None = None
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


def provision_ssh(
    address: str,
    *,
    identity: Path | None = None,
    known_hosts: Path | None = None,
    ssh_config: Path | None = None,
    xen_artifact: Path | str | None = None,
    extra_vars: Mapping[str, Any] | None = None,
    progress: Console | None = None,
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
    artifact = _check_artifact(xen_artifact)
    if artifact is not None:
        ev["xen_artifact"] = artifact
    inventory = ssh_inventory(
        target,
        identity=Path(identity).resolve() if identity else None,
        known_hosts=Path(known_hosts).resolve() if known_hosts else None,
    )
    log = log or _log_path(target.host)
    recap = PlaybookRun(inventory, extra_vars=ev, log=log, progress=progress, timeout=timeout).run()
    result = _totals(recap, log)
    if result.unreachable:
        raise BrokenError(f"{target.host}:{target.port} is unreachable over ssh (log: {log})")
    return result


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
    progress: Console | None = None,
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
    log = log or _log_path(f"chroot-{root.name}")
    with _no_service_starts(root):
        recap = PlaybookRun(
            chroot_inventory(root), extra_vars=ev, log=log, progress=progress, timeout=timeout
        ).run()
    result = _totals(recap, log)
    if result.failed or result.unreachable or not result.ok:
        raise BrokenError(
            f"provisioning the image {root} failed: {result.failed} task(s) failed (log: {log})"
        )
    return result
