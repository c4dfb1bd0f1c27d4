"""How a plan's points spread over a host pool: the real `xenpvh plan run` machinery (the
plan runner, pytest-xdist, PoolScheduling, the history) with fake hosts behind the plan's
PoolDriver hook (tests/plan_sim.py), so the spread is the scheduler's own.

    .venv/bin/python bench/plan_spread.py [--hosts 4] [--points-plan tests/plans/forty.toml]
                                          [--seconds 0.5] [--break-after 5] [--json]

Each fake boot takes --seconds (the live linux-pvh run is ~30 s; scale accordingly).
--break-after N kills host h2 at its N-th point (0: no host breaks): its points go to the
others.  Prints points per host, passes, wall time and the ideal wall (points x seconds /
hosts) for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--plan", default=str(ROOT / "tests/plans/forty.toml"))
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--break-after", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from xenpvh.plan.runner import PlanRunner

    sim: dict[str, object] = {"seconds": args.seconds}
    if args.break_after:
        sim["break_after"] = {"h2": args.break_after}
    os.environ["XENPVH_PLAN_SIM"] = json.dumps(sim)
    hosts = ",".join(f"h{i}" for i in range(1, args.hosts + 1))
    with tempfile.TemporaryDirectory(prefix="xenpvh-spread-") as tmp:
        t0 = time.monotonic()
        result = PlanRunner(
            plan=args.plan,
            hosts=hosts,
            db=str(Path(tmp) / "history.sqlite"),
            out_root=Path(tmp) / "runs",
            pytest_args=["-p", "tests.plan_sim"],
            env={"PYTHONPATH": str(ROOT)},
        ).run()
        wall = time.monotonic() - t0
    points = len(result.results)
    doc = {
        "points": points,
        "hosts": args.hosts,
        "seconds_per_point": args.seconds,
        "broken_host": "h2" if args.break_after else None,
        "spread": dict(sorted(result.spread().items())),
        "passes": result.passes,
        "wall_s": round(wall, 1),
        "ideal_wall_s": round(points * args.seconds / args.hosts, 1),
        "categories": sorted({str(r.category) for r in result.results}),
    }
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"{points} points over {args.hosts} hosts, {args.seconds}s per point")
        for host, n in doc["spread"].items():  # type: ignore[union-attr]
            print(f"  {host}: {n:3d} {'#' * n}")
        for p in result.passes:
            print(
                f"  pass {p['pass']}: {p['points']} points on {','.join(p['hosts'])} "
                f"in {p['seconds']}s; broken: {','.join(p['broken_hosts']) or '-'}"
            )  # type: ignore[arg-type]
        print(f"  wall {doc['wall_s']}s (ideal {doc['ideal_wall_s']}s + pytest-xdist start-up)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
