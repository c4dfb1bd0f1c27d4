"""What a live test may not leave behind, counting only what the test itself started:
processes (QEMU first of all, found by PID as descendants of the test process, not by name),
nested-host temp dirs, and on the session's Xen host `xenpvh-` domains, run dirs and
console logs.

The pytest plugin takes a `Snapshot` before every `xen` test and checks after its teardown.
Only what is new since the snapshot counts, and of that only what this test started: a
temp dir's `owner.json` and a run's lease (`<root>/runs/<run id>/lease`, which names the
domain `xenpvh-<run id>` and its console log) name their owner process, and `started_by`
decides whether that owner is the test.  A guest kept by `xenpvh dev` or another worker's
run is someone else's, even when it appears during the test.

The test process becomes a child subreaper, so a QEMU whose parent (e.g. a `xenpvh boot`
subprocess) died is re-parented to it and still counted.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xenpvh.host.nested.process import STARTED_QEMU
from xenpvh.host.nested.reap import OWNER_FILE, RUN_DIR_PREFIX
from xenpvh.run.lease import CONSOLE_LOG_DIR, DOMAIN_PREFIX, LEASE_FIND, parse_leases
from xenpvh.run.remote import REMOTE_ROOT
from xenpvh.toolstack.xl import Xl
from xenpvh.util.owner import process_start, this_machine

PR_SET_CHILD_SUBREAPER = 36
CONSOLE_LOG_PREFIX = f"guest-{DOMAIN_PREFIX}"


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
    return list(STARTED_QEMU)


def clock_ticks_now() -> int:
    """Now, in the unit of a process's start time (clock ticks since boot)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return int(uptime * os.sysconf("SC_CLK_TCK"))
    return 0


@dataclass(frozen=True)
class TestOrigin:
    """The test as an owner: this process on this machine, from `started` (clock ticks)."""

    __test__ = False  # a name pytest would otherwise try to collect as a test class

    pid: int = field(default_factory=os.getpid)
    machine: str = field(default_factory=this_machine)
    started: int = field(default_factory=clock_ticks_now)


def started_by(
    owner: Mapping[str, object], origin: TestOrigin, live_descendants: Collection[int]
) -> bool:
    """Did the test start what `owner` owns?  `owner` is an owner record
    (`xenpvh.util.owner.owner_record`: machine, pid, started) or a run lease (the same
    fields prefixed `owner_`, and `detached` for a kept guest).  The test's own process, a
    live descendant of it, or a process of this machine that started during the test and
    is gone (a `xenpvh boot` subprocess); never a process that started before the test,
    another machine's, or a kept guest whose owner is neither the test nor its child."""

    def get(key: str) -> object:
        return owner.get(key, owner.get(f"owner_{key}"))

    try:
        machine = str(get("machine"))
        pid = int(get("pid"))  # type: ignore[call-overload]
        started = int(get("started"))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return False  # an owner we cannot read is not ours to blame
    if machine != origin.machine or not machine.split("/")[0]:
        return False
    if pid == origin.pid or pid in live_descendants:
        return True
    if started < origin.started or owner.get("detached") is True:
        return False
    return process_start(pid) != started  # gone (or its pid reused): it ran during the test


@dataclass(frozen=True)
class HostState:
    """The `xenpvh-` things on a Xen host: domain names, run ids with a run dir, and
    console log file names."""

    domains: frozenset[str] = frozenset()
    run_dirs: frozenset[str] = frozenset()
    console_logs: frozenset[str] = frozenset()


