"""The live tests' leak check finds what a test left, by PID: a child it started, and a
grandchild whose parent died (re-parented to the test process, a subreaper); and nested-host
temp dirs."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from fakes import LeakHost

from xenpvh import leaks
from xenpvh.util.owner import Owner, current_owner, process_start, this_machine

pytest_plugins = ["pytester"]


def test_a_stray_child_and_an_orphaned_grandchild_are_found_by_pid(tmp_path: Path) -> None:
    assert leaks.become_subreaper()
    before = leaks.Snapshot()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    # A parent that starts a grandchild and exits at once (as a killed `xenpvh boot` whose
    # QEMU lives on): the grandchild is re-parented to us.
    spawner = subprocess.run(
        [
            sys.executable,
            "-c",
            "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(60)'], stdout=subprocess.DEVNULL, "
            "stderr=subprocess.DEVNULL); print(p.pid)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    grandchild = int(spawner.stdout)
    try:
        time.sleep(0.2)
        found = leaks.leaks(before)
        assert any(f"process {child.pid} " in f for f in found), found
        assert any(f"process {grandchild} " in f for f in found), found
        assert leaks.leaks(before, keep_pids={child.pid, grandchild}) == []
    finally:
        child.kill()
        child.wait()
        import os
        import signal

        os.kill(grandchild, signal.SIGKILL)
    time.sleep(0.2)
    assert leaks.leaks(before) == []  # killed: zombies hold nothing


def test_a_new_nested_temp_dir_is_a_leak(monkeypatch, tmp_path: Path) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = leaks.Snapshot()
    from xenpvh.host.nested.reap import make_run_dir

    d = make_run_dir()
    assert leaks.leaks(before) == [f"temp dir {d} left"]
    assert leaks.leaks(before, keep_dirs={str(d)}) == []


def test_the_plugin_fails_a_xen_test_that_leaves_a_process(pytester) -> None:
    """The leak check runs after every `xen` test: a process the test started and left
    running is an error of that test; one it stopped is not."""
    pytester.makepyfile(
        """
        import subprocess, sys, pytest

        @pytest.mark.xen
        def test_leaky():
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])

        @pytest.mark.xen
        def test_clean():
            p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
            p.kill()
            p.wait()
        """
    )
    result = pytester.runpytest_subprocess("-m", "xen")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*left behind by this test: process * still running*"])


# -- what counts: only what this test started ------------------------------------------------


def _other_owner(*, pid: int | None = None, machine: str | None = None) -> Owner:
    """Another running process (our parent: older than any test), or the one given."""
    pid = os.getppid() if pid is None else pid
    return Owner(f"other:{pid}", machine or this_machine(), pid, process_start(pid) or 0)


def _gone_child() -> Owner:
    """A process this test started and that has ended (a `xenpvh boot` subprocess)."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    started = process_start(p.pid) or 0
    p.wait()
    return Owner(f"child:{p.pid}", this_machine(), p.pid, started)


def test_a_domain_from_before_the_test_is_not_its_leak() -> None:
    host = LeakHost()
    host.start_run("20260101-000000-aaaaaa", current_owner())  # an earlier test's, say
    before = leaks.Snapshot()
    before.take_host(host)
    assert leaks.leaks(before, host=host) == []


def test_what_another_owner_starts_during_the_test_is_not_its_leak() -> None:
    host = LeakHost()
    older_child = _gone_child()  # started (and ended) before the test: not the test's
    time.sleep(0.05)
    before = leaks.Snapshot()
    before.take_host(host)
    host.start_run("other-worker", _other_owner())  # another pytest worker, still running
    host.start_run("older-process", older_child)
    host.start_run("other-machine", _other_owner(pid=os.getpid(), machine="boot/1"))
    # A guest kept by `xenpvh dev` (detached lease) whose process started and ended since.
    host.start_run("kept-by-dev", _gone_child(), detached=True)
    host.domains.append("xenpvh-no-lease")  # names no owner at all
    assert leaks.leaks(before, host=host) == []


def test_a_domain_the_test_started_and_left_is_its_leak() -> None:
    host = LeakHost()
    host.start_run("20260101-000000-bbbbbb", _other_owner())  # there before: not counted
    before = leaks.Snapshot()
    before.take_host(host)
    host.start_run("mine", current_owner())  # an in-process Session
    host.start_run("my-cli", _gone_child())  # a `xenpvh boot` subprocess of the test
    assert leaks.leaks(before, host=host) == [
        "on host leak-host: console log guest-xenpvh-mine.log",
        "on host leak-host: console log guest-xenpvh-my-cli.log",
        "on host leak-host: domain xenpvh-mine",
        "on host leak-host: domain xenpvh-my-cli",
        "on host leak-host: run dir mine",
        "on host leak-host: run dir my-cli",
    ]
    # Only reading: the check lists domains and files and reads leases, nothing else.
    assert {c[:2] for c in host.calls} == {("xl", "list"), ("find", "/var/lib/xenpvh/runs")}


def test_a_run_dir_the_test_left_without_its_domain_is_its_leak() -> None:
    host = LeakHost()
    before = leaks.Snapshot()
    before.take_host(host)
    host.start_run("half", current_owner())
    host.domains.remove("xenpvh-half")  # destroyed, but the run dir stayed
    found = leaks.leaks(before, host=host)
    assert "on host leak-host: run dir half" in found
    assert not [f for f in found if "domain" in f]


def test_another_owners_nested_temp_dir_is_not_the_tests_leak(monkeypatch, tmp_path) -> None:
    import tempfile

    from xenpvh.host.nested.reap import OWNER_FILE, make_run_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = leaks.Snapshot()
    other = make_run_dir()
    (other / OWNER_FILE).write_text(json.dumps(dataclasses.asdict(_other_owner())))
    assert leaks.leaks(before) == []
    mine = make_run_dir()
    assert leaks.leaks(before) == [f"temp dir {mine} left"]


def test_started_by_reads_owner_records_and_leases() -> None:
    origin = leaks.TestOrigin()
    me = dataclasses.asdict(current_owner())
    assert leaks.started_by(me, origin, ())
    assert leaks.started_by({f"owner_{k}": v for k, v in me.items()}, origin, ())
    older = dataclasses.asdict(_other_owner())
    assert not leaks.started_by(older, origin, ())
    assert leaks.started_by(older, origin, {older["pid"]})  # a live child of the test
    assert not leaks.started_by({}, origin, ())
    assert not leaks.started_by({**me, "machine": "/"}, origin, ())  # no boot id: unknown
