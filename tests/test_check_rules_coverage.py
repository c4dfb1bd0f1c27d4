"""Rules of the checker's rooms that no other test pinned (issue 25: each one's mutant,
in bench/mutants.py, fails here).

A small custom profile keeps the consoles short: stage `one` needs two lines, `two` needs a
line plus AP ids and (optionally) a CPU count, `three` needs a prompt and its devices.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from xenpvh.check.checker import EventKind, StageChecker, check_file
from xenpvh.check.lines import MAX_LINE, strip_prefix
from xenpvh.check.serial import HOST_LINES_MAX, XenSerialFilter
from xenpvh.check.stages import SET_MAX
from xenpvh.check.stamps import LOOKBACK
from xenpvh.check.verdict import (
    StageStatus,
    Verdict,
    VerdictValue,
)
from xenpvh.errors import BlockedError
from xenpvh.profile.loader import parse_profile
from xenpvh.profile.model import Profile

PROFILE = """
name = "rules"
stage_set = "custom"
blame_lines = 2
forbidden = ['panic', {pattern = 'oops-two', stage = 'two'}]
blame = [{pattern = 'in three', stage = 'three'}]
notice = ['note:']
blocked = ['SKIP:']
[[stages]]
name = "one"
deadline = 10
required = ['alpha', 'beta']
optional = ['maybe']
[[stages]]
name = "two"
deadline = 20
required = ['gamma']
ap_ids = ['APs: (?P<ids>[ 0-9]+)']
cpu_count = ['CPUs: (?P<n>[0-9]+)']
[[stages]]
name = "three"
deadline = 30
required = ['login:']
disk_devices = ['disk (?P<dev>[a-z0-9]+) ready']
vif_devices = ['vif (?P<dev>[a-z0-9]+) up']
"""

GOOD = ["alpha", "beta", "gamma", "APs: 1", "CPUs: 2", "disk xvda ready", "vif eth0 up", "login:"]


def profile(text: str = PROFILE, **replace: str) -> Profile:
    for old, new in replace.items():
        text = text.replace(old, new)
    return parse_profile(tomllib.loads(text), Path("rules.toml"))


def checker(p: Profile | None = None, *, vcpus: int = 2, disks: int = 1, vifs: int = 1, **kw):
    return StageChecker(p or profile(), vcpus=vcpus, disks=disks, vifs=vifs, clock=None, **kw)


def run(lines: list[str], *, finish: bool = True, **kw) -> Verdict:
    c = checker(**kw)
    c.feed(("\n".join(lines) + "\n").encode())
    return c.finish() if finish else c.verdict


def stage(v: Verdict, name: str):
    return next(s for s in v.stages if s.name == name)


class Clock:
    """A settable clock for live mode."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_profile_passes_its_good_console() -> None:
    v = run(GOOD)
    assert v.verdict is VerdictValue.PASS, v.reason


# ---------------------------------------------------------------- checker: live rules


def test_a_stage_deadline_is_exceeded_only_past_it() -> None:
    clock = Clock()
    c = StageChecker(profile(), vcpus=2, disks=1, vifs=1, clock=clock)
    clock.now = 10.0  # exactly the deadline of stage one: not yet exceeded
    c.poll()
    assert not c.done
    clock.now = 10.001
    c.poll()
    assert c.done and c.verdict.reason == "one not reached within 10s"


def test_the_verdict_is_final_once_decided() -> None:
    c = checker()
    c.feed(("\n".join(GOOD) + "\n").encode())
    assert c.done and c.verdict.verdict is VerdictValue.PASS
    assert c.feed(b"oops-two\n") == []
    assert c.prove_devices("vif", ["0"]) == []
    assert c.finish().verdict is VerdictValue.PASS


def test_poll_offline_decides_nothing() -> None:
    c = checker()
    assert c.poll() == [] and not c.done


# ---------------------------------------------------------------- checker: offline lines


def test_an_unstamped_line_inherits_the_stamp_of_an_earlier_block() -> None:
    c = checker()
    c.feed(b"[    5.000000] boring\n")
    c.feed(b"alpha\nbeta\n")
    assert stage(c.verdict, "one").t == 5.0


