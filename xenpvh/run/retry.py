"""Rerun a boot whose verdict the host itself caused.

A run is one boot (DESIGN.md); this module decides whether to make another.  Only a `broken`
verdict marked `retryable` by the run (a known emulation fault of the host, see
`xenpvh.host.base.EmulationFault`) is retried: a guest `fail`, a `blocked` input or any
other infrastructure failure is returned as it is.  Every attempt keeps its artifacts: the
final one in the run's directory, earlier ones in `attempt-N/` below it, and the verdict's
meta lists them all, so a retried pass never hides what happened.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from xenpvh.check.verdict import Verdict, VerdictValue
from xenpvh.errors import BlockedError
from xenpvh.report.json_report import write_verdict_json

DEFAULT_ATTEMPTS = 3


def retryable(verdict: Verdict) -> bool:
    return verdict.verdict == VerdictValue.BROKEN and verdict.meta.get("retryable") is True


def run_with_retries(
    boot: Callable[[Path], Verdict],
    artifacts: Path,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    on_retry: Callable[[int, Verdict], None] | None = None,
) -> Verdict:
    """Call `boot(artifacts)` until its verdict is not retryable, at most `attempts` times."""
    if attempts < 1:
        raise BlockedError(f"attempts must be at least 1, not {attempts}")
    artifacts = Path(artifacts)
    # What is there before the first attempt is the host's (nested host serial and QEMU
    # logs, the hypervisor check): it stays where it is across attempts.
    before = {p.name for p in artifacts.iterdir()} if artifacts.is_dir() else set()
    history: list[dict[str, object]] = []
    for n in range(1, attempts + 1):
        verdict = boot(artifacts)
        history.append(
            {
                "attempt": n,
                "verdict": str(verdict.verdict),
                "reason": verdict.reason,
                "emulation_fault": verdict.meta.get("emulation_fault"),
            }
        )
        if not retryable(verdict) or n == attempts:
            break
        kept = artifacts / f"attempt-{n}"
        _keep(artifacts, kept, before)
        history[-1]["artifacts"] = str(kept)
        if on_retry is not None:
            on_retry(n, verdict)
    if len(history) > 1:
        verdict.meta["attempts"] = history
        # The report on disk must say it too, not only the object returned.
        if (artifacts / "verdict.json").is_file():
            write_verdict_json(verdict, artifacts / "verdict.json")
    return verdict


def _keep(artifacts: Path, dest: Path, hosts: set[str]) -> None:
    """Move one attempt's files out of the way of the next, leaving the host's files
    (`hosts`, there before the first attempt) and earlier attempt directories alone."""
    dest.mkdir(parents=True, exist_ok=True)
    for p in list(artifacts.iterdir()):
        if p == dest or p.name in hosts or (p.name.startswith("attempt-") and p.is_dir()):
            continue
        shutil.move(str(p), dest / p.name)


__all__ = ["DEFAULT_ATTEMPTS", "retryable", "run_with_retries"]
