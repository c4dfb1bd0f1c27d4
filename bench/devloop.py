"""Benchmark the developer's loop: edit the kernel, get the verdict.

    .venv/bin/python bench/devloop.py [--host nested] [--touches N] [--debounce S] [--json]
                                      [--cmdline-append ARGS]

Runs `xenpvh dev --watch` on a copy of the guest kit's kernel (linux-pvh, 2 vCPUs), touches
the kernel N times after each verdict (as a rebuild that produced the same bytes would), and
reports per run: kernel written -> verdict (what the developer waits: the debounce, the
upload check, create, boot to the deciding stage) and run start -> verdict.  A nested host is
used as `dev` uses it: the one `xenpvh host nested up` left running, or one `dev` starts and
leaves up (stop it with `xenpvh host nested down`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pexpect

LINE = re.compile(
    r"run (\d+): (?:\x1b\[[0-9;]*m)*(\w+).*?(?:kernel written → verdict ([0-9.]+)s; )?"
    r"start → verdict ([0-9.]+)s"
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="nested")
    ap.add_argument("--touches", type=int, default=3, help="re-runs after the first")
    ap.add_argument("--debounce", type=float, default=1.0)
    ap.add_argument("--cmdline-append", default="")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from xenpvh.build.guestkit import build_linux_guest_kit

    kit = build_linux_guest_kit()
    work = Path(tempfile.mkdtemp(prefix="xenpvh-bench-devloop-"))
    kernel = work / "vmlinuz"
    shutil.copy2(kit.kernel, kernel)
    cmd = ["-m", "xenpvh", "dev", "--profile", "linux-pvh", "--kernel", str(kernel)]
    cmd += ["--ramdisk", str(kit.ramdisk), "--host", args.host, "--attempts", "1"]
    cmd += ["--artifacts", str(work / "art"), "--watch", "--debounce", str(args.debounce)]
    cmd += ["--no-keep-on-fail"]
    if args.cmdline_append:
        cmd += ["--cmdline-append", args.cmdline_append]
    child = pexpect.spawn(
        sys.executable,
        cmd,
        timeout=900,
        encoding="utf-8",
        codec_errors="replace",
        dimensions=(50, 200),
    )
    runs: list[dict[str, object]] = []
    try:
        for n in range(args.touches + 1):
            child.expect(LINE)
            number, verdict, edit, start = child.match.groups()
            runs.append(
                {
                    "run": int(number),
                    "verdict": verdict,
                    "edit_to_verdict_s": float(edit) if edit else None,
                    "start_to_verdict_s": float(start),
                }
            )
            if n == args.touches:
                break
            child.expect("watching")
            time.sleep(1.0)
            os.utime(kernel)
        child.sendintr()
        child.expect(pexpect.EOF, timeout=120)
    finally:
        child.close()
        shutil.rmtree(work, ignore_errors=True)
    edits = [r["edit_to_verdict_s"] for r in runs if r["edit_to_verdict_s"] is not None]
    summary = {
        "runs": runs,
        "edit_to_verdict_mean_s": round(statistics.mean(edits), 2) if edits else None,
        "edit_to_verdict_min_s": min(edits) if edits else None,
        "edit_to_verdict_max_s": max(edits) if edits else None,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for r in runs:
            print(
                f"run {r['run']}: {r['verdict']}  edit -> verdict {r['edit_to_verdict_s']}s  "
                f"start -> verdict {r['start_to_verdict_s']}s"
            )
        print(
            f"edit -> verdict: mean {summary['edit_to_verdict_mean_s']}s, "
            f"min {summary['edit_to_verdict_min_s']}s, max {summary['edit_to_verdict_max_s']}s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