def test_the_blame_window_closes_at_the_end_of_a_block() -> None:
    c = checker()
    c.feed(b"alpha\npanic\nx\n")
    assert not c.done, "one line after the forbidden one: the window is still open"
    c.feed(b"y\nz\n")
    assert c.done, "the window passed: the failure is decided without more input"
    assert c.verdict.reason == "forbidden pattern 'panic' during one"


def test_a_partial_line_completed_later_is_matched_once() -> None:
    c = checker()
    first = c.feed(b"maybe")
    rest = c.feed(b" so\n")
    matched = [e for e in first + rest if e.kind is EventKind.MATCHED]
    assert [(e.stage, e.detail) for e in matched] == [("one", "maybe")]


def test_a_notice_line_is_no_stage_line() -> None:
    c = checker()
    events = c.feed(b"note: the guest said something\n")
    assert [e.kind for e in events if e.kind is not EventKind.STARTED] == [EventKind.NOTICE]
    assert c.verdict.meta["notices"][0]["name"] == "note:"


def test_an_overflowed_partial_line_waits_for_its_end() -> None:
    """The partial line is matched while it grows; once past the cap it is not rescanned
    (cost bound): its capped text is matched when the line ends."""
    c = checker()
    c.feed(b"x" * 100)
    assert not [e for e in c.feed(b" alpha " + b"y" * MAX_LINE) if e.kind is EventKind.MATCHED]
    matched = [e for e in c.feed(b"\n") if e.kind is EventKind.MATCHED]
    assert [e.detail for e in matched] == ["alpha"]


def test_a_completed_stage_ignores_its_repeated_lines() -> None:
    c = checker()
    events = c.feed(b"alpha\nbeta\nalpha again\n")
    matched = [e.line for e in events if e.kind is EventKind.MATCHED]
    assert matched == ["alpha", "beta"]
    assert stage(c.verdict, "one").evidence == "beta"


def test_stage_evidence_is_capped() -> None:
    v = run(["alpha", "beta " + "y" * 2000])
    assert stage(v, "one").evidence == ("beta " + "y" * 2000)[:512]


XENSTORE_VIFS = {"vif_devices = ['vif (?P<dev>[a-z0-9]+) up']": 'vif_evidence = "xenstore"'}


def test_xenstore_proof_after_the_verdict_changes_nothing() -> None:
    c = checker(profile(**XENSTORE_VIFS), xenstore_proof=True)
    c.feed(("\n".join(x for x in GOOD if not x.startswith("vif")) + "\n").encode())
    assert not c.done and c.awaiting_xenstore("three")
    c.feed(b"panic\n")
    assert c.finish().verdict is VerdictValue.FAIL
    assert c.prove_devices("vif", ["0"]) == []
    assert c.verdict.verdict is VerdictValue.FAIL


def test_an_unreadable_console_log_is_blocked(tmp_path: Path) -> None:
    with pytest.raises(BlockedError, match="cannot read console log"):
        check_file(tmp_path / "missing.log", profile(), 2, 1, 1)


def test_a_device_name_is_read_from_the_whole_line_only() -> None:
    """`disk xv` (the line still arriving) must not count a device `xv`: the disk named
    again later would be a second disk."""
    c = checker(profile(**{"disk (?P<dev>[a-z0-9]+) ready": "disk (?P<dev>[a-z0-9]+)"}))
    c.feed(("\n".join(GOOD[:5]) + "\n").encode())
    c.feed(b"disk xv")
    c.feed(b"da\ndisk xvda again\nvif eth0 up\nlogin:\n")
    assert c.verdict.verdict is VerdictValue.PASS, c.verdict.reason


def test_a_notice_on_a_line_still_arriving_waits_for_the_whole_line() -> None:
    c = checker()
    c.feed(b"note: part")
    c.feed(b"ial\n")
    assert [n["evidence"] for n in c.verdict.meta["notices"]] == ["note: partial"]


