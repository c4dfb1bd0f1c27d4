"""A plan point bisected: the point's boot as a `BisectTarget` for `xenpvh.bisect`, the tree
a regression is bisected over, and a new failure bisected between its two runs' commits.

Plans sit above the bisection: the bisection boots whatever target it is given, and this
module is where a plan point becomes one (`xenpvh bisect` and `plan run --bisect` use it).
"""

from __future__ import annotations

import functools
from pathlib import Path

from xenpvh.bisect.driver import BisectResult
from xenpvh.bisect.judge import BisectTarget, check_role
from xenpvh.bisect.run import bisect
from xenpvh.history.regress import PointResult
from xenpvh.host.base import Host
from xenpvh.plan.loader import load_plan
from xenpvh.plan.model import Plan, PlanPoint
from xenpvh.plan.request import point_request


def point_target(plan: Plan, point: PlanPoint) -> BisectTarget:
    """What each step of a bisection of `point` boots: the point's request, with the step's
    kernel or command-line addition; for the xen role, the point's patch series and config."""
    return BisectTarget(
        plan=plan.name,
        point=point.id,
        request=functools.partial(point_request, point),
        xen_patches=tuple(point.xen.patches),
        xen_config=point.xen.config,
    )


def bisect_point(
    *,
    tree: str,
    good: str,
    bad: str,
    plan: str,
    point: str,
    role: str = "xen",
    host_spec: str = "nested",
    artifacts: Path = Path("bisect-runs"),
    host: Host | None = None,
    db: str | None = None,
) -> BisectResult:
    """`xenpvh bisect`: the first bad commit for the point `point` of the plan file `plan`."""
    role = check_role(role)  # the input alone, before the plan is read
    the_plan = load_plan(plan)
    target = point_target(the_plan, the_plan.point(point))
    return bisect(
        tree=tree, good=good, bad=bad, target=target, role=role, host_spec=host_spec,
        artifacts=artifacts, host=host, db=db,
    )  # fmt: skip


def bisect_target(point: PlanPoint) -> tuple[str | None, str]:
    """The tree a point's regression is bisected over, and its role."""
    xen, kernel = point.xen, point.kernel
    if xen.builds:
        return xen.tree, "xen"
    if kernel.tree:
        return kernel.tree, "kernel"
    if kernel.cmdline_repo:
        return kernel.cmdline_repo, f"cmdline-file:{kernel.cmdline_file}"
    return None, ""


def bisect_regression(
    regression: PointResult, plan_path: str, *, artifacts: Path, db: str | None = None
) -> BisectResult | None:
    """`plan run --bisect`: bisect a new failure between its previous and current runs'
    commits; None (nothing bisected) when the runs name no tree commits."""
    cur, prev = regression.current, regression.previous
    point = load_plan(plan_path).point(regression.point)
    tree, role = bisect_target(point)
    if not tree or cur is None or prev is None or not cur.tree_commit or not prev.tree_commit:
        return None
    return bisect_point(
        tree=tree, good=prev.tree_commit, bad=cur.tree_commit, plan=plan_path,
        point=regression.point, role=role, artifacts=artifacts, db=db,
    )  # fmt: skip


__all__ = ["bisect_point", "bisect_regression", "bisect_target", "point_target"]
