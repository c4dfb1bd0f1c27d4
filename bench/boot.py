"""Benchmark the nested Xen host: image build (cache miss/hit) and cold start.

    .venv/bin/python bench/boot.py [--rebuild] [--boots N] [--modes cold,warm] [--json]

--rebuild builds the image into a throw-away cache (a true cold miss, download included)
instead of using the real cache.  Each boot is measured from QEMU's start to ssh answering
(pinned host key) and to `xl list` working in dom0; down() is timed too.  `cold` boots Xen
and dom0 from scratch; `warm` resumes the saved machine state (made on first use).
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

from xenpvh.host.image import ImageBuilder
from xenpvh.host.nested import NestedHost


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rebuild", action="store_true", help="measure a cold image build")
    ap.add_argument("--boots", type=int, default=1, help="cold starts to measure")
    ap.add_argument("--modes", default="cold,warm", help="comma-separated: cold, warm")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    console = Console(stderr=True)
    rows: list[tuple[str, float | int | str]] = []

    tmp_cache = Path(tempfile.mkdtemp(prefix="xenpvh-bench-cache-")) if args.rebuild else None
    try:
        rep = ImageBuilder(cache=tmp_cache, console=console).ensure()
        rows.append((f"image build ({'hit' if rep.cache_hit else 'miss'})", round(rep.seconds, 2)))
        rows.append(("image size (MB allocated)", round(rep.size_bytes / 1e6)))
        if not rep.cache_hit:
            again = ImageBuilder(cache=tmp_cache).ensure()
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
                h = NestedHost(artifacts=Path(art), console=console, warm=mode == "warm")
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


if __name__ == "__main__":
    sys.exit(main())