def test_a_pattern_without_literals_is_found_after_a_match_spanning_lines() -> None:
    r"""`[0-9]\s+[0-9]` matches "1\n2" across lines; the scan resumes at the next line, so
    that line's own match ("3 4") is still found."""
    p = profile(**{"required = ['alpha', 'beta']": r"required = ['alpha', '[0-9]\s+[0-9]']"})
    c = checker(p)
    c.feed(b"alpha\nx 1\n2 y 3 4\n")
    assert stage(c.verdict, "one").status is StageStatus.PASSED
    assert stage(c.verdict, "one").evidence == "2 y 3 4"


@pytest.mark.parametrize(("disks", "vifs"), [(2, 1), (1, 2)])
def test_every_configured_device_must_show(disks: int, vifs: int) -> None:
    v = run(GOOD, disks=disks, vifs=vifs)
    assert (v.verdict, v.failed_stage) == (VerdictValue.FAIL, "three")
    assert f"disks seen {{xvda}}, expected {disks}; vifs seen {{eth0}}, expected {vifs}" in (
        stage(v, "three").detail
    )


def test_a_stage_completes_at_the_later_of_its_own_time_and_the_previous_stage() -> None:
    v = run(["[1.0] gamma", "[1.5] APs: 1", "[2.0] alpha", "[3.0] beta"], finish=False)
    assert (stage(v, "one").t, stage(v, "two").t) == (3.0, 3.0)


def test_a_repeated_required_line_keeps_the_first_as_evidence() -> None:
    v = run(["alpha", "APs: 1", "gamma first", "gamma second", "beta"], finish=False)
    assert stage(v, "two").status is StageStatus.PASSED
    assert stage(v, "two").evidence == "gamma first"
    assert stage(v, "two").line == 3


def test_ap_id_zero_is_not_an_ap() -> None:
    v = run(["alpha", "beta", "APs: 0 1"])
    assert v.reason == "two: AP id 0 outside 1..1 for 2 vCPUs"


def test_a_forbidden_pattern_naming_a_stage_wins_on_a_line_both_match() -> None:
    v = run(["alpha", "panic oops-two"])
    assert (v.failed_stage, v.reason) == ("two", "forbidden pattern 'oops-two' indicts two")


def test_a_staged_forbidden_line_in_the_window_names_the_stage() -> None:
    v = run(["alpha", "panic", "oops-two"])
    assert v.failed_stage == "two"
    assert v.reason == "forbidden pattern 'panic' indicts two (blamed by 'oops-two')"


def test_the_stamp_look_back_is_bounded() -> None:
    """An unstamped line looks back at most LOOKBACK lines of its block for a stamp, then
    takes the last stamp of the blocks before (a bounded cost per line)."""
    c = checker()
    c.feed(b"[3.0] boring\n")
    c.feed(b"[5.0] x\n" + b"y\n" * (LOOKBACK + 8) + b"alpha\nbeta\n")
    assert stage(c.verdict, "one").t == 3.0


def test_wall_clock_stamps_count_from_the_first_one() -> None:
    v = run(["[2024-01-01 10:00:00] alpha", "[2024-01-01 10:00:02.5] beta"], finish=False)
    assert stage(v, "one").t == 2.5


# ---------------------------------------------------------------- Xen's serial line: bounds


def test_a_serial_line_without_its_newline_is_capped() -> None:
    f = XenSerialFilter(1)
    assert f.feed(b"(d1) " + b"x" * 100_000) == b""
    assert f.feed(b"(d1) more") == b""
    out = f.feed(b"\n")
    assert out.endswith(b"\n") and len(out) <= 64 * 1024


def test_the_serial_tail_after_a_line_is_capped() -> None:
    f = XenSerialFilter(1)
    assert f.feed(b"(d1) a\n(d1) " + b"x" * 100_000) == b"a\n"
    out = f.feed(b"\n")
    assert len(out) <= 64 * 1024


def test_host_lines_of_the_serial_line_are_bounded() -> None:
    f = XenSerialFilter(1)
    f.feed(b"(XEN) " + b"x" * 1000 + b"\n" + b"(XEN) line\n" * (HOST_LINES_MAX + 10))
    assert len(f.host_lines) == HOST_LINES_MAX
    f = XenSerialFilter(1)
    f.feed(b"(XEN) " + b"x" * 1000 + b"\n")
    assert len(f.host_lines[0]) == 512


