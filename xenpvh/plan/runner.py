"""One plan run: builds once, then passes of a pytest-xdist session over the pool, then the
comparison with the last run of each point (history), the JUnit file and the HTML summary.

    load plan + pool (blocked before anything else) ─► plan run row in the history
      ─► builds (each Xen build and kernel tree once; the build room's cache)
      ─► pass 1: pytest -n <hosts> over every point ─► pass 2..: the points left without a
         decided run, on the hosts still healthy ─► compare ─► plan-junit.xml, summary.html
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xenpvh.bisect.judge import read_cmdline
from xenpvh.build.builder import build_linux, build_xen
from xenpvh.build.tree import TreeSpec
from xenpvh.errors import BlockedError
from xenpvh.history.regress import Category, PointResult, compare, exit_code, final_runs
from xenpvh.history.store import HistoryStore, PlanRunRecord, open_store
from xenpvh.plan.loader import load_plan
from xenpvh.plan.model import Plan
from xenpvh.plan.pool import PoolHost, parse_pool
from xenpvh.plan.pytest_plan import POINTS_MODULE
from xenpvh.plan.spec import PassSpec, _safe, broken_hosts
from xenpvh.report.plan_summary import render_plan_html, render_plan_junit
from xenpvh.util.fs import atomic_write_text

log = logging.getLogger(__name__)

PYTEST_INI = """\
[pytest]
addopts = -p no:cacheprovider
junit_family = xunit2
"""


@dataclass
class PlanRunResult:
    plan: Plan
    plan_run: PlanRunRecord
    out: Path
    results: list[PointResult]
    passes: list[dict[str, object]] = field(default_factory=list)
    wall_s: float = 0.0
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return exit_code(self.results)

    def spread(self) -> dict[str, int]:
        """Points decided per host."""
        out: dict[str, int] = {}
        for r in self.results:
            if r.current is not None and r.current.host is not None:
                out[r.current.host] = out.get(r.current.host, 0) + 1
        return out

    def regressions(self) -> list[PointResult]:
        return [r for r in self.results if r.category is Category.NEW_FAILURE]


@dataclass
class PlanRunner:
    """Run `plan` on `hosts`; `pytest_args` are added to every pass (e.g. `-p PLUGIN`)."""

    plan: str
    hosts: str = "nested:1"
    db: str | None = None
    baseline: str | None = None
    out_root: Path = Path("plan-runs")
    pytest_args: Sequence[str] = ()
    wait_host: float = 0.0
    env: dict[str, str] | None = None
    on_line: Callable[[str], None] | None = None  # each line pytest prints
    max_passes: int | None = None
    keep: int | None = None  # nights of this plan's artifacts kept under out_root

    def run(self) -> PlanRunResult:
        t0 = time.monotonic()
        plan = load_plan(self.plan)
        pool = parse_pool(self.hosts)
        baseline = self.baseline or plan.name
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        run_id = f"{plan.name}-{stamp}-{os.getpid()}"
        out = self.out_root / run_id
        out.mkdir(parents=True, exist_ok=True)
        with open_store(self.db) as store:
            record = PlanRunRecord(
                run_id, plan.name, baseline, time.time(), hosts=",".join(h.name for h in pool)
            )
            store.begin_plan_run(record)
        xen_images, kernels, facts = self._builds(plan)
        cmdlines = self._cmdline_repos(plan, facts)
        result = PlanRunResult(plan, record, out, [])
        remaining = [p.id for p in plan.points]
        healthy = list(pool)
        passes = self.max_passes or len(pool)
        for n in range(1, passes + 1):
            spec = PassSpec(
                plan=str(Path(plan.path).resolve()),
                plan_run=run_id,
                baseline=baseline,
                db=self.db,
                out=str(out),
                pool=tuple(healthy),
                points=tuple(remaining),
                xen_images=xen_images,
                kernels=kernels,
                facts=facts,
                cmdlines=cmdlines,
                wait_host=self.wait_host,
            )
            started = time.monotonic()
            rc = self._pass(spec, out / f"pass-{n}.json", n)
            broken = broken_hosts(out)
            healthy = [h for h in healthy if _safe(h.name) not in broken]
            with open_store(self.db) as store:
                decided = final_runs(store.runs(plan_run_id=run_id, limit=100_000, details=False))
            remaining = [
                p for p in remaining if p not in decided or _host_broken(decided[p], broken)
            ]
            result.passes.append(
                {
                    "pass": n,
                    "hosts": [h.name for h in spec.pool],
                    "points": len(spec.points),
                    "pytest_exit": rc,
                    "seconds": round(time.monotonic() - started, 1),
                    "broken_hosts": sorted(broken),
                }
            )
            if not remaining or not healthy:
                break
            if rc not in (0, 1) or len(remaining) == len(spec.points):
                # pytest itself failed (2 interrupted, 3 internal error, 4 usage) or the
                # pass decided nothing: another pass would not do better.
                log.error("plan run %s: pass %d ended %d deciding nothing more", run_id, n, rc)
                break
            log.warning(
                "plan run %s: %d points left after pass %d; again on %s",
                run_id,
                len(remaining),
                n,
                ", ".join(h.name for h in healthy),
            )
        with open_store(self.db) as store:
            result.results = compare(store, run_id, baseline, [p.id for p in plan.points])
            result.files = self._write_summary(store, result)
            store.finish_plan_run(run_id, summary=str(result.files.get("summary.html", "")))
            result.plan_run = next(p for p in store.plan_runs(plan=plan.name) if p.id == run_id)
        if self.keep is not None:
            prune_nights(self.out_root, plan.name, self.keep)
        result.wall_s = time.monotonic() - t0
        return result

    # -- steps ------------------------------------------------------------------------------

    def _builds(
        self, plan: Plan
    ) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, str]]]:
        """Each Xen build and kernel tree the plan names, built once (or served by the cache)."""
        images: dict[str, str] = {}
        kernels: dict[str, str] = {}
        facts: dict[str, dict[str, str]] = {}
        for xb in plan.xen_builds:
            if not xb.builds:
                continue
            assert xb.tree is not None
            built = build_xen(TreeSpec.from_cli(xb.tree, list(xb.patches), xb.config))
            images[xb.name] = str(built.image)
            facts[f"xen:{xb.name}"] = _facts("xen_build", built)
        for k in plan.kernels:
            if not k.tree:
                continue
            kbuilt = build_linux(TreeSpec.from_cli(k.tree, [], None))
            kernels[k.name] = str(kbuilt.image)
            facts[f"kernel:{k.name}"] = _facts("guest_build", kbuilt)
        return images, kernels, facts

    def _cmdline_repos(self, plan: Plan, facts: dict[str, dict[str, str]]) -> dict[str, str]:
        """Each kernel's cmdline repository, read once: its file's line and HEAD commit."""
        lines: dict[str, str] = {}
        for k in plan.kernels:
            if not k.cmdline_repo:
                continue
            repo = Path(k.cmdline_repo)
            proc = subprocess.run(
                ["git", "-C", str(repo), "rev-parse", "--verify", "HEAD"],
                capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
            )  # fmt: skip
            if proc.returncode != 0:
                raise BlockedError(f"kernel {k.name}: {repo} is not a git work tree with a commit")
            facts[f"kernel:{k.name}"] = {"tree_commit": proc.stdout.strip()}
            lines[k.name] = read_cmdline(repo / k.cmdline_file)
        return lines

    def _pass(self, spec: PassSpec, spec_path: Path, n: int) -> int:
        spec.save(spec_path)
        ini = atomic_write_text(spec_path.parent / "pytest.ini", PYTEST_INI)
        argv = [
            sys.executable, "-m", "pytest", "-c", str(ini), "--rootdir", str(spec_path.parent),
            "-p", "xdist", "-n", str(len(spec.pool)), "--dist", "load",
            "--max-worker-restart", "0",
            "--xenpvh-plan-run", str(spec_path),
            f"--junitxml={spec_path.parent / f'pytest-pass-{n}.xml'}",
            "-q", "-rA", *self.pytest_args, str(POINTS_MODULE),
        ]  # fmt: skip
        log.info("plan pass %d: %s", n, " ".join(argv))
        env = {**os.environ, **(self.env or {})}
        if sum(1 for h in spec.pool if h.nested) > 1:
            env["XENPVH_NESTED_FRESH"] = "1"  # one nested host per worker, none shared
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, text=True, errors="replace", cwd=spec_path.parent,
        )  # fmt: skip
        assert proc.stdout is not None
        with (spec_path.parent / f"pytest-pass-{n}.log").open("w") as logf:
            for line in proc.stdout:
                logf.write(line)
                if self.on_line is not None:
                    self.on_line(line.rstrip("\n"))
        return proc.wait()

    def _write_summary(self, store: HistoryStore, result: PlanRunResult) -> dict[str, Path]:
        plan_run = next(
            p for p in store.plan_runs(plan=result.plan.name) if p.id == result.plan_run.id
        )
        junit = render_plan_junit(result.plan.name, plan_run, result.results)

        def html(base: Path) -> str:  # links are relative to where the page is
            return render_plan_html(store, result.plan.name, plan_run, result.results, base)

        return {
            "plan-junit.xml": atomic_write_text(result.out / "plan-junit.xml", junit),
            "summary.html": atomic_write_text(result.out / "summary.html", html(result.out)),
            # The newest night's summary at the top of the published directory too.
            "index.html": atomic_write_text(self.out_root / "index.html", html(self.out_root)),
        }


def _facts(key: str, built: object) -> dict[str, str]:
    out = {key: built.cache.key}  # type: ignore[attr-defined]
    commit = built.state.identity.get("commit")  # type: ignore[attr-defined]
    if commit:
        out["tree_commit"] = commit
    return out


def _host_broken(run: object, broken: dict[str, str]) -> bool:
    host = getattr(run, "host", None)
    return getattr(run, "verdict", "") == "broken" and host is not None and _safe(host) in broken


def prune_nights(out_root: Path, plan: str, keep: int) -> list[Path]:
    """Remove all but the newest `keep` plan-run directories of `plan` (named
    `<plan>-YYYYmmdd-HHMMSS-<pid>`); returns what was removed.  The history keeps the rows."""
    if keep < 1:
        raise BlockedError(f"--keep must be at least 1, not {keep}")
    pattern = re.compile(rf"^{re.escape(plan)}-(\d{{8}}-\d{{6}})-\d+$")
    nights = sorted(
        (p for p in out_root.iterdir() if p.is_dir() and pattern.match(p.name)),
        key=lambda p: (pattern.match(p.name).group(1), p.name),  # type: ignore[union-attr]
    )
    gone = nights[:-keep]
    for p in gone:
        log.info("plan runs: removing %s (keeping %d nights)", p, keep)
        shutil.rmtree(p, ignore_errors=True)
    return gone


def check_pool(hosts: str) -> tuple[PoolHost, ...]:
    return parse_pool(hosts)


__all__ = ["PlanRunResult", "PlanRunner", "check_pool", "prune_nights"]
