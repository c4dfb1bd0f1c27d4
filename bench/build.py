"""Benchmark patched-tree Xen builds: xenpvh's overhead over plain make, and cache-hit latency.

    .venv/bin/python bench/build.py [--spec guestcfg/patches/xen/sample.toml] [--hits 20] [--json]

1. plain: the same source state with the same patches (fetched and patched by xenpvh into a
   temp dir), then `make -C xen defconfig && make -C xen -j2`, timed.
2. xenpvh: `build_xen(spec)` into a throw-away cache (a true miss: fetch, patch, configure,
   build, collect), timed.  Target: ratio = xenpvh's configure+build+collect over plain's
   defconfig+make <= 1.05 (the same work); ratio_total also counts fetch and patch, which
   plain does not time.
3. cache hit: `build_xen(spec)` again, N times; median and max latency.

The machine is shared, so the plain and xenpvh builds run back to back and the load average
is printed with the figures: compare them only when the load was similar.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from xenpvh.build import source
from xenpvh.build.builder import build_xen
from xenpvh.build.cache import ArtifactCache
from xenpvh.build.patching import apply_series
from xenpvh.build.tree import TreeSpec

REPO = Path(__file__).resolve().parent.parent


def plain_build(spec: TreeSpec, work: Path, jobs: int) -> float:
    state = source.resolve(spec)
    tree = work / "plain"
    source.fetch(spec, state, tree)
    apply_series(tree, spec.patches)
    start = time.monotonic()
    for argv in (["make", "-C", "xen", "defconfig"], ["make", "-C", "xen", f"-j{jobs}"]):
        subprocess.run(argv, cwd=tree, check=True, stdout=subprocess.DEVNULL)
    took = time.monotonic() - start
    shutil.rmtree(tree, ignore_errors=True)
    return took


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--spec", type=Path, default=REPO / "guestcfg/patches/xen/sample.toml")
    ap.add_argument("--hits", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    console = Console(stderr=True)
    spec = TreeSpec.from_toml(args.spec)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="xenpvh-bench-build-") as tmp:
        work = Path(tmp)
        load_before = os.getloadavg()[0]
        console.log("plain make build ...")
        figures["plain_s"] = plain_build(spec, work, args.jobs)
        load_mid = os.getloadavg()[0]
        console.log(f"plain: {figures['plain_s']:.1f} s; xenpvh build (cache miss) ...")
        cache = ArtifactCache(work / "cache")
        start = time.monotonic()
        miss = build_xen(spec, jobs=args.jobs, cache=cache)
        figures["xenpvh_s"] = time.monotonic() - start
        elapsed = json.loads((miss.cache.path / "manifest.json").read_text())["elapsed"]
        # Same work as plain (configure + make) plus collecting/hashing the artifacts.
        figures["xenpvh_make_s"] = sum(elapsed[k] for k in ("configure", "build", "collect"))
        figures["xenpvh_fetch_patch_s"] = elapsed["fetch"] + elapsed["patch"]
        load_after = os.getloadavg()[0]
        assert not miss.cache.hit
        hits = []
        for _ in range(args.hits):
            start = time.monotonic()
            hit = build_xen(spec, jobs=args.jobs, cache=cache)
            hits.append(time.monotonic() - start)
            assert hit.cache.hit
        figures["hit_median_s"] = statistics.median(hits)
        figures["hit_max_s"] = max(hits)
    figures["ratio"] = figures["xenpvh_make_s"] / figures["plain_s"]
    figures["ratio_total"] = figures["xenpvh_s"] / figures["plain_s"]
    figures["load_before"] = load_before
    figures["load_mid"] = load_mid
    figures["load_after"] = load_after
    if args.json:
        print(json.dumps({k: round(v, 3) for k, v in figures.items()}))
    else:
        table = Table(title="Xen build: xenpvh vs plain make")
        table.add_column("figure")
        table.add_column("value", justify="right")
        for key, value in figures.items():
            table.add_row(key, f"{value:.3f}")
        Console().print(table)
    return 0 if figures["ratio"] <= 1.05 else 1


if __name__ == "__main__":
    sys.exit(main())
