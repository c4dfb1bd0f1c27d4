"""Telling a hung nested host from a slow one, while a command on it runs.

A guest that freezes the whole nested host makes every ssh command wait out its deadline
(`xl unpause`: a minute), and the run would end as a guest verdict, or as a vague timeout.
`watched_call` runs a host command in a worker thread and, once it has run for `after`
seconds, samples the vCPUs over QEMU's monitor every `every` seconds; a hang finding
(xenpvh.check.hosthang) ends the wait at once with `HostHung`, a BrokenError naming it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from xenpvh.check.hosthang import CODE_BYTES, HostHang, judge, parse_memory_dump, parse_registers
from xenpvh.errors import BrokenError
from xenpvh.host.qmp import Qmp

log = logging.getLogger(__name__)

T = TypeVar("T")

# A command under way this long on the nested host gets its vCPUs sampled (the quick ones,
# most of them, never pay for a sample).
PROBE_AFTER = 8.0
PROBE_EVERY = 8.0
# Between the two register samples of one probe.
SAMPLE_GAP = 1.0


class HostHung(BrokenError):
    """The host itself hung (not the guest, not a slow command)."""

    def __init__(self, finding: HostHang, what: str) -> None:
        super().__init__(f"the nested host hung{what}: {finding.reason} [{finding.evidence}]")
        self.finding = finding


def sample_vcpus(
    monitor: Path, *, gap: float = SAMPLE_GAP, timeout: float = 5.0
) -> HostHang | None:
    """Two samples of every vCPU's registers and the code at its RIP, `gap` apart, judged.

    None when the CPUs look alive, or when the monitor does not answer (that is not
    evidence of a hung guest OS: QEMU itself may be gone, which the caller sees anyway)."""
    try:
        with Qmp(monitor, timeout=timeout) as qmp:
            samples = []
            for i in range(2):
                if i:
                    time.sleep(gap)
                cpus = parse_registers(qmp.hmp("info registers -a"))
                code = {}
                for cpu in cpus:
                    out = qmp.execute(
                        "human-monitor-command",
                        {"command-line": f"x/{CODE_BYTES}xb {cpu.ip:#x}", "cpu-index": cpu.index},
                    )
                    code[cpu.index] = parse_memory_dump(str(out or ""))
                samples.append((cpus, code))
    except BrokenError as e:
        log.debug("vCPU sample over %s failed: %s", monitor, e)
        return None
    (first, code1), (second, code2) = samples
    both = {i: (code1[i], code2[i]) for i in code1.keys() & code2.keys()}
    return judge(first, second, both)


def watched_call(
    call: Callable[[], T],
    probe: Callable[[], HostHang | None],
    *,
    what: str = "",
    after: float = PROBE_AFTER,
    every: float = PROBE_EVERY,
    on_hang: Callable[[], None] | None = None,
) -> T:
    """`call()`'s result; but once it has run `after` seconds, `probe()` every `every`
    seconds, and a finding raises HostHung (after `on_hang`, which should make the stuck
    call give up, e.g. by closing its connection)."""
    done = threading.Event()
    box: dict[str, object] = {}

    def worker() -> None:
        try:
            box["result"] = call()
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e
        finally:
            done.set()

    threading.Thread(target=worker, name="watched-call", daemon=True).start()
    next_probe = time.monotonic() + after
    while not done.wait(max(0.0, next_probe - time.monotonic())):
        finding = probe()
        if finding is not None and not done.is_set():
            if on_hang is not None:
                on_hang()
            raise HostHung(finding, what)
        next_probe = time.monotonic() + every
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]


__all__ = ["PROBE_AFTER", "PROBE_EVERY", "HostHung", "sample_vcpus", "watched_call"]
