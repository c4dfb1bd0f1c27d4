"""What a live test may not leave behind: processes it started (QEMU first of all, found by
PID as descendants of the test process, not by name), nested-host temp dirs, and on the
session's Xen host `xenpvh-` domains, run dirs and console logs.

The pytest plugin takes a `Snapshot` before every `xen` test and checks after its teardown.
The test process becomes a child subreaper, so a QEMU whose parent (e.g. a `xenpvh boot`
subprocess) died is re-parented to it and still counted.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xenpvh.host.nested.reap import RUN_DIR_PREFIX

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Orphaned descendants are re-parented to this process (Linux >= 3.4)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    return False


def _stat(pid: str, proc: Path) -> tuple[int, str] | None:
    """(ppid, state) of a process, None when it is gone."""
    try:
        text = (proc / pid / "stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0]


def descendants(root: int | None = None, proc: Path = Path("/proc")) -> dict[int, str]:
    """Live (not zombie) descendants of `root` (default: this process): pid -> command."""
    root = os.getpid() if root is None else root
    parent: dict[int, int] = {}
    for d in proc.glob("[0-9]*"):
        st = _stat(d.name, proc)
        if st is not None and st[1] != "Z":
            parent[int(d.name)] = st[0]
    out: dict[int, str] = {}
    for pid in parent:
        p, seen = pid, 0
        while p in parent and seen < 64:
            p, seen = parent[p], seen + 1
            if p == root:
                try:
                    cmd = (proc / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ")
                except OSError:
                    break
                out[pid] = cmd.decode(errors="replace").strip()[:200]
                break
    return out


def nested_tmp_dirs(tmp: Path | None = None) -> set[str]:
    base = Path(tmp or tempfile.gettempdir())
    return {str(p) for p in base.glob(f"{RUN_DIR_PREFIX}*")}


def _started_qemu() -> list[int]:
    from xenpvh.host.nested.host import STARTED_QEMU

    return list(STARTED_QEMU)


@dataclass
class Snapshot:
    """Taken before a test's fixtures are set up; `at_call` once they are (processes a
    session fixture starts during a test's setup, e.g. a database, are its own business;
    a QEMU a fixture started is not: those are known by PID from NestedHost)."""

    pids: dict[int, str] = field(default_factory=descendants)
    tmp_dirs: set[str] = field(default_factory=nested_tmp_dirs)
    qemu: list[int] = field(default_factory=_started_qemu)
    at_call: dict[int, str] | None = None

    def call_starts(self) -> None:
        self.at_call = descendants()


def host_leftovers(host: Any) -> list[str]:
    """`xenpvh-` domains, run dirs and their console logs left on a Xen host."""
    from xenpvh.run.lease import CONSOLE_LOG_DIR, DOMAIN_PREFIX
    from xenpvh.run.remote import REMOTE_ROOT
    from xenpvh.toolstack.xl import Xl

    out = [f"domain {d.name}" for d in Xl(host).list() if d.name.startswith(DOMAIN_PREFIX)]
    r = host.run(["ls", "-A", f"{REMOTE_ROOT}/runs", CONSOLE_LOG_DIR], timeout=60)
    for name in r.out.split():
        ours = name[:1].isdigit() or name.startswith(f"guest-{DOMAIN_PREFIX}")
        if ours and not name.endswith(":"):
            out.append(f"file {name}")
    return out


def leaks(
    before: Snapshot,
    *,
    keep_pids: set[int] = frozenset(),  # type: ignore[assignment]
    keep_dirs: set[str] = frozenset(),  # type: ignore[assignment]
    host: Any = None,
) -> list[str]:
    """What was started or made since `before` and is still there."""
    now = descendants()  # zombies are not counted: they hold nothing but a pid
    started_by_setup = set(before.at_call or {}) - set(before.pids)
    found = [
        f"process {pid} still running: {cmd}"
        for pid, cmd in sorted(now.items())
        if pid not in before.pids and pid not in keep_pids and pid not in started_by_setup
    ]
    found += [
        f"QEMU {pid} (started by this test's fixtures) still running"
        for pid in _started_qemu()
        if pid not in before.qemu
        and pid not in keep_pids
        and pid in now
        and pid in started_by_setup
    ]
    found += [
        f"temp dir {d} left"
        for d in sorted(nested_tmp_dirs() - before.tmp_dirs - set(keep_dirs))
        if Path(d).exists()
    ]
    if host is not None:
        found += [f"on host {getattr(host, 'name', host)}: {x}" for x in host_leftovers(host)]
    return found


def session_host_parts(host: Any) -> tuple[set[int], set[str]]:
    """The pids and temp dirs of the session's own nested host (they outlive a test)."""
    pids: set[int] = set()
    dirs: set[str] = set()
    proc = getattr(host, "_proc", None)
    record = getattr(host, "_record", None)
    if proc is not None:
        pids.add(proc.pid)
    if record is not None:
        pids.add(record.pid)
        dirs.add(record.run_dir)
    tmp = getattr(host, "_tmp", None)
    if tmp is not None:
        dirs.add(str(tmp))
    return pids, dirs


__all__ = [
    "Snapshot",
    "become_subreaper",
    "descendants",
    "host_leftovers",
    "leaks",
    "session_host_parts",
]
