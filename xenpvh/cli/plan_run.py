"""`xenpvh plan run`: arguments -> a PlanRunner -> what the user sees (and the exit code)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from xenpvh.cli.bisect import run_bisect_from_plan
from xenpvh.cli.console import err_console
from xenpvh.errors import BlockedError
from xenpvh.history.regress import Category, PointResult
from xenpvh.plan.bisection import bisect_target
from xenpvh.plan.loader import load_plan
from xenpvh.plan.pool import parse_pool
from xenpvh.plan.runner import PlanRunner


def run_plan_command(args: argparse.Namespace) -> int:
    err = err_console()
    # Everything the input alone decides, before any build or host.
    load_plan(args.plan)
    parse_pool(args.hosts)
    if args.keep is not None and args.keep < 1:
        raise BlockedError(f"--keep must be at least 1, not {args.keep}")
    as_json = args.format == "json"

    def show(line: str) -> None:
        if not as_json:
            err.print(escape(line), soft_wrap=True, highlight=False)

    runner = PlanRunner(
        plan=args.plan,
        hosts=args.hosts,
        db=args.db,
        baseline=args.baseline,
        out_root=Path(args.out),
        wait_host=float(getattr(args, "wait_host", 0.0) or 0.0),
        keep=args.keep,
        on_line=show,
    )
    result = runner.run()
    bisects = [bisect_command(r, result.plan.path, args.db) for r in result.regressions()]
    doc = {
        "plan": result.plan.name,
        "plan_run": result.plan_run.id,
        "baseline": result.plan_run.baseline,
        "exit_code": result.exit_code,
        "wall_s": round(result.wall_s, 1),
        "passes": result.passes,
        "spread": result.spread(),
        "files": {k: str(v) for k, v in result.files.items()},
        "points": [
            {
                "point": r.point,
                "category": str(r.category),
                "note": r.note,
                "verdict": r.current.verdict if r.current else None,
                "host": r.current.host if r.current else None,
                "report": r.current.report if r.current else None,
            }
            for r in result.results
        ],
        "bisect": [b for b in bisects if b],
    }
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        out = Console(highlight=False, soft_wrap=True)
        for r in result.results:
            style = {Category.NEW_FAILURE: "bold red", Category.FIXED: "green"}.get(r.category, "")
            tag = f"[{style}]{r.category}[/]" if style else str(r.category)
            out.print(f"{tag:<20} {escape(r.point)}  {escape(r.note)}")
        out.print(
            f"plan run {escape(result.plan_run.id)}: {len(result.results)} points in "
            f"{result.wall_s:.1f}s; per host: {escape(json.dumps(result.spread()))}; "
            f"summary {escape(str(result.files.get('summary.html')))}"
        )
        for b in bisects:
            if b:
                out.print(f"bisect it: {escape(b)}")
    if args.bisect:
        for r in result.regressions():
            run_bisect_from_plan(r, result.plan.path, args)
    return result.exit_code


def bisect_command(result: PointResult, plan_path: str, db: str | None = None) -> str | None:
    """The `xenpvh bisect` command for a new failure, when both runs name a tree commit (with
    the plan run's `--db`, so the bisection lands in the same history)."""
    cur, prev = result.current, result.previous
    if cur is None or prev is None or not cur.tree_commit or not prev.tree_commit:
        return None
    tree, role = bisect_target(load_plan(plan_path).point(result.point))
    if not tree:
        return None
    return shlex.join(
        [
            "xenpvh", "bisect", "--tree", tree, "--good", prev.tree_commit,
            "--bad", cur.tree_commit, "--plan", plan_path, "--point", result.point,
            "--role", role, *(["--db", db] if db else []),
        ]
    )  # fmt: skip


__all__ = ["bisect_command", "run_plan_command"]
