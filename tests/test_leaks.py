"""The live tests' leak check finds what a test left, by PID: a child it started, and a
grandchild whose parent died (re-parented to the test process, a subreaper); and nested-host
temp dirs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from xenpvh import leaks

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