@pytest.mark.parametrize("domid", [-1, True])
def test_a_serial_filter_refuses_a_bad_domid(domid: object) -> None:
    with pytest.raises(ValueError, match="domid must be an integer >= 0"):
        XenSerialFilter(domid)  # type: ignore[arg-type]


# ---------------------------------------------------------------- lines


def test_an_impossible_wall_clock_stamp_is_no_stamp() -> None:
    assert strip_prefix("[2024-13-45 10:00:00] alpha") == ("alpha", None)
    v = run(["[2024-13-45 10:00:00] alpha", "beta"], finish=False)
    assert stage(v, "one").status is StageStatus.PASSED and stage(v, "one").t is None


def test_an_unterminated_last_line_is_normalised_like_the_others(tmp_path: Path) -> None:
    """The console's last line, without its newline, loses its escape codes too: a forbidden
    pattern (never matched on a partial line) still sees the text."""
    log = tmp_path / "console.log"
    log.write_bytes(b"alpha\npa\x1b[1mnic\x1b[0m")
    v = check_file(log, profile(), 2, 1, 1)
    assert v.reason == "forbidden pattern 'panic' during one"
    assert stage(v, "one").evidence == "panic"


# ---------------------------------------------------------------- more checker bounds


def test_forbidden_evidence_is_capped() -> None:
    line = "panic " + "x" * 2000
    v = run(["alpha", line])
    assert stage(v, "one").evidence == line[:512]


def test_xenstore_device_ids_are_bounded() -> None:
    c = checker(profile(**XENSTORE_VIFS), xenstore_proof=True)
    c.feed(("\n".join(x for x in GOOD if not x.startswith("vif")) + "\n").encode())
    c.prove_devices("vif", [str(i) for i in range(SET_MAX + 100)])
    v = c.verdict
    assert v.verdict is VerdictValue.PASS
    ids = stage(v, "three").detail.split("(")[1].split(")")[0].split(",")
    assert len(ids) == SET_MAX


def test_a_cpu_count_is_read_from_the_whole_line_only() -> None:
    aps = " ".join(str(i) for i in range(1, 12))
    c = checker(vcpus=12)
    c.feed(f"alpha\nbeta\ngamma\nAPs: {aps}\n".encode())
    c.feed(b"CPUs: 1")
    c.feed(b"2\n")
    assert not c.done, c.verdict.reason  # "CPUs: 1" would have failed: 1 CPU, not 12
    assert c.finish().failed_stage == "three"


@pytest.mark.parametrize("kind", ["aps", "disks"])
def test_ap_ids_and_device_names_are_bounded(kind: str) -> None:
    n = SET_MAX + 50
    if kind == "aps":
        lines = ["alpha", "beta", "gamma", "APs: " + " ".join(str(i) for i in range(1, n))]
        v = run(lines, vcpus=n)
        seen = stage(v, "two").detail.split("APs seen {")[1].split("}")[0]
    else:
        lines = [*GOOD[:5], *(f"disk d{i} ready" for i in range(n))]
        v = run(lines, disks=n)
        seen = stage(v, "three").detail.split("disks seen {")[1].split("}")[0]
    assert len(seen.split(",")) == SET_MAX


def test_blame_lines_zero_fails_at_once() -> None:
    c = checker(profile(**{"blame_lines = 2": "blame_lines = 0"}))
    c.feed(b"alpha\npanic\n")
    assert c.done and c.verdict.reason == "forbidden pattern 'panic' during one"


def test_since_boot_stamps_count_from_boot() -> None:
    v = run(["[5.0] alpha", "[6.0] beta"], finish=False)
    assert stage(v, "one").t == 6.0


def test_a_stamped_line_is_remembered_beyond_the_look_back() -> None:
    c = checker()
    c.feed(b"[2.0] x\n")
    c.feed(b"[7.0] alpha\n" + b"y\n" * (LOOKBACK + 8))
    c.feed(b"beta\n")
    assert stage(c.verdict, "one").t == 7.0


def test_an_undecided_console_is_a_provisional_fail() -> None:
    c = checker()
    c.feed(b"alpha\n")
    v = c.verdict
    assert (v.verdict, v.reason, v.failed_stage) == (
        VerdictValue.FAIL,
        "undecided: one in progress",
        None,
    )
