"""Rules of the checker that act after a stage completed or on a line still arriving.

- AP ids and CPU counts are checked after their stage passed: a late line naming an AP the
  domain was not given is still a guest that saw CPUs it does not have.
- A partial line (a prompt that never gets its newline) is matched without its escape codes,
  as a complete line is.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from linux_consoles import lines as linux_lines

from xenpvh.check.checker import StageChecker
from xenpvh.check.lines import LineSplitter
from xenpvh.check.verdict import StageStatus, Verdict, VerdictValue
from xenpvh.profile import load_profile

SEED = (Path(__file__).parent / "seed_freebsd_pvhv1_2013.txt").read_text().splitlines()


def stage(v: Verdict, name: str):
    return next(s for s in v.stages if s.name == name)


def seed_with(extra: str, after: str) -> list[str]:
    """The 2013 seed (7 vCPUs) with `extra` printed right after the line holding `after`."""
    at = next(i for i, line in enumerate(SEED) if after in line)
    return [*SEED[: at + 1], extra, *SEED[at + 1 :]]


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("SMP: AP CPU #7 Launched!", "ap-launch: AP id 7 outside 1..6 for 7 vCPUs"),
        ("Launching APs: 9", "ap-launch: AP id 9 outside 1..6 for 7 vCPUs"),
        (
            "FreeBSD/SMP: Multiprocessor System Detected: 8 CPUs",
            "ap-launch: guest reports 8 CPUs, expected 7",
        ),
    ],
)
def test_a_late_cpu_line_fails_its_stage_after_it_passed(extra: str, reason: str) -> None:
    profile = load_profile("freebsd-pvhv1")
    clean = StageChecker(profile, vcpus=7, disks=1, vifs=1, clock=None)
    clean.feed(("\n".join(SEED) + "\n").encode())
    assert clean.finish().verdict is VerdictValue.PASS
    # Printed once root-mount is in progress: ap-launch (and early-init) passed long before.
    checker = StageChecker(profile, vcpus=7, disks=1, vifs=1, clock=None)
    lines = seed_with(extra, "Trying to mount root")
    checker.feed(("\n".join(lines) + "\n").encode())
    v = checker.finish()
    assert (v.verdict, v.reason) == (VerdictValue.FAIL, reason)
    failed = stage(v, v.failed_stage or "")
    assert (failed.status, failed.evidence) == (StageStatus.FAILED, extra)
    assert failed.line == lines.index(extra) + 1


@pytest.mark.parametrize("esc", ["\x1b[1m", "\x1b[0;32m", "\x1b]0;debian\x07"])
def test_an_escaped_prompt_without_newline_passes_live(esc: str) -> None:
    """Live, a prompt never gets its newline: its partial line is matched as the complete
    line would be, escape codes removed."""
    clock = iter(range(1, 1000)).__next__
    c = StageChecker(
        load_profile("linux-pvh"), vcpus=2, disks=1, vifs=1, clock=lambda: float(clock())
    )
    body = "\n".join(linux_lines()[:-1]) + "\n"
    c.feed(body.encode())
    assert not c.done
    c.feed(f"{esc}debian login: \x1b[0m".encode())
    assert c.done, "the prompt's partial line did not complete login"
    v = c.verdict
    assert v.verdict is VerdictValue.PASS
    assert stage(v, "login").evidence == "debian login:"


def test_the_splitter_strips_escapes_from_the_partial_line() -> None:
    s = LineSplitter()
    assert s.feed(b"boot\n\x1b[1;32mdebian \x1b[0mlogin: \x1b]0;t\x07") == "boot\n"
    assert s.partial == "debian login: "
