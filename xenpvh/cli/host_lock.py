"""`xenpvh host lock|unlock|who HOST`: a box's lease (`xenpvh.host.lock`) on the command line.

xenpvh host lock lab1 --reason "bisecting blkfront" --for 3h
xenpvh host who lab1
xenpvh host unlock lab1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from xenpvh.cli.console import err_console
from xenpvh.cli.dev import EXIT_PASS, add_reach_args, duration, host_request_from_args
from xenpvh.cli.progress import ProgressView
from xenpvh.host import lock
from xenpvh.run.dev_hosts import reach_host

DEFAULT_LOCK_FOR = "4h"


def add_host_lock_parsers(hsub: Any) -> None:
    """`host lock|unlock|who HOST`."""
    a = hsub.add_parser("lock", help="lease a whole host: other owners' runs wait or refuse")
    a.add_argument("host_spec", metavar="HOST", help="nested, local, ssh://user@host, alias")
    add_reach_args(a, required=False, positional=False)
    a.add_argument("--reason", default="", help="said to whoever finds the host held")
    a.add_argument(
        "--for",
        dest="ttl",
        type=duration,
        default=duration(DEFAULT_LOCK_FOR),
        metavar="DURATION",
        help=f"the lease expires after this (default {DEFAULT_LOCK_FOR})",
    )
    a.add_argument("--owner", default=None, help="who holds it (default user@machine)")
    a.add_argument(
        "--wait", type=duration, default=0.0, metavar="SECONDS", help="wait for a holder"
    )
    a.set_defaults(func=cmd_host_lock)
    a = hsub.add_parser("unlock", help="release your lease on a host")
    a.add_argument("host_spec", metavar="HOST")
    add_reach_args(a, required=False, positional=False)
    a.add_argument("--owner", default=None, help="whose lease (default user@machine)")
    a.add_argument("--force", action="store_true", help="remove whoever's lease it is")
    a.set_defaults(func=cmd_host_unlock)
    a = hsub.add_parser("who", help="who holds a host's lease")
    a.add_argument("host_spec", metavar="HOST")
    add_reach_args(a, required=False, positional=False)
    a.add_argument("--format", choices=["text", "json"], default="text")
    a.set_defaults(func=cmd_host_who)


def cmd_host_lock(args: argparse.Namespace) -> int:
    err = err_console()
    owner = args.owner or lock.default_owner()
    with reach_host(host_request_from_args(args.host_spec, args), ProgressView(err)) as host:
        current = lock.read_lease(host)
        if current is not None and current.owner == owner:
            lease = lock.renew(host, current, args.ttl)
            verb = "renewed"
        else:

            def waiting(holder: lock.HostLease) -> None:
                err.print(f"waiting: {escape(host.name)} is held by {escape(holder.describe())}")

            lease = lock.acquire(
                host,
                owner=owner,
                reason=args.reason,
                ttl=args.ttl,
                wait=args.wait,
                poll=min(5.0, max(0.5, args.wait / 10)),
                on_wait=waiting,
                pid=0,  # held until it expires or `host unlock`, not while we run
            )
            verb = "locked"
    err.print(f"{verb} {escape(host.name)}: {escape(lease.describe())}")
    return EXIT_PASS


def cmd_host_unlock(args: argparse.Namespace) -> int:
    err = err_console()
    owner = args.owner or lock.default_owner()
    with reach_host(host_request_from_args(args.host_spec, args), ProgressView(err)) as host:
        if args.force:
            gone = lock.force_release(host)
            err.print(
                f"unlocked {escape(host.name)}"
                + (f" (was {escape(gone.describe())})" if gone else " (it was free)")
            )
            return EXIT_PASS
        current = lock.read_lease(host)
        if current is None:
            err.print(f"{escape(host.name)} is not locked")
            return EXIT_PASS
        if current.owner != owner:
            raise lock.HostBusy(current)
        lock.release(host, current)
    err.print(f"unlocked {escape(host.name)}")
    return EXIT_PASS


def cmd_host_who(args: argparse.Namespace) -> int:
    err = err_console()
    with reach_host(host_request_from_args(args.host_spec, args), ProgressView(err)) as host:
        current = lock.read_lease(host)
        name = host.name
    if args.format == "json":
        body = dataclasses.asdict(current) if current is not None else None
        sys.stdout.write(json.dumps({"host": name, "lease": body}, indent=2) + "\n")
    elif current is None:
        print(f"{name}: free")
    else:
        Console(highlight=False, soft_wrap=True).print(
            Text(f"{name}: held by {current.describe()}")
        )
    return EXIT_PASS


__all__ = ["add_host_lock_parsers"]
