"""The nightly commands: `plan show|run`, `history`, `bisect` (registered by main.py)."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from xenpvh.cli.bisect import register as register_bisect
from xenpvh.cli.plan_run import run_plan_command
from xenpvh.errors import BlockedError
from xenpvh.history import open_store
from xenpvh.plan import load_plan


def register(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("plan", help="nightly plans: expand or run a matrix of boot points")
    psub = p.add_subparsers(dest="plan_command", required=True, parser_class=parser_class)
    s = psub.add_parser("show", help="expand a plan into its points")
    s.add_argument("plan", help="plan name (guestcfg/plans/NAME.toml) or path")
    s.add_argument("--format", choices=["text", "json"], default="text")
    s.set_defaults(func=cmd_plan_show)

    r = psub.add_parser(
        "run",
        help="run a plan on a pool of hosts (pytest-xdist), record history, report regressions",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("plan")
    r.add_argument(
        "--hosts",
        default="nested:1",
        help="the pool: nested:N, comma-separated ssh hosts / ~/.ssh/config names, "
        "inventory:FILE[:GROUP] (ansible INI/YAML inventory) or ssh-config[:FILE] (every Host "
        "alias) (default nested:1)",
    )
    r.add_argument("--db", default=None, help="history: postgresql://… or an SQLite file")
    r.add_argument("--baseline", default=None, help="compare against (default: the plan name)")
    r.add_argument("--out", default="plan-runs", help="directory of the plan runs' results")
    r.add_argument("--bisect", action="store_true", help="bisect each new failure found")
    r.add_argument(
        "--keep", type=int, default=None, metavar="N", help="keep N nights of artifacts in --out"
    )
    r.add_argument("--wait-host", type=float, default=0.0, help="seconds to wait for a leased host")
    r.add_argument("--format", choices=["text", "json"], default="text")
    r.set_defaults(func=cmd_plan_run)

    h = sub.add_parser("history", help="query the results history")
    h.add_argument("--db", default=None, help="postgresql://… or an SQLite file")
    h.add_argument("--point", default=None, help="a plan point id")
    h.add_argument("--verdict", choices=["pass", "fail", "broken", "blocked"], default=None)
    h.add_argument("--since", default=None, help="YYYY-MM-DD[THH:MM] (UTC)")
    h.add_argument("--until", default=None, help="YYYY-MM-DD[THH:MM] (UTC), exclusive")
    h.add_argument("--plan-run", default=None)
    h.add_argument("--limit", type=int, default=100)
    h.add_argument("--format", choices=["text", "json"], default="text")
    h.set_defaults(func=cmd_history)

    register_bisect(sub)


RUN_EPILOG = """\
exit status of `plan run` (whether there is a regression, not whether all passed):
  0  no regression       every point passes, or fails as it did last time (still failing)
  1  regression          a point that passed last time fails now (a new failure)
  2  blocked             the plan is wrong (named), nothing ran
  3  broken only         no regression, but points could not be decided (infrastructure)
  4  internal error
"""


def _since(text: str | None, what: str) -> float | None:
    if text is None:
        return None
    try:
        dt = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise BlockedError(f"{what}: not a date (YYYY-MM-DD[THH:MM]): {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return dt.timestamp()


def _out() -> Console:
    # A pipe or a CI log gets whole lines, not a table squeezed to 80 columns.
    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 220)


def cmd_plan_show(args: argparse.Namespace) -> int:
    plan = load_plan(args.plan)
    if args.format == "json":
        doc = {
            "plan": plan.name,
            "path": plan.path,
            "description": plan.description,
            "xen": [x.__dict__ | {"patches": list(x.patches)} for x in plan.xen_builds],
            "kernels": [k.__dict__ for k in plan.kernels],
            "points": [p.as_dict() for p in plan.points],
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    table = Table(
        title=f"plan {escape(plan.name)}: {len(plan.points)} points", title_justify="left"
    )
    for col in (
        "point",
        "toolstack",
        "vcpus",
        "MiB",
        "disks",
        "vifs",
        "xen",
        "kernel",
        "att.",
        "timeout",
    ):
        table.add_column(col)
    for p in plan.points:
        table.add_row(
            escape(p.id),
            p.toolstack,
            str(p.vcpus),
            str(p.memory_mb),
            str(p.disks),
            str(p.vifs),
            escape(p.xen.name),
            escape(p.kernel.name),
            str(p.attempts),
            f"{p.timeout:g}s",
        )
    _out().print(table)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    since, until = _since(args.since, "--since"), _since(args.until, "--until")
    if args.limit < 1:
        raise BlockedError(f"--limit must be at least 1, not {args.limit}")
    with open_store(args.db) as store:
        runs = store.runs(
            point=args.point,
            verdict=args.verdict,
            since=since,
            until=until,
            plan_run_id=args.plan_run,
            limit=args.limit,
            details=args.format == "json",
        )
    if args.format == "json":
        sys.stdout.write(json.dumps({"runs": [r.as_dict() for r in runs]}, indent=2) + "\n")
        return 0
    table = Table(title=f"{len(runs)} runs", title_justify="left")
    for col in ("started (UTC)", "point", "verdict", "stage", "host", "plan run", "report"):
        table.add_column(col)
    for r in runs:
        when = datetime.datetime.fromtimestamp(r.started_at, datetime.UTC)
        table.add_row(
            when.strftime("%Y-%m-%d %H:%M:%S"),
            escape(r.point),
            r.verdict,
            escape(r.failed_stage or ""),
            escape(r.host or ""),
            escape(r.plan_run_id or ""),
            escape(r.report or ""),
        )
    _out().print(table)
    return 0


def cmd_plan_run(args: argparse.Namespace) -> int:
    return run_plan_command(args)


__all__ = ["register"]
