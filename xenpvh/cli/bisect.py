"""`xenpvh bisect`: arguments -> `plan.bisection.bisect_point` -> the first bad commit, drawn.

The bisection itself is library code (`xenpvh.bisect.run`, reached through
`xenpvh.plan.bisection`, which turns a plan point into what each step boots)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from xenpvh.bisect.driver import BisectResult
from xenpvh.cli.console import err_console
from xenpvh.errors import BlockedError
from xenpvh.history.regress import PointResult
from xenpvh.plan.bisection import bisect_point, bisect_regression

EXIT_FOUND, EXIT_NOT_FOUND, EXIT_BLOCKED = 0, 1, 2


def register(sub: Any) -> None:
    b = sub.add_parser(
        "bisect",
        help="find the commit that broke a plan point (git bisect run: build, boot, verdict)",
    )
    b.add_argument("--tree", required=True, help="git:URL or a local repository")
    b.add_argument("--good", required=True, help="a commit where the point passes")
    b.add_argument("--bad", required=True, help="a commit where it fails")
    b.add_argument("--plan", required=True, help="the plan the point belongs to")
    b.add_argument("--point", required=True, help="the point's id (`xenpvh plan show`)")
    b.add_argument(
        "--role",
        default="xen",
        help="what the tree is: xen (default), kernel, or cmdline-file:PATH (a guest-side "
        "repository whose file PATH is added to the kernel command line)",
    )
    b.add_argument("--host", default="nested", help="the host to boot on (default nested)")
    b.add_argument("--artifacts", default="bisect-runs", help="where each step's run goes")
    b.add_argument(
        "--db",
        default=None,
        help="history (postgresql://… or an SQLite file; default: the cache's): the "
        "bisection is recorded as a plan run of its own, one run per step",
    )
    b.add_argument("--format", choices=["text", "json"], default="text")
    b.set_defaults(func=cmd_bisect)


def cmd_bisect(args: argparse.Namespace) -> int:
    result = bisect_point(
        tree=args.tree,
        good=args.good,
        bad=args.bad,
        plan=args.plan,
        point=args.point,
        role=args.role,
        host_spec=args.host,
        artifacts=Path(args.artifacts),
        db=args.db,
    )
    show(result, args.format)
    if result.stopped:
        raise BlockedError(f"bisection stopped: {result.stopped}")
    return EXIT_FOUND if result.first_bad else EXIT_NOT_FOUND


def show(result: BisectResult, fmt: str) -> None:
    doc = {
        "first_bad": result.first_bad,
        "candidates": result.candidates,
        "stage": result.stage,
        "stopped": result.stopped,
        "boots": result.boots,
        "plan_run": result.plan_run_id,
        "steps": [
            {
                "commit": s.commit,
                "verdict": s.outcome.verdict,
                "failed_stage": s.outcome.failed_stage,
                "mark": str(s.mark),
                "note": s.note,
                "seconds": round(s.seconds, 1),
                "artifacts": s.outcome.artifacts,
            }
            for s in result.steps
        ],
    }
    if fmt == "json":
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    out = Console(highlight=False, soft_wrap=True)
    for s in doc["steps"]:
        out.print(
            f"{s['commit'][:12]}  {s['verdict']:<7} {escape(str(s['failed_stage'] or '')):<12} "
            f"{escape(s['mark'])}  {s['seconds']}s  {escape(s['note'])}"
        )
    if result.first_bad:
        out.print(f"first bad commit: {result.first_bad} (fails at {escape(str(result.stage))})")
    elif result.candidates:
        out.print("first bad commit is one of: " + ", ".join(result.candidates))
    if result.plan_run_id:
        out.print(f"history: xenpvh history --plan-run {escape(result.plan_run_id)}")


def run_bisect_from_plan(regression: PointResult, plan_path: str, args: argparse.Namespace) -> None:
    """`plan run --bisect`: bisect a new failure when its runs name the tree's commits."""
    result = bisect_regression(
        regression, plan_path, artifacts=Path(args.out) / "bisect", db=args.db
    )
    if result is None:
        err_console().print(
            f"bisect {escape(regression.point)}: the runs name no tree commits; skipped"
        )
        return
    show(result, "text")


__all__ = ["cmd_bisect", "register", "run_bisect_from_plan", "show"]
