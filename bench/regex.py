"""Bounding profile regexes against hostile consoles: the three options, measured in one run.

    python bench/regex.py [--quick]

1. Python's `re` as is (backtracking): seconds per hostile line for some patterns.
2. A static check refusing nested quantifiers (star height >= 2) when a profile is loaded.
3. A per-line time budget: `re` cannot be interrupted inside a match (it holds the GIL),
   so a budget means matching in a worker process and killing it on expiry; its cost is
   one round trip per line.
4. RE2 (PyPI google-re2, what xenpvh uses): linear time whatever the pattern.

Prints, for hostile pattern/line pairs, the time of each engine and the ratio, which of them
the static check would have refused, the per-line cost of the worker-process budget, and the
checker's throughput on a normal console with both engines (the price of RE2 where nothing
is hostile).
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import re._parser as sre_parse
import sys
import time
from pathlib import Path

import re2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OPTIONS = re2.Options()
OPTIONS.log_errors = False

# (pattern, hostile line): the line a guest may print to make the pattern backtrack.
HOSTILE = [
    (r"(a+)+$", "a" * 24 + "!"),
    (r"(\w|\d)+x", "1" * 24 + "!"),
    (r"\d+\d+x", "1" * 1500),
    (r"\S+ login:", "x" * 65536),
    (r"Booting (paravirtualized )?kernel on Xen PVH", "Booting " * 8000),
]


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def star_height(pattern: str) -> int:
    """Nesting depth of unbounded repeats (the static check refuses >= 2)."""

    def walk(items) -> int:
        best = 0
        for op, av in items:
            if op in (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT):
                _lo, hi, body = av
                inner = walk(body)
                best = max(best, inner + (1 if hi == sre_parse.MAXREPEAT else 0))
            elif op == sre_parse.SUBPATTERN:
                best = max(best, walk(av[3]))
            elif op == sre_parse.BRANCH:
                best = max(best, *(walk(b) for b in av[1]))
        return best

    return walk(sre_parse.parse(pattern))


def _worker(conn) -> None:
    cache: dict[str, re.Pattern[str]] = {}
    while True:
        msg = conn.recv()
        if msg is None:
            return
        pattern, line = msg
        rx = cache.setdefault(pattern, re.compile(pattern))
        conn.send(rx.search(line) is not None)


def budget_cost(lines: list[str], pattern: str) -> float:
    """Seconds per line of matching in a worker process (the least a budget costs)."""
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.Process(target=_worker, args=(child,), daemon=True)
    proc.start()
    t0 = time.perf_counter()
    for line in lines:
        parent.send((pattern, line))
        if not parent.poll(1.0):  # the budget: a worker over it would be killed
            proc.kill()
            raise RuntimeError("budget exceeded")
        parent.recv()
    per_line = (time.perf_counter() - t0) / len(lines)
    parent.send(None)
    proc.join(5)
    return per_line


def checker_throughput(engine: str, size: int) -> float:
    """MB per CPU second of the stage checker (bench/checker.py's console: the seed boot
    without its login banner, interleaved with noise, so nothing is decided early) with the
    profile's patterns compiled by `engine`."""
    sys.path.insert(0, str(ROOT / "bench"))
    from checker import CHUNK, PROFILE, make_block  # bench/checker.py

    from xenpvh.check.checker import StageChecker
    from xenpvh.profile import load_profile, loader

    orig = loader.compile_console_pattern
    if engine == "re":
        loader.compile_console_pattern = re.compile  # type: ignore[assignment]
    try:
        profile = load_profile(PROFILE)
    finally:
        loader.compile_console_pattern = orig
    block = make_block()
    checker = StageChecker(profile, vcpus=7, disks=1, vifs=1, clock=time.monotonic)
    view = memoryview(block)
    fed = pos = 0
    c0 = time.process_time()
    while fed < size:
        chunk = view[pos : pos + CHUNK]
        pos = (pos + CHUNK) % len(block)
        checker.feed(bytes(chunk))
        fed += len(chunk)
    assert not checker.done, "the checker decided early: the figure would mean nothing"
    return fed / 1e6 / (time.process_time() - c0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a 2 MB console instead of 10 MB")
    args = ap.parse_args()
    print("hostile line: Python re vs RE2 (seconds), and the static nested-quantifier check")
    for pattern, line in HOSTILE:
        t_re = timed(re.compile(pattern).search, line)
        t_re2 = timed(re2.compile(pattern, options=OPTIONS).search, line)
        refused = "refused" if star_height(pattern) >= 2 else "passed "
        print(
            f"  {pattern!r:48} {len(line):6} chars: re {t_re:9.4f}s  re2 {t_re2:9.6f}s  "
            f"ratio {t_re / max(t_re2, 1e-7):12.0f}x  static check: {refused}"
        )
    seed = (ROOT / "tests" / "seed_freebsd_pvhv1_2013.txt").read_bytes()
    lines = seed.decode(errors="replace").splitlines()[:2000]
    per_line = budget_cost(lines, r"SMP: AP CPU #(?P<ids>\d+) Launched")
    in_process = timed(lambda: [re.search(r"SMP: AP CPU #\d+ Launched", x) for x in lines])
    in_process /= len(lines)
    print(
        f"per-line budget in a worker process: {per_line * 1e6:.0f} us/line vs "
        f"{in_process * 1e6:.2f} us/line in process (ratio {per_line / in_process:.0f}x); "
        f"a 10 MB console of ~{10_000_000 // 80} lines would take "
        f"{per_line * 10_000_000 / 80:.0f}s in round trips alone"
    )
    size = 2_000_000 if args.quick else 10_000_000
    mb_re = checker_throughput("re", size)
    mb_re2 = checker_throughput("re2", size)
    print(
        f"checker on a normal {size // 1_000_000} MB console (freebsd-pvhv1): re {mb_re:.1f} MB/s, "
        f"re2 {mb_re2:.1f} MB/s per CPU second (re2/re {mb_re2 / mb_re:.2f}; target >= 20 MB/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
