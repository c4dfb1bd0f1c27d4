"""Which of the host's own emulation faults a failed guest's console shows.

A host (the nested QEMU host above all) declares faults of its own that look like a guest's
failure on the console (`xenpvh.host.base.emulation_faults`); a fault is named only when the
console shows its trigger and, for a fault with a judge (`xenpvh.check.faults`), the judge
confirms it from the rest of the console.  The decider then makes the run `broken` instead of
the guest's `fail` (xenpvh.check.decide, rule 1)."""

from __future__ import annotations

import re
from pathlib import Path

from xenpvh.check.decide import HostFault
from xenpvh.check.faults import judge as judge_fault
from xenpvh.host.base import Host, emulation_faults

# Console lines longer than this are split when looking for a host's emulation faults.
MAX_FAULT_LINE = 64 * 1024


def host_fault(host: Host, console_log: Path) -> HostFault | None:
    """The first of `host`'s emulation faults `console_log` shows and its judge confirms."""
    faults = emulation_faults(host)
    if not faults or not console_log.is_file():
        return None
    compiled = [(f, re.compile(f.pattern)) for f in faults]
    lines = console_lines(console_log)
    for i, line in enumerate(lines):
        for fault, pat in compiled:
            if not pat.search(line):
                continue
            evidence = line.strip()[:200]
            if fault.confirm is not None:
                finding = judge_fault(fault.confirm, lines[i:])
                if finding is None:
                    continue  # looks alike, but the evidence is not there: the guest's
                evidence = f"{evidence}; {finding.evidence}"
            return HostFault(fault.name, fault.why, evidence, host.name)
    return None


def console_lines(log: Path) -> list[str]:
    # console.log is capped by the capture; lines are bounded here too.
    with log.open("rb") as f:
        return [
            raw.decode("utf-8", errors="replace")
            for raw in iter(lambda: f.readline(MAX_FAULT_LINE), b"")
        ]


__all__ = ["MAX_FAULT_LINE", "console_lines", "host_fault"]
