"""A guest console read from Xen's serial line is judged like the same console from xl.

Xen's format (xen/drivers/char/console.c): `guest_console_write()` buffers a domU's text up
to its newline and drops every byte that is not `isprint()` (tab stays), then
`guest_printk()` prints it through `vprintk_common()` with the prefix `(d<domid>) ` and, with
`console_timestamps=`, `printk_start_of_line()`'s stamp after the prefix.  Xen's own lines
carry `(XEN) `; the UART driver sends CR LF.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from xenpvh.check.checker import StageChecker, check_file
from xenpvh.check.decide_console import decide_console
from xenpvh.check.serial import XenSerialFilter
from xenpvh.check.verdict import Verdict, VerdictValue
from xenpvh.cli.main import main
from xenpvh.errors import BlockedError
from xenpvh.profile import load_profile

HERE = Path(__file__).parent

# Every profile with a real console (XTF's written from its own printk formats):
# (console file, profile, vcpus, disks, vifs).
CASES = {
    "freebsd13.2-4vcpu": ("samples/freebsd13.2-pvh-4vcpu-guestkit.log", "freebsd-pvh", 4, 1, 1),
    "freebsd13.2-as-6vcpu": ("samples/freebsd13.2-pvh-4vcpu-guestkit.log", "freebsd-pvh", 6, 1, 1),
    "linux-guestkit": ("samples/linux-pvh-guestkit-6.1-1vcpu.log", "linux-pvh", 1, 1, 1),
    "linux-double-upcall": ("samples/tcg-double-upcall-linux-6.1.log", "linux-pvh", 1, 1, 1),
    "debian12-login": ("samples/debian12-systemd-pvh-login.log", "debian-pvh", 1, 1, 1),
    "debian12-2disks": ("samples/debian12-systemd-pvh-2disks-2vifs.log", "debian-pvh", 2, 2, 2),
    "debian12-wrong-root": ("samples/debian12-systemd-pvh-wrong-root.log", "debian-pvh", 1, 1, 1),
    "debian12-grub": ("samples/debian12-systemd-pvh-grub-login.log", "debian-pvh-grub", 2, 1, 1),
    "seed-2013": ("seed_freebsd_pvhv1_2013.txt", "freebsd-pvhv1", 7, 1, 1),
    "xtf-hvm64": ("", "xtf", 1, 0, 0),
    "xtf-pv64": ("", "xtf", 1, 0, 0),
}
XTF = {
    "xtf-hvm64": b"--- Xen Test Framework ---\nEnvironment: HVM 64bit (Long mode 4 levels)\n"
    b"Hello World\nTest result: SUCCESS\n",
    "xtf-pv64": b"--- Xen Test Framework ---\nEnvironment: PV 64bit (Long mode 4 levels)\n"
    b"Hello World\nTest result: SUCCESS\n",
}

XEN_VERSION = (
    b"Xen version 4.17.3 (Debian 4.17.3+10-g091466ba55-1) (pkg-xen-devel@lists.alioth.debian.org)"
    b" (x86_64-linux-gnu-gcc (Debian 12.2.0-14) 12.2.0) debug=n  Tue Jan  2 18:42:07 UTC 2024"
)
# Xen's own lines, as printk() prints them, interleaved with the guest's.
XEN_LINES = [
    b"(XEN) d1v0: upcall vector f3",
    b"(XEN) grant_table.c:1882:d1v0 Expanding d1 grant table from 1 to 2 frames",
    b"(XEN) *** Serial input to DOM0 (type 'CTRL-a' three times to switch input)",
    b"(d2) [    0.000000] Linux version 6.1.0 another guest: never this guest's line",
    b"[  OK  ] dom0's own direct output carries no prefix",
]


def guest_bytes(name: str) -> bytes:
    file = CASES[name][0]
    return XTF[name] if name in XTF else (HERE / file).read_bytes()


def xen_printable(line: bytes) -> bytes:
    """Xen's isprint() on a domU's bytes: ASCII 0x20-0x7e, Latin-1 0xa0-0xff, and tab."""
    return bytes(c for c in line if 0x20 <= c < 0x7F or c >= 0xA0 or c == 0x09)


def to_xen_serial(guest: bytes, domid: int, stamp: bytes = b"") -> bytes:
    """`guest` as Xen's serial line shows it: every fifth guest line preceded by a Xen line
    or another domain's; the last, unfinished line (a prompt) prefixed like the others.
    `stamp` is Xen's `console_timestamps=` stamp, after the prefix of every line."""
    lines = guest.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    # Xen boots (and prints) before any guest: console_init_preirq()'s version line first.
    out = bytearray(b"(XEN) " + stamp + XEN_VERSION + b"\r\n")
    for i, line in enumerate(lines):
        if i % 5 == 2:
            host = XEN_LINES[(i // 5) % len(XEN_LINES)]
            if host.startswith(b"("):
                host = host.replace(b") ", b") " + stamp, 1)
            out += host + b"\r\n"
        last = i == len(lines) - 1
        if last and not line:
            break
        out += b"(d%d) " % domid + stamp + xen_printable(line) + (b"" if last else b"\r\n")
    return bytes(out)


def judge(name: str, data: bytes, chunk: int = 1 << 20, **source) -> Verdict:
    _, prof, vcpus, disks, vifs = CASES[name]
    c = StageChecker(load_profile(prof), vcpus=vcpus, disks=disks, vifs=vifs, clock=None, **source)
    for i in range(0, len(data), chunk):
        c.feed(data[i : i + chunk])
    return c.finish()


def outcome(v: Verdict) -> tuple:
    return (
        v.verdict,
        v.failed_stage,
        v.reason,
        [(s.name, s.status, s.t, s.evidence, s.detail) for s in v.stages],
    )


def without_times(o: tuple) -> tuple:
    return (*o[:3], [(n, st, ev, d) for n, st, _, ev, d in o[3]])


@pytest.mark.parametrize("name", list(CASES))
def test_xen_serial_console_is_judged_like_the_xl_console(name: str) -> None:
    plain = judge(name, guest_bytes(name))  # the console as `xl console` shows it
    serial = to_xen_serial(guest_bytes(name), 7)
    assert b"(d7) " in serial and b"(XEN) " in serial
    assert outcome(judge(name, serial, source="xen-serial", domid=7)) == outcome(plain)
    for chunk in (61, 1):
        # However the serial line is cut: the same decision (an unstamped line's offline
        # time depends on where blocks end, for an xl console as well).
        got = judge(name, serial, chunk, source="xen-serial", domid=7)
        assert without_times(outcome(got)) == without_times(outcome(plain))
    # Without a domid the first guest domain that prints is followed (d2 comes later here).
    assert outcome(judge(name, serial, source="xen-serial")) == outcome(plain)


def test_the_samples_verdicts_survive_the_serial_form() -> None:
    """The comparison above is not vacuous: the cases pass and fail as their consoles do."""
    got = {
        n: judge(n, to_xen_serial(guest_bytes(n), 1), source="xen-serial", domid=1).verdict
        for n in CASES
    }
    assert got["freebsd13.2-4vcpu"] is VerdictValue.PASS
    assert got["seed-2013"] is VerdictValue.PASS
    assert got["debian12-2disks"] is VerdictValue.PASS
    assert got["freebsd13.2-as-6vcpu"] is VerdictValue.FAIL
    assert got["debian12-wrong-root"] is VerdictValue.FAIL
    assert got["xtf-pv64"] is VerdictValue.FAIL


STAMPS = {
    "date": b"[2024-05-02 10:00:01] ",
    "datems": b"[2024-05-02 10:00:01.123] ",
    "boot": b"[   12.345678] ",
    "raw": b"[0000001a2b3c4d5e] ",
}


@pytest.mark.parametrize("name", ["linux-guestkit", "seed-2013", "debian12-login"])
@pytest.mark.parametrize("stamp", list(STAMPS))
def test_xen_timestamps_are_removed(name: str, stamp: str) -> None:
    """Times come from the guest's own stamps (Linux's), or none (FreeBSD's console), as on
    the xl console: Xen's clock does not mix in."""
    plain = judge(name, guest_bytes(name))
    serial = to_xen_serial(guest_bytes(name), 4, STAMPS[stamp])
    assert outcome(judge(name, serial, source="xen-serial", domid=4)) == outcome(plain)


def test_xens_boot_stamp_before_a_guest_stamp_is_xens_even_unseen_on_xen_lines() -> None:
    f = XenSerialFilter(1)
    assert f.feed(b"(d1) [   12.345678] [    0.000000] Linux\n") == b"[    0.000000] Linux\n"
    # Without stamps on Xen's lines, a lone since-boot stamp is the guest's own.
    assert f.feed(b"(d1) [    0.100000] smp: Brought up\n") == b"[    0.100000] smp: Brought up\n"
    f.feed(b"(XEN) [   13.000000] Xen's line\n")
    assert f.feed(b"(d1) [   13.500000] login: \n") == b"login: \n"


def test_other_domains_and_xen_lines_are_host_evidence_not_guest_lines() -> None:
    f = XenSerialFilter(5)
    out = f.feed(b"(XEN) Xen version 4.17\r\n(d5) panic: not this\r")
    out += f.feed(b"\n(d6) panic: other guest\r\nplain dom0 line\r\n(d5) [0;32mok[0m\r\n")
    assert out == b"panic: not this\nok\n"
    assert list(f.host_lines) == [
        "(XEN) Xen version 4.17",
        "(d6) panic: other guest",
        "plain dom0 line",
    ]
    assert f.flush() == b""


def test_another_domains_panic_does_not_fail_this_guest() -> None:
    name = "seed-2013"
    serial = to_xen_serial(guest_bytes(name), 3) + b"(d4) panic: page fault\r\n"
    assert judge(name, serial, source="xen-serial", domid=3).verdict is VerdictValue.PASS
    own = to_xen_serial(guest_bytes(name), 3).replace(
        b"(d3) Trying to mount root", b"(d3) panic: page fault\r\n(d3) Trying to mount root"
    )
    assert judge(name, own, source="xen-serial", domid=3).verdict is VerdictValue.FAIL


def test_dom0_is_never_followed_without_a_domid() -> None:
    f = XenSerialFilter()
    assert f.feed(b"(d0) dom0 through the hypercall\n(d9) guest\n") == b"guest\n"
    assert f.domid == 9


def test_check_file_reads_a_xen_serial_log(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(to_xen_serial(guest_bytes("xtf-hvm64"), 2))
    v = check_file(log, load_profile("xtf"), 1, 0, 0, source="xen-serial", domid=2)
    assert v.verdict is VerdictValue.PASS
    assert (v.meta["console_source"], v.meta["domid"]) == ("xen-serial", 2)
    # Read as an xl console, the (d2) prefix hides XTF's anchored banner: the gap.
    as_xl = check_file(log, load_profile("xtf"), 1, 0, 0)
    assert (as_xl.verdict, as_xl.failed_stage) == (VerdictValue.FAIL, "early-init")


def test_unknown_console_source_is_blocked() -> None:
    with pytest.raises(BlockedError, match="console source"):
        StageChecker(load_profile("xtf"), vcpus=1, disks=0, vifs=0, source="serial")


def test_verdicts_are_the_deciders() -> None:
    """The checker reports facts; the verdict it hands out is the decider's from them."""
    c = StageChecker(load_profile("xtf"), vcpus=1, disks=0, vifs=0, clock=None)
    c.feed(XTF["xtf-pv64"])
    facts = c.facts()
    assert facts.failure is not None and facts.failure.stage == 0
    assert dataclasses.asdict(decide_console(facts)) == dataclasses.asdict(c.finish())


def test_cli_checks_a_xen_serial_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(to_xen_serial(guest_bytes("xtf-hvm64"), 3))
    argv = ["check", str(log), "--profile", "xtf", "--format", "json"]
    assert main([*argv, "--console-source", "xen-serial", "--domid", "3"]) == 0
    assert '"console_source": "xen-serial"' in capsys.readouterr().out
    assert main(argv) == 1  # the same log read as an xl console
