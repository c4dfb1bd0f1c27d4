"""`xenpvh bisect`: arguments -> a Bisector with the real judge -> the first bad commit."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.markup import escape

from xenpvh.errors import BlockedError

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


def bisect(
    *,
    tree: str,
    good: str,
    bad: str,
    plan: str,
    point: str,
    role: str = "xen",
    host_spec: str = "nested",
    artifacts: Path = Path("bisect-runs"),
    host: Any = None,
    db: str | None = None,
) -> Any:
    """Library entry (the CLI and `plan run --bisect`): the BisectResult.  Every step is
    recorded in the history `db` under a plan run of the bisection's own."""
    from xenpvh.bisect.driver import Bisector
    from xenpvh.bisect.history import BisectHistory
    from xenpvh.bisect.judge import PointJudge, check_role, held_host
    from xenpvh.host.request import HostRequest
    from xenpvh.plan import load_plan

    role = check_role(role)
    the_plan = load_plan(plan)
    the_point = the_plan.point(point)
    root = artifacts / time.strftime("%Y%m%d-%H%M%S")
    hreq = HostRequest(spec=host_spec)
    history = BisectHistory(db, the_plan.name, the_point.id, host_spec)
    judge = PointJudge(the_point, role, root, host=host, host_request=hreq, history=history)
    # Refs are checked by the input alone, before the history or any host is touched.
    bisector = Bisector(tree, good, bad, judge)
    # The history next: a database that cannot be written is refused before a host boots.
    history.begin(tree, good, bad)
    try:
        with contextlib.ExitStack() as stack:
            if judge.host is None and role != "xen":
                judge.host = stack.enter_context(held_host(hreq, root / "host"))
            result = bisector.run()
    except BaseException as e:
        history.finish(None, error=f"{type(e).__name__}: {e}")
        raise
    result.plan_run_id = history.plan_run_id
    history.finish(result)
    return result


def cmd_bisect(args: argparse.Namespace) -> int:
    result = bisect(
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


def show(result: Any, fmt: str) -> None:
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
    from rich.console import Console

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


def run_bisect_from_plan(regression: Any, plan_path: str, args: argparse.Namespace) -> None:
    """`plan run --bisect`: bisect a new failure when its runs name the tree's commits."""
    from xenpvh.cli.console import err_console
    from xenpvh.plan import load_plan

    err = err_console()
    cur, prev = regression.current, regression.previous
    from xenpvh.cli.plan_run import bisect_target

    point = load_plan(plan_path).point(regression.point)
    tree, role = bisect_target(point)
    if not tree or not cur.tree_commit or not prev.tree_commit:
        err.print(f"bisect {escape(regression.point)}: the runs name no tree commits; skipped")
        return
    result = bisect(
        tree=tree, good=prev.tree_commit, bad=cur.tree_commit, plan=plan_path,
        point=regression.point, role=role, artifacts=Path(args.out) / "bisect", db=args.db,
    )  # fmt: skip
    show(result, "text")


__all__ = ["bisect", "cmd_bisect", "register", "run_bisect_from_plan"]
