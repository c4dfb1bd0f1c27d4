"""One `ansible-playbook site.yml` run: argv only, structured output, a deadline.

The run's stdout is the `ansible.posix.jsonl` callback's (see `events`); each task's name
goes to the progress sink as it starts, each failure as a note, and the human-readable
lines of the run go to its log file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xenpvh.errors import BlockedError, BrokenError
from xenpvh.provision.events import PlaybookEvents, TaskFailed, TaskStarted
from xenpvh.util.progress import Note, ProgressSink, emit, task

log = logging.getLogger(__name__)

ANSIBLE_DIR = Path(__file__).resolve().parents[2] / "ansible"
# The structured stdout callback, streamed one event per line (the ansible bundle's
# ansible.posix collection, installed beside community.general).
STDOUT_CALLBACK = "ansible.posix.jsonl"
# ansible output is ours, but a task's result can carry remote text: keep memory bounded.
_MAX_LINE = 1 << 20
_TAIL_LINES = 40


def ansible_playbook() -> str:
    """The ansible-playbook of this interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("ansible-playbook")
    if found is None:
        raise BlockedError(
            "ansible-playbook not found: install xenpvh's dev extra (ansible-core and the "
            "`ansible` bundle that carries community.general and ansible.posix)"
        )
    return found


def playbook_env(ansible_dir: Path = ANSIBLE_DIR) -> dict[str, str]:
    """The environment of a run: our ansible.cfg, host keys checked, JSON lines out."""
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(ansible_dir / "ansible.cfg"),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_STDOUT_CALLBACK": STDOUT_CALLBACK,
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "PYTHONUNBUFFERED": "1",
        "LANG": "C.UTF-8",
    }


class PlaybookRun:
    """One `ansible-playbook site.yml` run against a generated inventory.

    The inventory and extra vars are JSON files (JSON is YAML) in a temp directory that is
    removed afterwards, so no value is ever parsed as ansible's INI syntax or by a shell.
    """

    def __init__(
        self,
        inventory: Mapping[str, Any],
        *,
        extra_vars: Mapping[str, Any],
        log: Path,
        progress: ProgressSink | None = None,
        ansible_dir: Path = ANSIBLE_DIR,
        timeout: float = 3600.0,
        label: str = "provisioning",
    ) -> None:
        self.inventory = inventory
        self.extra_vars = dict(extra_vars)
        self.log = log
        self.progress = progress
        self.ansible_dir = ansible_dir
        self.timeout = timeout
        self.label = label

    def argv(self, inventory_file: Path, vars_file: Path) -> list[str]:
        return [
            ansible_playbook(),
            "-i",
            str(inventory_file),
            "-e",
            f"@{vars_file}",
            str(self.ansible_dir / "site.yml"),
        ]

    def run(self) -> PlaybookEvents:
        """Run the playbook; what it reported (the recap per host, the failures).  Raises
        BrokenError when ansible ends without a recap (it crashed, or the playbook could
        not even start)."""
        if not (self.ansible_dir / "site.yml").is_file():
            raise BlockedError(f"no ansible/site.yml at {self.ansible_dir}")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="xenpvh-ansible-") as tmp:
            inv = Path(tmp) / "inventory.json"
            inv.write_text(json.dumps(self.inventory, indent=1))
            ev = Path(tmp) / "vars.json"
            ev.write_text(json.dumps(self.extra_vars, indent=1))
            with task(self.progress, self.label) as advance:
                rc, events, tail = self._stream(self.argv(inv, ev), advance)
                if events.recap is None:
                    raise BrokenError(
                        f"ansible-playbook exited {rc} without a play recap (log: {self.log}):\n"
                        + "\n".join(tail)
                    )
        return events

    def _stream(self, argv: list[str], advance: Any) -> tuple[int, PlaybookEvents, list[str]]:
        events = PlaybookEvents()
        tail: list[str] = []  # the last lines that were not events (ansible's own errors)
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=playbook_env(self.ansible_dir),
            cwd=self.ansible_dir,
            # Its own process group: a timeout or an interrupt ends ansible's ssh children too.
            start_new_session=True,
        )
        timed_out = threading.Event()

        def kill() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        def expire() -> None:
            timed_out.set()
            kill()

        timer = threading.Timer(self.timeout, expire)
        timer.start()
        try:
            assert proc.stdout is not None
            with self.log.open("w", buffering=1) as out:
                out.write(f"# {shlex.join(argv)}\n")
                stdout = proc.stdout
                for raw in iter(lambda: stdout.readline(_MAX_LINE), b""):
                    line = raw.decode(errors="replace").rstrip()
                    found, lines = events.feed(line)
                    out.writelines(f"{text}\n" for text in lines)
                    if not found and lines == [line]:
                        tail = [*tail[-(_TAIL_LINES - 1) :], line]
                    self._show(found, advance, events.tasks)
            rc = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                kill()
                proc.wait()
        if timed_out.is_set():
            raise BrokenError(
                f"ansible-playbook timed out after {self.timeout:.0f} s (log: {self.log})"
            )
        return rc, events, tail

    def _show(self, found: list[Any], advance: Any, tasks: int) -> None:
        for event in found:
            if isinstance(event, TaskStarted):
                advance(completed=tasks, detail=event.name[:120])
            elif isinstance(event, TaskFailed):
                log.info("ansible: %s", event.describe())
                emit(self.progress, Note(event.describe()[:300]))


__all__ = ["ANSIBLE_DIR", "STDOUT_CALLBACK", "PlaybookRun", "ansible_playbook", "playbook_env"]