def host_state(host: Any, remote_root: str = REMOTE_ROOT) -> HostState:
    domains = frozenset(d.name for d in Xl(host).list() if d.name.startswith(DOMAIN_PREFIX))
    runs = f"{remote_root}/runs"
    r = host.run(
        ["find", runs, CONSOLE_LOG_DIR, "-mindepth", "1", "-maxdepth", "1", "-print"],
        timeout=60,
    )
    run_dirs: set[str] = set()
    logs: set[str] = set()
    for path in r.out.splitlines():
        parent, _, name = path.rpartition("/")
        if parent == runs:
            run_dirs.add(name)
        elif parent == CONSOLE_LOG_DIR and name.startswith(CONSOLE_LOG_PREFIX):
            logs.add(name)
    return HostState(domains, frozenset(run_dirs), frozenset(logs))


def _run_leases(host: Any, remote_root: str) -> dict[str, Mapping[str, object]]:
    """run id -> its lease (a lease that is not a JSON object is left out)."""
    runs = f"{remote_root}/runs"
    r = host.run(["find", runs, *LEASE_FIND], timeout=60)
    out: dict[str, Mapping[str, object]] = {}
    for run_id, text in parse_leases(r.out, runs):
        with contextlib.suppress(ValueError):
            lease = json.loads(text)
            if isinstance(lease, dict):
                out[run_id] = lease
    return out


def host_leftovers(
    host: Any,
    before: HostState,
    origin: TestOrigin,
    live_descendants: Collection[int] = (),
    remote_root: str = REMOTE_ROOT,
) -> list[str]:
    """The `xenpvh-` domains, run dirs and console logs new since `before` whose run's lease
    names the test as its owner.  A new thing without a lease names no owner and is not
    counted (a run writes its lease before it creates its domain)."""
    now = host_state(host, remote_root)
    new: list[tuple[str, str]] = [
        *((f"domain {d}", d.removeprefix(DOMAIN_PREFIX)) for d in now.domains - before.domains),
        *((f"run dir {r}", r) for r in now.run_dirs - before.run_dirs),
        *(
            (f"console log {name}", name.removeprefix(CONSOLE_LOG_PREFIX).removesuffix(".log"))
            for name in now.console_logs - before.console_logs
        ),
    ]
    if not new:
        return []
    leases = _run_leases(host, remote_root)
    return sorted(
        what
        for what, run_id in new
        if run_id in leases and started_by(leases[run_id], origin, live_descendants)
    )


def _dir_owner(d: str) -> Mapping[str, object]:
    with contextlib.suppress(OSError, ValueError):
        owner = json.loads((Path(d) / OWNER_FILE).read_text())
        if isinstance(owner, dict):
            return owner
    return {}


@dataclass
class Snapshot:
    """Taken before a test's fixtures are set up; `at_call` once they are (processes a
    session fixture starts during a test's setup, e.g. a database, are its own business;
    a QEMU a fixture started is not: those are known by PID from NestedHost).  `host`: the
    session's Xen host as it was before the test, when the test uses one."""

    pids: dict[int, str] = field(default_factory=descendants)
    tmp_dirs: set[str] = field(default_factory=nested_tmp_dirs)
    qemu: list[int] = field(default_factory=_started_qemu)
    origin: TestOrigin = field(default_factory=TestOrigin)
    at_call: dict[int, str] | None = None
    host: HostState | None = None

    def call_starts(self) -> None:
        self.at_call = descendants()

    def take_host(self, host: Any) -> None:
        self.host = host_state(host)


def leaks(
    before: Snapshot,
    *,
    keep_pids: Collection[int] = frozenset(),
    keep_dirs: Collection[str] = frozenset(),
    host: Any = None,
) -> list[str]:
    """What the test started or made since `before` and is still there."""
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
        if Path(d).exists() and started_by(_dir_owner(d), before.origin, now)
    ]
    if host is not None and before.host is not None:
        name = getattr(host, "name", host)
        found += [
            f"on host {name}: {x}" for x in host_leftovers(host, before.host, before.origin, now)
        ]
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
    "HostState",
    "Snapshot",
    "TestOrigin",
    "become_subreaper",
    "descendants",
    "host_leftovers",
    "host_state",
    "leaks",
    "session_host_parts",
    "started_by",
]
