"""Shared fakes and helpers of the test suite (the fakes of Xen hosts live beside their own
tests, in test_toolstack_fakes.py; conftest.py makes them the `host` fixture)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from xenpvh.host.base import CommandResult
from xenpvh.run.lease import CONSOLE_LOG_DIR, DOMAIN_PREFIX
from xenpvh.run.remote import REMOTE_ROOT
from xenpvh.util.owner import Owner


class FakeClock:
    """A monotonic clock the test moves by hand (`clock.now += seconds`)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def remove_tree(root: Path) -> None:
    """Remove a debootstrapped tree, unmounting first what an interrupted debootstrap left
    mounted inside it (proc, sys, a bind-mounted /dev): rmtree must never walk into those."""
    prefix = str(root.resolve()) + "/"
    mounts = [
        line.split()[1]
        for line in Path("/proc/mounts").read_text().splitlines()
        if line.split()[1].startswith(prefix)
    ]
    for m in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", m], check=False)
    if any(
        ln.split()[1].startswith(prefix) for ln in Path("/proc/mounts").read_text().splitlines()
    ):
        raise RuntimeError(f"cannot unmount everything below {root}; not removing it")
    shutil.rmtree(root, ignore_errors=True)


class LeakHost:
    """A Xen host as the leak check reads it: `xl list` shows `domains`, and `find` walks
    `files` (path -> bytes) for run dirs, console logs and run leases.  Any other command
    is an error: the leak check must not do more than read."""

    name = "leak-host"

    def __init__(self) -> None:
        self.domains: list[str] = ["Domain-0"]
        self.files: dict[str, bytes] = {}
        self.calls: list[tuple[str, ...]] = []

    def start_run(self, run_id: str, owner: Owner, *, detached: bool = False) -> None:
        """What a run leaves while it runs: its lease, its console log and its domain."""
        lease: dict[str, object] = {
            "domain": f"{DOMAIN_PREFIX}{run_id}",
            "run_id": run_id,
            "owner": owner.name,
            "owner_machine": owner.machine,
            "owner_pid": owner.pid,
            "owner_started": owner.started,
            "expires": time.time() + 3600,
        }
        if detached:
            lease["detached"] = True
        self.files[f"{REMOTE_ROOT}/runs/{run_id}/lease"] = json.dumps(lease).encode()
        self.files[f"{CONSOLE_LOG_DIR}/guest-{DOMAIN_PREFIX}{run_id}.log"] = b"console\n"
        self.domains.append(f"{DOMAIN_PREFIX}{run_id}")

    def run(self, argv: Sequence[str], **kw: object) -> CommandResult:
        argv = tuple(str(a) for a in argv)
        self.calls.append(argv)
        if argv[:2] == ("xl", "list") and len(argv) == 2:
            rows = [f"{n} {i} 256 1 -b---- 0.1\n" for i, n in enumerate(self.domains)]
            return self._ok("Name ID Mem VCPUs State Time(s)\n" + "".join(rows))
        if argv[0] == "find" and "-exec" in argv:  # the run leases, as `head -v` prints them
            runs = argv[1].rstrip("/") + "/"
            hits = [p for p in sorted(self.files) if p.startswith(runs) and p.endswith("/lease")]
            return self._ok("".join(f"==> {p} <==\n{self.files[p].decode()}\n" for p in hits))
        if argv[0] == "find" and argv[-1] == "-print":  # ROOT... -mindepth 1 -maxdepth 1
            roots = [r.rstrip("/") + "/" for r in argv[1 : argv.index("-mindepth")]]
            children = {
                r + p[len(r) :].split("/")[0] for r in roots for p in self.files if p.startswith(r)
            }
            return self._ok("".join(f"{c}\n" for c in sorted(children)))
        raise AssertionError(f"LeakHost: unexpected command {argv}")

    @staticmethod
    def _ok(out: str) -> CommandResult:
        return CommandResult(("fake",), 0, out.encode(), b"")


__all__ = ["FakeClock", "LeakHost", "remove_tree"]
