"""Benchmark the streaming StageChecker: throughput (MB/s) and peak RSS on one core.

The console is the 2013 seed boot (without its final login banner, so the checker never
decides early and keeps matching every stage's patterns) interleaved with kernel-like noise
lines, fed in 64 KiB chunks; the login banner comes last so the run ends in a pass.

    .venv/bin/python bench/checker.py [--sizes 10 100]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

from xenpvh.check.checker import StageChecker
from xenpvh.check.verdict import VerdictValue
from xenpvh.profile import load_profile

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "tests" / "seed_freebsd_pvhv1_2013.txt"
CHUNK = 64 * 1024
BANNER = "FreeBSD/amd64 (Amnesiac) (xc0)"
PROFILE = "freebsd-pvhv1"  # the seed's own profile: the FreeBSD pattern set


def make_block(target: int = 1 << 20) -> bytes:
    """About `target` bytes: seed lines (no banner) alternating with noise lines."""
    seed = [x for x in SEED.read_text().splitlines() if BANNER not in x]
    out: list[str] = []
    size = i = 0
    while size < target:
        line = seed[i % len(seed)]
        noise = (
            f"[{i // 100:6d}.{i % 1000000:06d}] vm_fault: pager read error, pid {i % 99991} "
            f"(noise{i}) addr 0x{i * 4096:x} flags=0x{i % 255:x}"
        )
        out += [line, noise]
        size += len(line) + len(noise) + 2
        i += 1
    return ("\n".join(out) + "\n").encode()


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def bench(profile_name: str, total_mb: int, block: bytes) -> tuple[float, float, str]:
    """Feed `total_mb` MB; return (MB per CPU second, MB per wall second, verdict)."""
    profile = load_profile(profile_name)
    checker = StageChecker(profile, vcpus=7, disks=1, vifs=1, clock=time.monotonic)
    view = memoryview(block)
    total = total_mb * 1_000_000
    fed = pos = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while fed < total:
        chunk = view[pos : pos + CHUNK]
        pos = (pos + CHUNK) % len(block)
        checker.feed(bytes(chunk))
        fed += len(chunk)
    checker.feed(f"\n{BANNER}\n".encode())
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    verdict = checker.finish()
    assert verdict.verdict is VerdictValue.PASS, verdict.reason
    return fed / 1e6 / cpu, fed / 1e6 / elapsed, str(verdict.verdict)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100], help="MB to feed")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    block = make_block()
    base = maxrss_mib()
    print(f"profile {PROFILE}, chunks of {CHUNK} bytes, baseline maxrss {base:.1f} MiB")
    for mb in args.sizes:
        cpu_rate, wall_rate, verdict = bench(PROFILE, mb, block)
        print(
            f"{mb:5d} MB: {cpu_rate:6.1f} MB/s per CPU second ({wall_rate:6.1f} MB/s wall), "
            f"verdict {verdict}, "
            f"peak RSS {maxrss_mib():.1f} MiB"
        )


if __name__ == "__main__":
    main()
