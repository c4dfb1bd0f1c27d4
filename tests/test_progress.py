"""Progress as typed events: library work emits them (builds, apt, the nested host's wait),
the CLI draws them with rich (`xenpvh.cli.progress.ProgressView`).

Emitters run for real (make, a patch that does not apply, an apt stand-in writing apt's
Status-Fd protocol, a TCP server sending an ssh banner); the renderer draws on a rich
console writing to a string."""

from __future__ import annotations

import io
import os
import socket
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from test_build_xtf import xtf_tree

from xenpvh.build.apt.run import reporting, run_apt
from xenpvh.build.builder import build_xen
from xenpvh.build.tree import TreeSpec
from xenpvh.build.xtf import build_xtf_cached
from xenpvh.cli.build import build_xen_command
from xenpvh.cli.progress import ProgressView
from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.base import CommandResult
from xenpvh.host.nested.ready import Machine, wait_ready
from xenpvh.host.ssh import SSHAddress
from xenpvh.util.progress import (
    Note,
    ProgressEvent,
    Status,
    TaskAdvanced,
    TaskFinished,
    TaskStarted,
)


class Recorder:
    """A sink that keeps every event."""

    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []

    def __call__(self, event: ProgressEvent) -> None:
        self.events.append(event)

    def labels(self) -> dict[int, str]:
        return {e.task: e.label for e in self.events if isinstance(e, TaskStarted)}

    def finished(self) -> dict[str, bool]:
        """label -> ok, for every finished task."""
        labels = self.labels()
        return {labels[e.task]: e.ok for e in self.events if isinstance(e, TaskFinished)}

    def details(self, label: str) -> list[str]:
        tid = next(t for t, name in self.labels().items() if name == label)
        return [e.detail for e in self.events if isinstance(e, TaskAdvanced) and e.task == tid]


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


# -- emitters ------------------------------------------------------------------------------


def test_a_build_reports_a_task_with_its_output_lines(tmp_path: Path) -> None:
    src = xtf_tree(tmp_path / "xtf", tests=("example",))
    sink = Recorder()
    build_xtf_cached(src, progress=sink)
    assert sink.finished() == {"xtf make": True}
    assert any("test-hvm64-example" in line for line in sink.details("xtf make"))
    # Started before it advanced, finished last.
    kinds = [type(e) for e in sink.events]
    assert kinds[0] is TaskStarted and kinds[-1] is TaskFinished


def test_a_build_that_fails_finishes_its_task_failed(tmp_path: Path) -> None:
    src = xtf_tree(tmp_path / "xtf", tests=("example",))
    (src / "tests" / "example" / "FAIL").write_text("")
    sink = Recorder()
    with pytest.raises(BlockedError):
        build_xtf_cached(src, progress=sink)
    assert sink.finished() == {"xtf make": False}


def _bad_patch_tree(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "tree/xen").mkdir(parents=True)
    (tmp_path / "tree/xen/Makefile").write_text("all:\n")
    bad = tmp_path / "0001-bad.diff"
    bad.write_text("--- a/xen/Makefile\n+++ b/xen/Makefile\n@@ -1 +1 @@\n-nothing\n+x\n")
    return tmp_path / "tree", bad


def test_build_phases_are_tasks_and_the_one_that_raises_ends_failed(tmp_path: Path) -> None:
    tree, bad = _bad_patch_tree(tmp_path)
    sink = Recorder()
    with pytest.raises(BlockedError, match=r"0001-bad\.diff"):
        build_xen(TreeSpec.from_cli(str(tree), [str(bad)], None), progress=sink)
    assert sink.finished() == {
        "xen: resolve": True,
        "xen: download": True,
        "xen: patch": False,
    }
    # Every task that started also finished: no row is left spinning.
    assert set(sink.labels().values()) == set(sink.finished())


APT_STANDIN = """
import os, sys

# apt's Status-Fd protocol: `-o APT::Status-Fd=N` first, then dlstatus:ITEM:PERCENT:TEXT.
fd = int(sys.argv[2].removeprefix("APT::Status-Fd="))
os.write(fd, b"dlstatus:1:40:Get\\ndlstatus:2:90:Get\\n")
if os.path.exists(os.path.join(os.path.dirname(sys.argv[0]), "fail")):
    print("E: Unable to locate package nope")
    sys.exit(100)
print("Fetched 2 B")
"""


@pytest.fixture
def apt(tmp_path: Path) -> Path:
    path = tmp_path / "bin" / "apt-get"
    path.parent.mkdir()
    path.write_text(f"#!{sys.executable}" + APT_STANDIN)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_apt_downloads_are_a_task_with_percent_done(apt: Path) -> None:
    sink = Recorder()
    with reporting(sink):
        run_apt([str(apt), "download", "pkg"], "apt download pkg")
    done = [e.completed for e in sink.events if isinstance(e, TaskAdvanced)]
    assert done == [40.0, 90.0]
    assert sink.finished() == {"apt download pkg": True}
    assert sink.labels()[sink.events[0].task] == "apt download pkg"  # type: ignore[union-attr]


def test_apt_failing_ends_its_task_failed(apt: Path) -> None:
    (apt.parent / "fail").write_text("")
    sink = Recorder()
    with reporting(sink), pytest.raises(BlockedError, match="not on the mirrors"):
        run_apt([str(apt), "download", "nope"], "apt download nope")
    assert sink.finished() == {"apt download nope": False}


