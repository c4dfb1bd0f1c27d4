"""Benchmark the nested Xen host: image build (cache miss/hit), cold/warm start, and guests.

    .venv/bin/python bench/boot.py [--rebuild] [--boots N] [--modes cold,warm] [--guests N]
                                   [--json]

--rebuild builds the image into a throw-away cache (a true cold miss, download included)
instead of using the real cache.  Each boot is measured from QEMU's start to ssh answering
(pinned host key) and to `xl list` working in dom0; down() is timed too.  `cold` boots Xen
and dom0 from scratch; `warm` resumes the saved machine state (made on first use).

--series N boots linux-pvh (xl, 2 vCPUs) N times in a row on one warm nested host, the way
`xenpvh boot` does (no retries), and prints per-run means and the ratios the nested-host issue
sets as targets: run wall (start -> verdict announced, and start -> domain gone) over
unpause -> verdict (target <= 1.3), verdict -> domain gone (the prompt's wait, target <= 3 s),
and how many runs showed the nested-SVM fault signature or were not a pass (target 0).
`--qemu` picks the nested host's QEMU (default: the patched build).

--guests N boots linux-pvh N times (xl, 2 vCPUs) and N times with `rdinit=/nonexistent` on one
warm nested host, and reports per run: guest create to verdict, the harness overhead (verdict
time minus the arrival of the console line that decided it), and for the failing guest the
fail-fast latency (the same, measured on the panic line) and how long before the stage
deadline the verdict came.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from xenpvh.build.cache import ArtifactCache
from xenpvh.cli.progress import ProgressView
from xenpvh.host.image import ImageBuilder
from xenpvh.host.nested import NestedHost


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rebuild", action="store_true", help="measure a cold image build")
    ap.add_argument("--boots", type=int, default=1, help="cold starts to measure")
    ap.add_argument("--modes", default="cold,warm", help="comma-separated: cold, warm")
    ap.add_argument("--guests", type=int, default=1, help="guest runs of each kind (0: none)")
    ap.add_argument("--series", type=int, default=0, help="consecutive guest runs to time")
    ap.add_argument("--qemu", default="patched", help="nested host QEMU: patched|system|PATH")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    console = Console(stderr=True)
    rows: list[tuple[str, float | int | str]] = []

    tmp_cache = Path(tempfile.mkdtemp(prefix="xenpvh-bench-cache-")) if args.rebuild else None
    cache = ArtifactCache(tmp_cache) if tmp_cache is not None else None
    try:
        with ProgressView(console) as progress:
            rep = ImageBuilder(cache=cache, progress=progress).ensure()
        rows.append((f"image build ({'hit' if rep.cache_hit else 'miss'})", round(rep.seconds, 2)))
        rows.append(("image size (MB allocated)", round(rep.size_bytes / 1e6)))
        if not rep.cache_hit:
            again = ImageBuilder(cache=cache).ensure()
            rows.append(("image build (hit)", round(again.seconds, 3)))
    finally:
        if tmp_cache is not None:
            shutil.rmtree(tmp_cache, ignore_errors=True)

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not set(modes) <= {"cold", "warm"}:
        ap.error(f"--modes takes cold and/or warm, not {args.modes!r}")
    for mode in modes:
        for i in range(args.boots):
            with tempfile.TemporaryDirectory(prefix="xenpvh-bench-boot-") as art:
                h = NestedHost(
                    artifacts=Path(art), progress=ProgressView(console), warm=mode == "warm"
                )
                t0 = time.monotonic()
                h.up()
                fell_back = h.times.warm != (mode == "warm")
                tag = f"{mode} {i + 1}" + (" (fell back to cold)" if fell_back else "")
                try:
                    rows.append((f"{tag}: QEMU start → ssh", round(h.times.ssh_ready or 0, 1)))
                    rows.append((f"{tag}: QEMU start → xl list", round(h.times.xl_ready or 0, 1)))
                    rows.append((f"{tag}: up() total", round(time.monotonic() - t0, 1)))
                finally:
                    t1 = time.monotonic()
                    h.down()
                    rows.append((f"{tag}: down()", round(time.monotonic() - t1, 1)))

    if args.guests > 0:
        rows += guest_rows(args.guests, console)
    if args.series > 0:
        rows += series_rows(args.series, args.qemu, console)

    if args.json:
        print(json.dumps(dict(rows), indent=2))
    else:
        table = Table(title="nested Xen host")
        table.add_column("measure")
        table.add_column("seconds / value", justify="right")
        for k, v in rows:
            table.add_row(k, str(v))
        Console().print(table)
    return 0


def guest_rows(n: int, console: Console) -> list[tuple[str, float | int | str]]:
    from xenpvh.build.guestkit import build_linux_guest_kit
    from xenpvh.profile import load_profile
    from xenpvh.run.boot import BootRun

    rows: list[tuple[str, float | int | str]] = []
    profile = load_profile("linux-pvh")
    kit = build_linux_guest_kit()
    base = profile.point(vcpus=2)
    kinds = {
        "pass": base,
        "fail-fast": profile.point(vcpus=2, cmdline=f"{base.cmdline} rdinit=/nonexistent"),
    }
    with (
        tempfile.TemporaryDirectory(prefix="xenpvh-bench-guests-") as art,
        NestedHost(artifacts=Path(art) / "host", progress=ProgressView(console)) as host,
    ):
        for kind, point in kinds.items():
            for i in range(n):
                run_dir = Path(art) / f"{kind}-{i}"
                t0 = time.monotonic()
                v = BootRun(host, profile, point, artifacts=run_dir, guest_kit=kit).run()
                wall = time.monotonic() - t0
                tag = f"guest {kind} {i + 1} ({v.verdict})"
                m = v.meta
                rows.append((f"{tag}: create → verdict", m.get("create_to_verdict_s") or 0))
                rows.append((f"{tag}: unpause → verdict", m.get("unpause_to_verdict_s") or 0))
                rows.append((f"{tag}: harness overhead", m.get("harness_overhead_s") or 0))
                rows.append((f"{tag}: whole run (incl. destroy)", round(wall, 1)))
                if kind == "fail-fast":
                    rows.append((f"{tag}: deadline saved", _deadline_saved(v, profile)))
    return rows


def series_rows(n: int, qemu: str, console: Console) -> list[tuple[str, float | int | str]]:
    """N linux-pvh runs in a row; per-run phases and the target ratios, measured together."""
    from xenpvh.build.guestkit import build_linux_guest_kit
    from xenpvh.check.faults import find_fault
    from xenpvh.profile import load_profile
    from xenpvh.run.boot import BootRun, RunHooks
    from xenpvh.run.events import VerdictEvent

    profile = load_profile("linux-pvh")
    kit = build_linux_guest_kit()
    point = profile.point(vcpus=2)
    runs: list[dict[str, float]] = []
    faults = not_pass = 0
    with (
        tempfile.TemporaryDirectory(prefix="xenpvh-bench-series-") as art,
        NestedHost(artifacts=Path(art) / "host", progress=ProgressView(console), qemu=qemu) as host,
    ):
        assert host.qemu_binary is not None
        qemu_version = host.qemu_binary.version
        for i in range(n):
            run_dir = Path(art) / f"run-{i}"
            announced: list[float] = []

            def on_event(e: object, announced: list[float] = announced) -> None:
                if isinstance(e, VerdictEvent):
                    announced.append(time.monotonic())

            t0 = time.monotonic()
            v = BootRun(
                host,
                profile,
                point,
                artifacts=run_dir,
                guest_kit=kit,
                hooks=RunHooks(on_event=on_event),
            ).run()
            t_end = time.monotonic()
            log = run_dir / "console.log"
            text = log.read_text(errors="replace") if log.is_file() else ""
            faulted = find_fault(text.splitlines()) is not None
            faults += faulted
            not_pass += v.verdict.value != "pass"
            m = v.meta
            u2v = float(m.get("unpause_to_verdict_s") or 0.0)
            t_verdict = announced[0] if announced else t_end
            runs.append(
                {
                    "unpause_to_verdict": u2v,
                    "to_verdict": t_verdict - t0,
                    "wall": t_end - t0,
                    "verdict_to_gone": t_end - t_verdict,
                    "xl_create": float(m.get("xl_create_s") or 0.0),
                    "collect": float(m.get("collect_s") or 0.0),
                }
            )
            console.log(
                f"series {i + 1}/{n}: {v.verdict}{' FAULT' if faulted else ''} "
                f"unpause->verdict {u2v:.1f}s, wall {t_end - t0:.1f}s"
            )

    def mean(key: str) -> float:
        return sum(r[key] for r in runs) / len(runs)

    u2v = mean("unpause_to_verdict")
    return [
        ("series: QEMU", qemu_version),
        ("series: runs", n),
        ("series: not pass", not_pass),
        ("series: fault signatures", faults),
        ("series: mean unpause → verdict (s)", round(u2v, 2)),
        ("series: mean xl create (s)", round(mean("xl_create"), 2)),
        ("series: mean collect (s)", round(mean("collect"), 2)),
        ("series: mean start → verdict announced (s)", round(mean("to_verdict"), 2)),
        ("series: mean run wall incl. destroy (s)", round(mean("wall"), 2)),
        (
            "series: ratio start→verdict / unpause→verdict (target ≤ 1.3)",
            round(mean("to_verdict") / u2v, 2),
        ),
        ("series: ratio run wall / unpause→verdict (target ≤ 1.3)", round(mean("wall") / u2v, 2)),
        ("series: mean verdict → domain gone (s, target ≤ 3)", round(mean("verdict_to_gone"), 2)),
        (
            "series: max verdict → domain gone (s)",
            round(max(r["verdict_to_gone"] for r in runs), 2),
        ),
    ]


def _deadline_saved(v: object, profile: object) -> float | str:
    """Seconds between the fail-fast verdict and the moment a timeout-only harness would
    have given up (the failed stage's deadline, counted from the previous stage)."""
    stages = list(v.stages)  # type: ignore[attr-defined]
    names = [s.name for s in stages]
    if v.failed_stage not in names:  # type: ignore[attr-defined]
        return "n/a"
    i = names.index(v.failed_stage)  # type: ignore[attr-defined]
    failed = stages[i]
    start = next((s.t for s in reversed(stages[:i]) if s.t is not None), 0.0)
    deadline = next(s.deadline for s in profile.stages if s.name == failed.name)  # type: ignore[attr-defined]
    if failed.t is None:
        return "n/a"
    return round(start + deadline - failed.t, 1)


if __name__ == "__main__":
    sys.exit(main())
