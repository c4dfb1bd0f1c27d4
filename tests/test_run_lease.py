"""Run leases and the sweep: a run killed with SIGKILL is reclaimed by the next run at once
(its owner process is checked when it ran on this machine), other machines' runs by expiry;
run dirs without a lease and dom0 console logs no lease holds are swept once old."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from test_run_boot import GOOD, _point, _run
from test_toolstack_fakes import FakeXenHost

from xenpvh.check.verdict import VerdictValue
from xenpvh.run import lease
from xenpvh.toolstack.xl import Xl

RUNS = "/var/lib/xenpvh/runs"
LOGS = lease.CONSOLE_LOG_DIR


@pytest.fixture
def kit(tmp_path):
    k, r = tmp_path / "vmlinuz", tmp_path / "initrd"
    k.write_bytes(b"kernel")
    r.write_bytes(b"initrd")
    return k, r


def _dead_process() -> tuple[int, int]:
    """(pid, start time) of a process of this machine that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    started = lease.process_start(child.pid)
    assert started is not None
    child.kill()
    child.wait()
    return child.pid, started


def _leased_domain(host: FakeXenHost, run_id: str, **fields: object) -> None:
    doc = {"domain": f"xenpvh-{run_id}", "run_id": run_id, "expires": time.time() + 3600}
    doc.update(fields)
    host.files[f"{RUNS}/{run_id}/lease"] = json.dumps(doc).encode()
    host.files[f"{RUNS}/{run_id}/domain.cfg"] = f'name = "xenpvh-{run_id}"\ntype = "pvh"\n'.encode()
    host.files[f"{LOGS}/guest-xenpvh-{run_id}.log"] = b"console\n"
    Xl(host).create(f"{RUNS}/{run_id}/domain.cfg")


def test_a_killed_runs_domain_is_reclaimed_by_the_next_run_at_once(host, kit, tmp_path) -> None:
    pid, started = _dead_process()
    killed = "20260101-000000-aaaaaa"
    _leased_domain(
        host,
        killed,
        owner=f"here:{pid}",
        owner_machine=lease.this_machine(),
        owner_pid=pid,
        owner_started=started,
    )
    host.console = GOOD
    run, _ = _run(host, _point(str(kit[0]), str(kit[1])), tmp_path)
    v = run.run()
    assert v.verdict == VerdictValue.PASS, v.reason
    assert v.meta["swept_stale_domains"] == [f"xenpvh-{killed}"]  # lease had 1 h left
    assert not [p for p in host.files if killed in p]  # run dir and console log gone


def test_live_owners_other_machines_and_detached_leases_are_kept(host, kit, tmp_path) -> None:
    me = lease.current_owner()
    pid, started = _dead_process()
    cases = {
        # this very process: alive
        "20260101-000000-bbbbbb": dict(
            owner_machine=me.machine, owner_pid=me.pid, owner_started=me.started
        ),
        # a dead pid, but of another machine: only expiry can tell
        "20260101-000000-cccccc": dict(
            owner_machine="other-boot/1", owner_pid=pid, owner_started=started
        ),
        # kept on purpose after its process ended (a developer's keep-on-fail domain)
        "20260101-000000-dddddd": dict(
            owner_machine=me.machine, owner_pid=pid, owner_started=started, detached=True
        ),
        # an older lease without owner fields
        "20260101-000000-eeeeee": {},
    }
    for run_id, fields in cases.items():
        _leased_domain(host, run_id, **fields)
    host.console = GOOD
    run, _ = _run(host, _point(str(kit[0]), str(kit[1])), tmp_path)
    v = run.run()
    assert v.verdict == VerdictValue.PASS, v.reason
    assert "swept_stale_domains" not in v.meta
    assert sorted(host.domains) == ["Domain-0", *sorted(f"xenpvh-{r}" for r in cases)]


def test_a_recycled_pid_does_not_keep_a_dead_owners_lease() -> None:
    me = lease.current_owner()
    doc = {
        "expires": time.time() + 3600,
        "owner_machine": me.machine,
        "owner_pid": me.pid,  # alive, but started at another time: not the owner
        "owner_started": me.started + 1,
    }
    assert not lease.lease_live(json.dumps(doc), now=time.time(), machine=me.machine)
    doc["owner_started"] = me.started
    assert lease.lease_live(json.dumps(doc), now=time.time(), machine=me.machine)
    assert not lease.lease_live(json.dumps(doc), now=doc["expires"] + 1, machine=me.machine)


def test_old_orphans_are_swept_and_young_or_held_ones_kept(host, kit, tmp_path) -> None:
    old = time.time() - 3600
    me = lease.current_owner()
    _leased_domain(  # a live run of this process: its dir and log stay, however old
        host,
        "20260101-000000-111111",
        owner_machine=me.machine,
        owner_pid=me.pid,
        owner_started=me.started,
    )
    files = {
        f"{RUNS}/20260101-000000-222222/xvda.img": old,  # no lease, old: crashed before it
        f"{RUNS}/20260101-000000-333333/xvda.img": time.time(),  # no lease yet, young
        f"{LOGS}/guest-xenpvh-20260101-000000-444444.log": old,  # no lease holds it
        f"{LOGS}/guest-xenpvh-20260101-000000-555555.log": time.time(),  # young
        f"{LOGS}/guest-other.log": old,  # not ours
    }
    for path, mtime in files.items():
        host.files[path] = b"x"
        host.mtimes[path.rsplit("/", 1)[0] if path.startswith(RUNS) else path] = mtime
    host.mtimes[f"{RUNS}/20260101-000000-111111"] = old
    host.mtimes[f"{LOGS}/guest-xenpvh-20260101-000000-111111.log"] = old
    host.console = GOOD
    run, _ = _run(host, _point(str(kit[0]), str(kit[1])), tmp_path)
    assert run.run().verdict == VerdictValue.PASS
    left = set(host.files)
    assert f"{RUNS}/20260101-000000-222222/xvda.img" not in left
    assert f"{LOGS}/guest-xenpvh-20260101-000000-444444.log" not in left
    for kept in (
        f"{RUNS}/20260101-000000-111111/lease",
        f"{LOGS}/guest-xenpvh-20260101-000000-111111.log",
        f"{RUNS}/20260101-000000-333333/xvda.img",
        f"{LOGS}/guest-xenpvh-20260101-000000-555555.log",
        f"{LOGS}/guest-other.log",
    ):
        assert kept in left, kept


def test_a_run_writes_its_owner_into_its_lease(host, kit, tmp_path) -> None:
    host.console = GOOD
    seen: dict[str, dict] = {}
    orig = host.put_bytes

    def put_bytes(data, remote, *, mode=0o644):
        if remote.endswith("/lease"):
            seen["lease"] = json.loads(data)
        orig(data, remote, mode=mode)

    host.put_bytes = put_bytes  # type: ignore[method-assign]
    run, _ = _run(host, _point(str(kit[0]), str(kit[1])), tmp_path)
    assert run.run().verdict == VerdictValue.PASS
    doc = seen["lease"]
    assert doc["owner_pid"] == os.getpid() and doc["owner_machine"] == lease.this_machine()
    assert doc["owner_started"] == lease.process_start(os.getpid())
