"""The bisection as a library call: refs checked, history begun, host held, `git bisect run`
driven, the answer recorded.  Front ends (`xenpvh bisect`, `plan run --bisect`) reach it
through `xenpvh.plan.bisection`, which turns a plan point into the `BisectTarget` booted at
each step; this module knows no plans."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from xenpvh.bisect.driver import Bisector, BisectResult
from xenpvh.bisect.history import BisectHistory
from xenpvh.bisect.judge import BisectTarget, PointJudge, check_role, held_host
from xenpvh.host.base import Host
from xenpvh.host.request import HostRequest


def bisect(
    *,
    tree: str,
    good: str,
    bad: str,
    target: BisectTarget,
    role: str = "xen",
    host_spec: str = "nested",
    artifacts: Path = Path("bisect-runs"),
    host: Host | None = None,
    db: str | None = None,
) -> BisectResult:
    """The first bad commit of `tree` between `good` and `bad` for `target`.  Every step is
    recorded in the history `db` under a plan run of the bisection's own."""
    role = check_role(role)
    root = artifacts / time.strftime("%Y%m%d-%H%M%S")
    hreq = HostRequest(spec=host_spec)
    history = BisectHistory(db, target.plan, target.point, host_spec)
    judge = PointJudge(target, role, root, host=host, host_request=hreq, history=history)
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


__all__ = ["bisect"]
