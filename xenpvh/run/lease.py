"""Run leases on a host: each run claims its domain with a lease file in its run dir, and the
sweep destroys `xenpvh-` domains and removes run dirs whose lease expired (or that have none),
so concurrent runs leave each other alone and crashed runs' leftovers go."""

from __future__ import annotations

import json
import os
import re
import socket
import time

from xenpvh.host.base import Host

RUN_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}")
LEASE_FIND = ("-mindepth", "2", "-maxdepth", "2", "-name", "lease")
LEASE_FIND += ("-exec", "head", "-v", "-c", "4096", "--", "{}", "+")
# Seconds a run's lease outlives its own deadline (collect + destroy time).
LEASE_SLACK = 600.0
DOMAIN_PREFIX = "xenpvh-"


def write_lease(host: Host, run_dir: str, *, domain: str, run_id: str, timeout: float) -> None:
    """Claim our domain: a sweep by a concurrent run on this host leaves it alone until
    the lease expires (a crashed run's lease expires, so its leftovers get swept)."""
    lease = {
        "domain": domain,
        "run_id": run_id,
        "owner": f"{socket.gethostname()}:{os.getpid()}",
        "expires": time.time() + timeout + LEASE_SLACK,
    }
    host.put_bytes((json.dumps(lease) + "\n").encode(), f"{run_dir}/lease")


def live_and_stale(
    host: Host, remote_root: str, *, run_id: str, domain: str
) -> tuple[tuple[str, ...], list[str]]:
    """The sweep's reading of the host's leases: the domains still leased (ours included),
    which the sweep keeps, and the run dirs whose lease expired (or that have none)."""
    runs = f"{remote_root}/runs"
    # head -v labels every file, so a torn lease cannot run into the next one.
    r = host.run(
        ["find", runs, *LEASE_FIND],
        timeout=60,
    )
    live, stale_dirs = [domain], []
    for lease_run, text in parse_leases(r.out, runs):
        # A lease is data on the host: its run id must look like one of ours before it
        # names anything we keep or delete.
        if not RUN_ID.fullmatch(lease_run):
            continue
        try:
            expires = float(json.loads(text)["expires"])
        except (ValueError, KeyError, TypeError):
            expires = 0.0  # a torn lease: its run is not protected
        if expires > time.time():
            live.append(f"{DOMAIN_PREFIX}{lease_run}")
        elif lease_run != run_id:
            stale_dirs.append(f"{runs}/{lease_run}")
    return tuple(live), stale_dirs


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
