"""The live tests' leak check finds what a test left, by PID: a child it started, and a
grandchild whose parent died (re-parented to the test process, a subreaper); and nested-host
temp dirs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from xenpvh import leaks


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
