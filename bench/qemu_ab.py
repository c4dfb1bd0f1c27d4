"""A/B of the nested host's QEMU: how often do Linux PVH guests die of nested SVM's
double interrupt delivery, on Debian's QEMU and on xenpvh's patched build?

    .venv/bin/python bench/qemu_ab.py [--arms system,patched,system-smp1] [--boots 20]
                                      [--busy 0] [--out results.jsonl]

An arm is a QEMU choice (`system`: Debian's qemu-system-x86_64; `patched`: xenpvh's build
with the fix; or a path) and optionally `-smp1` (the nested QEMU with one CPU, so Xen runs
on one pCPU).  Each arm boots one nested host (warm start) and then `--boots` linux-pvh
guests (xl, 2 vCPUs) one after the other, with no retries, and counts per boot: the verdict,
the broad fault line (`BUG: ENTRY_TRAMPOLINE stack guard page was hit`) and the narrowed
signature (`xenpvh.check.faults`: the upcall taken again with IF=0 before swapgs).
`--busy S` adds `xenpvh.busy=S` to the guest's command line: the guest kit keeps every vCPU
busy in user space for S seconds before its prompt (a guest that spends real time in user
space takes many interrupts from user mode).

Every boot is appended to `--out` as one JSON line as soon as it ends, so a long run that is
stopped keeps what it measured; the table at the end counts what is in the file for this run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from xenpvh.check.faults import find_fault
from xenpvh.cli.progress import ProgressView
from xenpvh.host.nested import NestedHost

BROAD = "BUG: ENTRY_TRAMPOLINE stack guard page was hit"


def parse_arm(text: str) -> tuple[str, int]:
    """`system`, `patched`, `PATH`, each optionally with `-smp1`: (qemu choice, QEMU cpus)."""
    if text.endswith("-smp1"):
        return text[: -len("-smp1")], 1
    return text, 2


def run_arm(
    arm: str, boots: int, busy: int, out: Path, console: Console, tag: str
) -> list[dict[str, object]]:
    from xenpvh.build.guestkit import build_linux_guest_kit
    from xenpvh.profile import load_profile
    from xenpvh.run.boot import BootRun

    qemu, cpus = parse_arm(arm)
    profile = load_profile("linux-pvh")
    kit = build_linux_guest_kit()
    base = profile.point(vcpus=2)
    cmdline = f"{base.cmdline} xenpvh.busy={busy}" if busy else base.cmdline
    point = profile.point(vcpus=2, cmdline=cmdline)
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="xenpvh-bench-ab-") as art:
        host = NestedHost(
            artifacts=Path(art) / "host", progress=ProgressView(console), qemu=qemu, cpus=cpus
        )
        with host:
            assert host.qemu_binary is not None
            for i in range(boots):
                run_dir = Path(art) / f"boot-{i}"
                t0 = time.monotonic()
                v = BootRun(host, profile, point, artifacts=run_dir, guest_kit=kit).run()
                wall = time.monotonic() - t0
                text = _console(run_dir)
                fault = find_fault(text.splitlines())
                row: dict[str, object] = {
                    "tag": tag,
                    "arm": arm,
                    "qemu": host.qemu_binary.version,
                    "qemu_origin": host.qemu_binary.origin,
                    "nested_cpus": cpus,
                    "busy": busy,
                    "boot": i + 1,
                    "verdict": str(v.verdict),
                    "failed_stage": v.failed_stage,
                    "broad_fault_line": BROAD in text,
                    "double_delivery": fault is not None,
                    "fault_evidence": fault.evidence if fault is not None else None,
                    "unpause_to_verdict_s": v.meta.get("unpause_to_verdict_s"),
                    "wall_s": round(wall, 1),
                    "reason": v.reason[:300],
                }
                if v.verdict.value != "pass":
                    keep = out.parent / f"{out.stem}-consoles"
                    keep.mkdir(parents=True, exist_ok=True)
                    (keep / f"{tag}-{arm}-busy{busy}-{i + 1}.log").write_text(text)
                results.append(row)
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                console.log(
                    f"{arm} busy={busy} boot {i + 1}/{boots}: {v.verdict} "
                    f"{'FAULT ' if row['broad_fault_line'] else ''}({wall:.0f}s)"
                )
    return results


def _console(run_dir: Path) -> str:
    log = run_dir / "console.log"
    return log.read_text(errors="replace") if log.is_file() else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arms", default="system,patched,system-smp1")
    ap.add_argument("--boots", type=int, default=20)
    ap.add_argument("--busy", type=int, default=0, help="seconds of user-space load per guest")
    ap.add_argument("--out", type=Path, default=Path("bench-qemu-ab.jsonl"))
    args = ap.parse_args(argv)
    console = Console(stderr=True)
    tag = time.strftime("%Y%m%dT%H%M%S")
    rows: list[dict[str, object]] = []
    for arm in [a.strip() for a in args.arms.split(",") if a.strip()]:
        rows += run_arm(arm, args.boots, args.busy, args.out, console, tag)
    table = Table(title=f"nested-SVM double delivery, linux-pvh 2 vCPUs, busy={args.busy}s")
    for col in ("arm", "QEMU", "boots", "pass", "fault line", "double delivery", "median s"):
        table.add_column(col)
    for arm in dict.fromkeys(str(r["arm"]) for r in rows):
        mine = [r for r in rows if r["arm"] == arm]
        walls = sorted(float(r["wall_s"]) for r in mine)  # type: ignore[arg-type]
        table.add_row(
            arm,
            str(mine[0]["qemu"]),
            str(len(mine)),
            str(sum(r["verdict"] == "pass" for r in mine)),
            str(sum(bool(r["broad_fault_line"]) for r in mine)),
            str(sum(bool(r["double_delivery"]) for r in mine)),
            f"{walls[len(walls) // 2]:.1f}" if walls else "-",
        )
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
