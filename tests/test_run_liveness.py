"""The xenstored liveness probe: silence is suspicion, death needs the host's word.

Driven directly (no boot): a XenStore at its protocol boundary that times out for a given
number of questions, and a witness that reports xenstored's process state as the dom0's
/proc would.
"""

from __future__ import annotations

import time

import pytest
from test_toolstack_fakes import FakeXenHost

from xenpvh.errors import BrokenError
from xenpvh.run.liveness import XenStoreProbe, xenstored_witness
from xenpvh.toolstack.xenstore import XenStoreTimeout

CALL = 0.1  # one XenStore call's deadline here; dead_after = 0.2 s, slow_cap = 1.2 s


class SilentXenStore:
    """Times out (after waiting its deadline, as the real relay does) for the first
    `silent` questions, then answers; `silent=None` never answers."""

    def __init__(self, silent: int | None) -> None:
        self.silent = silent
        self.asked = 0

    def alive(self) -> None:
        self.asked += 1
        if self.silent is None or self.asked <= self.silent:
            time.sleep(CALL)
            raise XenStoreTimeout(f"xenstore on h: no reply within {CALL}s")


class Witness:
    def __init__(self, answer: str | Exception | None) -> None:
        self.answer = answer
        self.calls = 0

    def __call__(self) -> str | None:
        self.calls += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _probe(xs: SilentXenStore, witness: Witness | None) -> XenStoreProbe:
    return XenStoreProbe(lambda: xs, host="h", interval=0.05, timeout=CALL, witness=witness)


def _drive(probe: XenStoreProbe, seconds: float) -> tuple[str, float]:
    """The watch loop's part: check() every 20 ms; ('', t) if nothing was decided."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        try:
            probe.check()
        except BrokenError as e:
            return str(e), time.monotonic() - t0
        time.sleep(0.02)
    return "", time.monotonic() - t0


def test_a_slow_host_whose_xenstored_runs_is_waited_for() -> None:
    """Silent for 0.8 s (4x dead_after), process running: never broken; answered after."""
    xs, witness = SilentXenStore(8), Witness(None)
    probe = _probe(xs, witness)
    problem, _ = _drive(probe, 1.1)
    assert problem == ""
    assert witness.calls >= 1 and xs.asked > 8
    assert probe.problem() == "" and probe.final() == ""


def test_a_stopped_xenstored_is_dead_once_silence_passes_dead_after() -> None:
    witness = Witness("xenstored is stopped (SIGSTOP)")
    problem, seconds = _drive(_probe(SilentXenStore(None), witness), 3.0)
    assert "xenstored is stopped (SIGSTOP)" in problem
    assert "xenstored on h stopped answering" in problem
    assert 0.2 <= seconds < 0.8  # dead_after, not the slow cap
    assert witness.calls == 1


def test_a_running_xenstored_that_never_answers_is_dead_at_the_cap() -> None:
    witness = Witness(None)
    problem, seconds = _drive(_probe(SilentXenStore(None), witness), 3.0)
    assert "nothing answered in" in problem and "although its process runs" in problem
    assert 1.2 <= seconds < 2.0


def test_a_host_that_cannot_be_asked_leaves_the_cap_to_decide() -> None:
    """The witness's own command fails (the host is as unresponsive as xenstored): no proof
    either way, so neither an early death nor an endless wait."""
    witness = Witness(BrokenError("ssh: timed out"))
    problem, seconds = _drive(_probe(SilentXenStore(None), witness), 3.0)
    assert "nothing answered in" in problem and "although" not in problem
    assert 1.2 <= seconds < 2.0


def test_without_a_witness_silence_alone_decides() -> None:
    problem, seconds = _drive(_probe(SilentXenStore(None), None), 3.0)
    assert "nothing answered in" in problem
    assert 0.2 <= seconds < 0.8


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ("S", None),
        ("R", None),
        ("D", None),
        ("T", "xenstored is stopped (SIGSTOP)"),
        ("t", "xenstored is stopped by a tracer"),
        ("Z", "xenstored is a zombie"),
        ("", "no xenstored process runs"),
    ],
)
def test_the_witness_reads_xenstoreds_process_state(states: str, expected: str | None) -> None:
    host = FakeXenHost()
    host.xenstored = states
    assert xenstored_witness(host)() == expected
    assert host.xenstored_reads == 1


def test_the_witness_names_a_failed_read() -> None:
    from xenpvh.host.base import CommandResult

    host = FakeXenHost()
    key = "sh -c"
    host.fail[key] = CommandResult(("sh", "-c"), 1, b"", b"cut: /proc/7/stat: No such file\n")
    with pytest.raises(BrokenError, match="reading xenstored's state failed: cut"):
        xenstored_witness(host)()
