"""Run leases on a host: each run claims its domain with a lease file in its run dir, and the
sweep destroys `xenpvh-` domains and removes run dirs whose lease ended (or that have none),
so concurrent runs leave each other alone and crashed runs' leftovers go.

A lease ends when it expires, or at once when its owner is a process of *this* machine (same
boot, same PID namespace) that is no longer running: a run killed with SIGKILL is reclaimed
by the next run instead of holding its domain for the run timeout + `LEASE_SLACK`.  Owners
on other machines are judged by expiry alone.  A lease marked `detached` (a domain kept on
purpose after its process ended) is honoured until it expires.

The sweep also removes, once they are older than `ORPHAN_AGE`, run dirs that never got a
lease and the dom0 console logs (`/var/log/xen/console/guest-xenpvh-*.log`) of domains no
lease holds.
"""

from __future__ import annotations

import json
import re
import time

from xenpvh.host.base import Host
from xenpvh.util.owner import current_owner, process_start, this_machine

RUN_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}")
LEASE_FIND = ("-mindepth", "2", "-maxdepth", "2", "-name", "lease")
LEASE_FIND += ("-exec", "head", "-v", "-c", "4096", "--", "{}", "+")
# Seconds a run's lease outlives its own deadline (collect + destroy time).
LEASE_SLACK = 600.0
DOMAIN_PREFIX = "xenpvh-"
# xenconsoled's guest logs (XENCONSOLED_TRACE=guest), one per domain name.
CONSOLE_LOG_DIR = "/var/log/xen/console"
CONSOLE_LOG = re.compile(rf"guest-{DOMAIN_PREFIX}({RUN_ID.pattern})\.log")
# Minutes after which a run dir without a lease, or a console log no lease holds, is swept.
ORPHAN_AGE_MIN = 30


def owner_gone(lease: dict[str, object], *, machine: str | None = None) -> bool:
    """True when the lease's owner is a process of this machine that no longer runs."""
    if lease.get("detached") is True:
        return False
    try:
        pid = int(lease["owner_pid"])  # type: ignore[arg-type]
        started = int(lease["owner_started"])  # type: ignore[arg-type]
        their_machine = str(lease["owner_machine"])
    except (KeyError, TypeError, ValueError):
        return False  # an older lease, or another tool's: expiry decides
    if their_machine != (machine or this_machine()) or not their_machine.split("/")[0]:
        return False
    return process_start(pid) != started


def write_lease(
    host: Host,
    run_dir: str,
    *,
    domain: str,
    run_id: str,
    timeout: float,
    detached: bool = False,
) -> None:
    """Claim our domain: a sweep by a concurrent run on this host leaves it alone until
    the lease expires or its owner (this process) is gone.  `detached`: the domain outlives
    this process on purpose (a guest kept by `xenpvh dev`), so only the expiry ends it."""
    owner = current_owner()
    lease: dict[str, object] = {
        "domain": domain,
        "run_id": run_id,
        "owner": owner.name,
        "owner_machine": owner.machine,
        "owner_pid": owner.pid,
        "owner_started": owner.started,
        "expires": time.time() + timeout + LEASE_SLACK,
    }
    if detached:
        lease["detached"] = True
    host.put_bytes((json.dumps(lease) + "\n").encode(), f"{run_dir}/lease")


def lease_live(text: str, *, now: float, machine: str) -> bool:
    try:
        lease = json.loads(text)
        expires = float(lease["expires"])
    except (ValueError, KeyError, TypeError):
        return False  # a torn lease: its run is not protected
    if not isinstance(lease, dict) or not expires > now:
        return False
    return not owner_gone(lease, machine=machine)


def live_and_stale(
    host: Host, remote_root: str, *, run_id: str, domain: str
) -> tuple[tuple[str, ...], list[str]]:
    """The sweep's reading of the host: the domains still leased (ours included), which
    the sweep keeps, and the paths to remove: run dirs whose lease ended, run dirs without
    a lease and console logs no lease holds (both once older than ORPHAN_AGE_MIN)."""
    runs = f"{remote_root}/runs"
    # head -v labels every file, so a torn lease cannot run into the next one.
    r = host.run(["find", runs, *LEASE_FIND], timeout=60)
    now, machine = time.time(), this_machine()
    live, stale = [domain], []
    leased: set[str] = {run_id}
    for lease_run, text in parse_leases(r.out, runs):
        # A lease is data on the host: its run id must look like one of ours before it
        # names anything we keep or delete.
        if not RUN_ID.fullmatch(lease_run):
            continue
        leased.add(lease_run)
        if lease_live(text, now=now, machine=machine):
            live.append(f"{DOMAIN_PREFIX}{lease_run}")
        elif lease_run != run_id:
            stale.append(f"{runs}/{lease_run}")
            stale.append(f"{CONSOLE_LOG_DIR}/guest-{DOMAIN_PREFIX}{lease_run}.log")
    live_runs = {d.removeprefix(DOMAIN_PREFIX) for d in live}
    stale += _orphans(host, runs, leased=leased, live_runs=live_runs)
    return tuple(live), stale


def _orphans(host: Host, runs: str, *, leased: set[str], live_runs: set[str]) -> list[str]:
    """Old run dirs without a lease and old console logs of domains no lease holds."""
    r = host.run(
        [
            "find",
            runs,
            CONSOLE_LOG_DIR,
            "-mindepth",
            "1",
            "-maxdepth",
            "1",
            "-mmin",
            f"+{ORPHAN_AGE_MIN}",
            "-print",
        ],
        timeout=60,
    )
    out: list[str] = []
    for path in r.out.splitlines():
        parent, _, name = path.rpartition("/")
        if parent == runs and RUN_ID.fullmatch(name) and name not in leased:
            out.append(path)
        elif parent == CONSOLE_LOG_DIR:
            m = CONSOLE_LOG.fullmatch(name)
            if m and m.group(1) not in live_runs:
                out.append(path)
    return out


def parse_leases(out: str, runs: str) -> list[tuple[str, str]]:
    """(run id, lease text) from `head -v` output of <runs>/<id>/lease files."""
    found: list[tuple[str, str]] = []
    header = re.compile(rf"^==> {re.escape(runs)}/([^/]+)/lease <==$")
    current: str | None = None
    body: list[str] = []
    for line in [*out.splitlines(), "==> <end> <=="]:
        if line.startswith("==> ") and line.endswith(" <=="):
            if current is not None:
                found.append((current, "\n".join(body).strip()))
            m = header.match(line)
            current, body = (m.group(1) if m else None), []
        elif current is not None:
            body.append(line)
    return found
