"""Mutation check of the core rooms: hand-made mutants, each run against its unit tests.

    python bench/mutants.py [--only NAME ...] [--list]

Every mutant is one small source edit of the kind a real bug would make (a failed destroy
no longer turning the verdict broken, a device count checked with `<`, ...).  The script
applies it to a throw-away copy of the tree (the working tree is never touched), runs the
unit tests that guard that code (`-m "not xen"`, stopping at the first failure) and counts
the mutant killed when they fail.  It prints one line per mutant and the score; it exits 1
when a mutant survives, so the check can run in CI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to the repository root
    old: str  # must occur exactly once
    new: str
    tests: tuple[str, ...]  # pytest arguments (files, -k ...)


MUTANTS: tuple[Mutant, ...] = (
    # -- the kinds issue 12 found surviving ---------------------------------------------------
    Mutant(
        "failed destroy no longer broken",
        "xenpvh/check/decide.py",
        "    if facts.destroy_problem:",
        "    if False and facts.destroy_problem:",
        ("tests/test_check_decide.py", "tests/test_run_boot.py", "-k", "destroy"),
    ),
    Mutant(
        "rendered keys overridable through extra",
        "xenpvh/render/xl.py",
        'if key in emitted or key in ("pvh", "type", "extra", "cmdline", "builder"):',
        'if key in ("pvh", "extra", "builder"):',
        ("tests/test_render_xl.py",),
    ),
    Mutant(
        "stage deadlines counted from run start",
        "xenpvh/check/checker.py",
        "began = self._start if base is None else (self._first_byte or self._start) + base",
        "began = self._start",
        ("tests/test_check_stream.py",),
    ),
    Mutant(
        "xenbus device count checked with <",
        "xenpvh/run/devices.py",
        "            if have != n and kind in checks:",
        "            if have < n and kind in checks:",
        ("tests/test_run_boot.py", "-k", "xenstore or device"),
    ),
    Mutant(
        "console tty check removed",
        "xenpvh/run/devices.py",
        '        if not tty and "console-tty" in checks and not exited:',
        "        if False:",
        ("tests/test_run_boot.py", "-k", "xenstore or device"),
    ),
    Mutant(
        "retry history not written to verdict.json",
        "xenpvh/run/session.py",
        "attempts=records if len(records) > 1 else (),",
        "attempts=(),",
        ("tests/test_run_retry.py", "-k", "retries_only"),
    ),
    Mutant(
        "exit codes of blocked and broken swapped",
        "xenpvh/check/verdict.py",
        "            VerdictValue.BLOCKED: 2,\n            VerdictValue.BROKEN: 3,",
        "            VerdictValue.BLOCKED: 3,\n            VerdictValue.BROKEN: 2,",
        ("tests/test_cli.py", "tests/test_cli_conventions.py"),
    ),
    Mutant(
        "kernel-panic removed from the Linux profile",
        "guestcfg/linux-pvh.toml",
        "pattern = 'Kernel panic - not syncing'\n",
        "pattern = 'Kernel panic - not syncing (never, mutant)'\n",
        ("tests/test_run_retry.py", "tests/test_run_boot.py", "-k", "panic or lookalike"),
    ),
    # -- more of the same kinds: faults classed, nothing left, bounds ---------------------------
    Mutant(
        "a broken verdict keeps its failed stage",
        "xenpvh/check/decide.py",
        "    if verdict.verdict in (VerdictValue.BROKEN, VerdictValue.BLOCKED) and (",
        "    if False and (",
        ("tests/test_check_decide.py",),
    ),
    Mutant(
        "xenstored liveness probe never runs",
        "xenpvh/run/liveness.py",
        "        if problem:\n            raise BrokenError(problem)",
        "        if False:\n            raise BrokenError(problem)",
        ("tests/test_run_boot.py", "-k", "xenstored"),
    ),
    Mutant(
        "a deadline fail does not ask xenstored",
        "xenpvh/run/boot.py",
        "        return self._probe.final()",
        '        return ""',
        ("tests/test_run_boot.py", "-k", "xenstored or deadline"),
    ),
    Mutant(
        "XenStore deadline per call, not per operation",
        "xenpvh/toolstack/xenstore.py",
        "            deadline = min(deadline, self.operation_deadline)",
        "            pass",
        ("tests/test_toolstack_xenstore.py",),
    ),
    Mutant(
        "a dropped XenStore relay is not replaced",
        "xenpvh/toolstack/xenstore.py",
        "                return self._call_locked(fn, *args)\n            except RelayClosed:",
        "                return self._call_locked(fn, *args)\n            except OverflowError:",
        ("tests/test_toolstack_xenstore.py",),
    ),
    Mutant(
        "a timed-out XenStore call throws its relay away",
        "xenpvh/toolstack/xenstore.py",
        "STALE_AFTER = 3",
        "STALE_AFTER = 1",
        ("tests/test_toolstack_xenstore.py",),
    ),
    Mutant(
        "a late XenStore reply taken for the current call's",
        "xenpvh/toolstack/xenstore.py",
        "            if rq_id in self.expected:",
        "            if True:",
        ("tests/test_toolstack_xenstore.py",),
    ),
    Mutant(
        "a XenStore reply cut by a deadline is lost",
        "xenpvh/toolstack/xenstore.py",
        "                continue  # the loop re-checks the deadline",
        "                self._buffer.clear()\n                continue",
        ("tests/test_toolstack_xenstore.py",),
    ),
    Mutant(
        "a dead owner's lease still protects its domain",
        "xenpvh/run/lease.py",
        "    return process_start(pid) != started",
        "    return False",
        ("tests/test_run_lease.py",),
    ),
    Mutant(
        "leases of other machines judged by pid",
        "xenpvh/run/lease.py",
        '    if their_machine != (machine or this_machine()) or not their_machine.split("/")[0]:',
        "    if False:",
        ("tests/test_run_lease.py",),
    ),
    Mutant(
        "old console logs never swept",
        "xenpvh/run/lease.py",
        "            if m and m.group(1) not in live_runs:",
        "            if False:",
        ("tests/test_run_lease.py",),
    ),
    Mutant(
        "a killed owner's nested temp dir kept until it is old",
        "xenpvh/host/nested/reap.py",
        "if running is False or (running is None and now - d.stat().st_mtime > min_age):",
        "if now - d.stat().st_mtime > min_age:",
        ("tests/test_host_nested.py", "-k", "reap_stale or killed_owner"),
    ),
    Mutant(
        "no provisional verdict.json",
        "xenpvh/run/session.py",
        "        self._write_provisional()\n",
        "",
        ("tests/test_run_session.py", "-k", "killed"),
    ),
    Mutant(
        "hostile cmdline checked only on the host",
        "xenpvh/run/session.py",
        "        check_renderable(self.point, req.toolstack)",
        "        pass",
        ("tests/test_run_session.py", "-k", "bad_input or hostile"),
    ),
    Mutant(
        "host memory not checked before create",
        "xenpvh/run/boot.py",
        "        check_host_memory(info, self.spec.memory_mb, host=self.host.name)",
        "        pass",
        ("tests/test_run_boot.py", "-k", "memory"),
    ),
    Mutant(
        "a second Ctrl-C restarts a hanging destroy",
        "xenpvh/run/boot.py",
        "            if not self._destroy_started:\n                self._destroy_quietly()",
        "            self._destroy_quietly()",
        ("tests/test_run_boot.py", "-k", "ctrl_c"),
    ),
    Mutant(
        "infinite stage deadline accepted",
        "xenpvh/profile/loader.py",
        "    if not 0 < deadline <= MAX_DEADLINE:",
        "    if not 0 < deadline:",
        ("tests/test_profile.py",),
    ),
    Mutant(
        "profile patterns on Python's backtracking re",
        "xenpvh/profile/regex.py",
        "        return re2.compile(source, options=_OPTIONS)  # type: ignore[no-any-return]",
        "        import re\n\n        return re.compile(source)",
        ("tests/test_profile.py",),
    ),
    Mutant(
        "a non-UTF-8 profile is a traceback",
        "xenpvh/profile/loader.py",
        '        text = raw.decode("utf-8")\n    except UnicodeDecodeError as e:',
        '        text = raw.decode("utf-8")\n    except ZeroDivisionError as e:',
        ("tests/test_profile.py",),
    ),
    Mutant(
        "profile memory without an upper bound",
        "xenpvh/profile/loader.py",
        "    if not 32 <= memory <= MAX_MEMORY_MB:",
        "    if not 32 <= memory:",
        ("tests/test_profile.py",),
    ),
    Mutant(
        "request vcpus without an upper bound",
        "xenpvh/run/request.py",
        "if self.vcpus is not None and not 1 <= self.vcpus <= MAX_VCPUS:",
        "if self.vcpus is not None and not 1 <= self.vcpus:",
        ("tests/test_run_session.py", "-k", "bad_input"),
    ),
    Mutant(
        "a host fault no longer makes a guest fail broken",
        "xenpvh/check/decide.py",
        "    if facts.host_fault is not None and verdict.verdict is VerdictValue.FAIL:",
        "    if False:",
        ("tests/test_check_decide.py",),
    ),
    Mutant(
        "the run deadline ignored",
        "xenpvh/run/boot.py",
        "            if arrival > deadline:",
        "            if False:",
        ("tests/test_run_boot.py", "-k", "deadline"),
    ),
)


def _copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc", "artifacts", ".ruff*")
    for name in ("xenpvh", "tests", "guestcfg", "pyproject.toml"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)


def _pytest(tree: Path, args: tuple[str, ...]) -> tuple[int, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "XENPVH_GUESTCFG": str(tree / "guestcfg")}
    t0 = time.monotonic()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "-m",
            "not xen",
            "-p",
            "no:cacheprovider",
            *args,
        ],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    return r.returncode, time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="substrings of mutant names to run")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    chosen = [m for m in MUTANTS if not args.only or any(o in m.name for o in args.only)]
    if args.list:
        for m in chosen:
            print(f"{m.name}  ({m.path})")
        return 0
    killed = 0
    baselines: dict[tuple[str, ...], int] = {}
    with tempfile.TemporaryDirectory(prefix="xenpvh-mutants-") as tmp:
        tree = Path(tmp) / "tree"
        _copy_tree(tree)
        for m in chosen:
            target = tree / m.path
            original = target.read_text()
            if original.count(m.old) != 1:
                print(f"ERROR   {m.name}: the text to mutate occurs {original.count(m.old)}x")
                return 2
            if m.tests not in baselines:
                baselines[m.tests] = _pytest(tree, m.tests)[0]
            if baselines[m.tests] != 0:
                print(f"ERROR   {m.name}: its tests fail without the mutant")
                return 2
            target.write_text(original.replace(m.old, m.new))
            try:
                rc, seconds = _pytest(tree, m.tests)
            finally:
                target.write_text(original)
            status = "killed" if rc != 0 else "SURVIVED"
            killed += rc != 0
            print(f"{status:8} {m.name}  [{seconds:.1f}s: {' '.join(m.tests)}]", flush=True)
    total = len(chosen)
    print(f"mutation score: {killed}/{total} killed ({100 * killed / max(total, 1):.0f}%)")
    return 0 if killed == total else 1


if __name__ == "__main__":
    sys.exit(main())