@pytest.fixture
def ssh_banner() -> Iterator[int]:
    """A port that answers like sshd's first line."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    server.close()


class Dom0:
    """Stands in for the dom0's SSHHost at its protocol boundary: connects on the second
    try, `xl list` shows Domain-0 on the second."""

    def __init__(self, port: int) -> None:
        self.address = SSHAddress("root", "127.0.0.1", port)
        self.connects = 0
        self.lists = 0

    def connect(self) -> None:
        self.connects += 1
        if self.connects < 2:
            raise BrokenError("sshd not up yet")

    def run(self, argv: list[str], *, timeout: float = 120.0) -> CommandResult:
        self.lists += 1
        out = b"Name ID\nDomain-0 0\n" if self.lists >= 2 else b""
        return CommandResult(tuple(argv), 0 if out else 1, out, b"")


def _machine(alive: bool = True) -> Machine:
    return Machine(
        alive=lambda: alive,
        exit_status=lambda: None if alive else 1,
        serial_tail=lambda n: "(XEN) x",
    )


def test_the_nested_hosts_wait_is_a_status_then_notes(ssh_banner: int) -> None:
    sink = Recorder()
    dom0: Any = Dom0(ssh_banner)
    times = wait_ready(dom0, _machine(), started=0.0, timeout=1e9, progress=sink)
    statuses = [e.text for e in sink.events if isinstance(e, Status)]
    assert statuses[0] == "booting nested Xen…"
    assert any(s.startswith("nested Xen: waiting for ssh") and "(XEN) x" in s for s in statuses)
    assert any(s.startswith("nested Xen: waiting for xl list") for s in statuses)
    assert statuses[-1] == ""  # the wait is over: the status line goes
    notes = [e.text for e in sink.events if isinstance(e, Note)]
    assert notes[0].startswith("nested host: ssh ready after") and "`xl list` works" in notes[1]
    assert times.xl_ready >= times.ssh_ready


def test_the_wait_clears_its_status_when_qemu_dies(ssh_banner: int) -> None:
    sink = Recorder()
    dom0: Any = Dom0(ssh_banner)
    with pytest.raises(BrokenError, match=r"(?s)QEMU exited \(status 1\).*\(XEN\) x"):
        wait_ready(dom0, _machine(alive=False), started=0.0, timeout=1e9, progress=sink)
    assert sink.events[-1] == Status("")


# -- the CLI's renderer --------------------------------------------------------------------


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=150, highlight=False, force_terminal=False), out


def test_view_draws_finished_and_failed_tasks_with_details_and_notes() -> None:
    console, out = _console()
    with ProgressView(console) as view:
        view(TaskStarted(1, "xen: build"))
        view(TaskAdvanced(1, detail="  CC   arch/x86/[setup].o  "))
        view(TaskStarted(2, "xen: collect"))
        view(TaskAdvanced(2, detail="last line before it failed"))
        view(TaskFinished(2, ok=False, elapsed=1.0))
        view(TaskFinished(1, ok=True, elapsed=2.0, label="xen: build done"))
        view(Note("nested host: QEMU [pid] 12"))
    text = out.getvalue()
    assert "✔ xen: build done" in text
    # A failed row keeps its last line (why it failed); markup-like brackets are text.
    assert "✘ xen: collect" in text and "last line before it failed" in text
    assert "nested host: QEMU [pid] 12" in text


def test_view_draws_a_known_size_and_the_latest_detail() -> None:
    console, out = _console()
    view = ProgressView(console)
    view(TaskStarted(7, "apt update", total=100.0))
    view(TaskAdvanced(7, completed=50.0, detail="Get:1 bookworm InRelease"))
    view.close()  # stopped while running: the row as it stands
    assert "apt update" in out.getvalue() and "Get:1 bookworm InRelease" in out.getvalue()


def test_view_draws_the_status_line_until_it_is_cleared() -> None:
    console, out = _console()
    view = ProgressView(console)
    view(Status("nested Xen: waiting for ssh (3s)"))
    view.close()
    assert "nested Xen: waiting for ssh (3s)" in out.getvalue()
    console, out = _console()
    view = ProgressView(console)
    view(Status("nested Xen: waiting for ssh (3s)"))
    view(Status(""))  # cleared: nothing left to draw, the display stops
    assert view._rows is None
    assert "waiting for ssh" not in out.getvalue()


def test_build_command_draws_the_failed_phase(tmp_path: Path) -> None:
    import argparse

    tree, bad = _bad_patch_tree(tmp_path)
    console, out = _console()
    args = argparse.Namespace(tree=str(tree), patches=str(bad), config=None, rebuild=False)
    assert build_xen_command(args, console) == 2
    text = out.getvalue()
    assert "✔ xen: resolve" in text and "✘ xen: patch" in text
    assert "blocked:" in text and "0001-bad.diff" in text


def test_the_library_draws_nothing_by_default(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    tree, bad = _bad_patch_tree(tmp_path)
    with pytest.raises(BlockedError):
        build_xen(TreeSpec.from_cli(str(tree), [str(bad)], None))
    captured = capfd.readouterr()
    assert "xen: patch" not in captured.out + captured.err
    assert os.environ.get("XDG_CACHE_HOME")
