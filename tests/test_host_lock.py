"""The host lease (xenpvh/host/lock.py) against real hosts: LocalHost on a temp dir and
OpenSSH's sshd on loopback, including acquirers racing for the same box."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_host_ssh import Sshd, _running_sshd

from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host import lock
from xenpvh.host.base import Host
from xenpvh.host.local import LocalHost
from xenpvh.host.lock import HostBusy, HostLease, LeaseLost


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with _running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(params=["local", "ssh"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[object, str]]:
    """(a factory of fresh Host connections, the lease root) on LocalHost or real sshd."""
    root = str(tmp_path / "xenpvh")
    if request.param == "local":
        yield (lambda: LocalHost("box"), root)
    else:
        server: Sshd = request.getfixturevalue("sshd")
        yield (server.host, root)


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@pytest.mark.host
def test_acquire_busy_release(where: tuple) -> None:
    new_host, root = where
    a, b = new_host(), new_host()
    try:
        assert lock.read_lease(a, root=root) is None
        held = lock.acquire(a, owner="alice", reason="bisecting blkfront", ttl=600, root=root)
        assert lock.read_lease(b, root=root) == held
        assert held.pid == os.getpid() and held.machine == lock.this_machine()
        assert held.expires - held.since == pytest.approx(600, abs=0.01)
        with pytest.raises(HostBusy) as ei:
            lock.acquire(b, owner="nightly", reason="plan", ttl=60, root=root)
        assert isinstance(ei.value, BlockedError)
        assert ei.value.lease == held
        assert "alice" in str(ei.value) and "bisecting blkfront" in str(ei.value)
        assert "until" in str(ei.value)
        # Someone else's (stale) idea of a lease removes nothing.
        other = HostLease(a.name, "nightly", "x", held.since, held.expires, 1, "m")
        lock.release(b, other, root=root)
        assert lock.read_lease(b, root=root) == held
        lock.release(a, held, root=root)
        assert lock.read_lease(b, root=root) is None
        assert not Path(root, "host-lease").exists() or where[0]().name != "box"
    finally:
        a.close()
        b.close()


@pytest.mark.host
def test_expired_lease_is_taken_over(where: tuple) -> None:
    new_host, root = where
    h = new_host()
    try:
        old = lock.acquire(h, owner="alice", reason="r", ttl=1, pid=0, root=root)
        with pytest.raises(HostBusy):
            lock.acquire(h, owner="bob", reason="r", ttl=60, root=root)
        time.sleep(2.1)  # the host's clock has whole seconds
        assert lock.read_lease(h, root=root) is None
        mine = lock.acquire(h, owner="bob", reason="r", ttl=60, root=root)
        assert mine.owner == "bob"
        # The old holder's release does not remove the new lease.
        lock.release(h, old, root=root)
        assert lock.read_lease(h, root=root) == mine
        with pytest.raises(LeaseLost):
            lock.renew(h, old, 60, root=root)
    finally:
        h.close()


@pytest.mark.host
def test_dead_holder_on_this_machine_is_taken_over_at_once(where: tuple) -> None:
    new_host, root = where
    h = new_host()
    try:
        lock.acquire(h, owner="crashed", reason="r", ttl=3600, pid=_dead_pid(), root=root)
        assert lock.read_lease(h, root=root) is None
        mine = lock.acquire(h, owner="bob", reason="r", ttl=60, root=root)
        assert mine.owner == "bob"
        # A live pid (ours) and pid 0 (a `host lock` lease) are not taken over.
        with pytest.raises(HostBusy, match="bob"):
            lock.acquire(h, owner="carol", reason="r", ttl=60, root=root)
        lock.release(h, mine, root=root)
        lock.acquire(h, owner="dave", reason="r", ttl=60, pid=0, root=root)
        with pytest.raises(HostBusy, match="dave"):
            lock.acquire(h, owner="carol", reason="r", ttl=60, root=root)
    finally:
        h.close()


def test_dead_pid_of_another_machine_or_boot_is_not_judged() -> None:
    pid = _dead_pid()
    base = HostLease("h", "o", "r", 0.0, 1e12, pid, lock.this_machine(), lock.this_boot_id())
    assert lock.holder_is_dead(base)
    assert not lock.holder_is_dead(HostLease("h", "o", "r", 0.0, 1e12, pid, "elsewhere"))
    other_boot = HostLease("h", "o", "r", 0.0, 1e12, pid, lock.this_machine(), "another-boot")
    assert not lock.holder_is_dead(other_boot)
    assert not lock.holder_is_dead(HostLease("h", "o", "r", 0.0, 1e12, 0, lock.this_machine()))


@pytest.mark.host
def test_wait_for_the_holder(where: tuple) -> None:
    new_host, root = where
    a, b = new_host(), new_host()
    try:
        held = lock.acquire(a, owner="alice", reason="r", ttl=600, root=root)
        threading.Timer(1.5, lock.release, (a, held), {"root": root}).start()
        seen: list[HostLease] = []
        t0 = time.monotonic()
        mine = lock.acquire(
            b, owner="bob", reason="r", ttl=60, wait=20, poll=0.3, on_wait=seen.append, root=root
        )
        waited = time.monotonic() - t0
        assert 1.0 < waited < 30, waited
        assert mine.owner == "bob", mine
        assert seen and seen[0] == held, (seen, held)
        # Waiting that runs out names the holder and how long it waited.
        with pytest.raises(HostBusy, match=r"bob.*waited"):
            lock.acquire(a, owner="alice", reason="r", ttl=60, wait=0.6, poll=0.2, root=root)
    finally:
        a.close()
        b.close()


@pytest.mark.host
@pytest.mark.parametrize("start", ["free", "expired"])
def test_racing_acquirers_exactly_one_wins(where: tuple, start: str) -> None:
    """Several acquirers, each on its own connection, released together: one lease."""
    new_host, root = where
    racers = 5
    for _round in range(3):
        hosts = [new_host() for _ in range(racers)]
        try:
            if start == "expired":
                lock.acquire(hosts[0], owner="old", reason="r", ttl=0.001, pid=0, root=root)
                time.sleep(1.1)
            for h in hosts:  # connect before the start line
                h.run(["true"])
            barrier = threading.Barrier(racers)
            won: list[HostLease] = []
            busy: list[str] = []
            args = [(i, h, barrier, won, busy, root) for i, h in enumerate(hosts)]
            threads = [threading.Thread(target=_race, args=a) for a in args]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert len(won) == 1, (won, busy)
            assert busy == [won[0].owner] * (racers - 1)
            assert lock.read_lease(hosts[0], root=root) == won[0]
            lock.release(hosts[0], won[0], root=root)
        finally:
            for h in hosts:
                h.close()


def _race(i: int, h: Host, barrier: threading.Barrier, won: list, busy: list, root: str) -> None:
    barrier.wait()
    try:
        won.append(lock.acquire(h, owner=f"r{i}", reason="race", ttl=60, root=root))
    except HostBusy as e:
        busy.append(e.lease.owner)


def test_a_stale_reading_cannot_swap(tmp_path: Path) -> None:
    """The race, step by step: two readers see the host free; the first swap wins, the
    second (holding the digest of what it read) is refused."""
    h, root = LocalHost("box"), str(tmp_path)
    first, second = lock._read(h, root), lock._read(h, root)
    assert first.digest == second.digest == "none"
    assert lock._swap(h, root, first.digest, HostLease("box", "a", "", 0, 1e12, 0, "m").to_text())
    assert not lock._swap(
        h, root, second.digest, HostLease("box", "b", "", 0, 1e12, 0, "m").to_text()
    )
    assert lock.read_lease(h, root=root).owner == "a"  # type: ignore[union-attr]


def test_renew_and_force_release(tmp_path: Path) -> None:
    h, root = LocalHost("box"), str(tmp_path)
    held = lock.acquire(h, owner="alice", reason="r", ttl=60, root=root)
    longer = lock.renew(h, held, 3600, root=root)
    assert longer.expires >= held.expires + 3000
    assert lock.read_lease(h, root=root) == longer
    with pytest.raises(LeaseLost):
        lock.renew(h, held, 60, root=root)  # the old text is no longer there
    assert lock.force_release(h, root=root) == longer
    assert lock.read_lease(h, root=root) is None
    assert lock.force_release(h, root=root) is None


def test_garbage_lease_is_free_and_replaced(tmp_path: Path) -> None:
    h, root = LocalHost("box"), str(tmp_path)
    (tmp_path / "host-lease").write_bytes(b"\x00junk" * 5000)
    assert lock.read_lease(h, root=root) is None
    assert lock.acquire(h, owner="a", reason="r", ttl=60, root=root).owner == "a"


def test_check_lets_the_owner_through(tmp_path: Path) -> None:
    h, root = LocalHost("box"), str(tmp_path)
    assert lock.check(h, owner="alice", root=root) is None
    held = lock.acquire(h, owner="alice", reason="r", ttl=60, pid=0, root=root)
    assert lock.check(h, owner="alice", root=root) == held
    with pytest.raises(HostBusy, match="alice"):
        lock.check(h, owner="bob", wait=0.5, poll=0.1, root=root)
    assert lock.read_lease(h, root=root) == held  # check takes nothing


def test_hostile_fields_are_escaped(tmp_path: Path) -> None:
    h, root = LocalHost("box"), str(tmp_path)
    lock.acquire(h, owner="evil\x1b[2J", reason="a\nb\u2028" * 50, ttl=60, pid=0, root=root)
    with pytest.raises(HostBusy) as ei:
        lock.acquire(h, owner="bob", reason="r", ttl=60, root=root)
    msg = str(ei.value)
    assert "\x1b" not in msg and "\n" not in msg and len(msg) < 1000


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"owner": "x"},
        {
            "host": "h",
            "owner": "o",
            "reason": "r",
            "since": 0,
            "expires": "1",
            "pid": 1,
            "machine": "m",
        },
        {
            "host": "h",
            "owner": "o",
            "reason": "r",
            "since": 0,
            "expires": 1e999,
            "pid": 1,
            "machine": "m",
        },
        {
            "host": "h",
            "owner": "o",
            "reason": "r",
            "since": 0,
            "expires": 1,
            "pid": -1,
            "machine": "m",
        },
        {
            "host": "h",
            "owner": 5,
            "reason": "r",
            "since": 0,
            "expires": 1,
            "pid": 1,
            "machine": "m",
        },
    ],
)
def test_from_text_rejects(data: object) -> None:
    with pytest.raises(ValueError):
        HostLease.from_text(json.dumps(data))


def test_bad_arguments_are_blocked(tmp_path: Path) -> None:
    h = LocalHost("box")
    bad = ({"ttl": 0}, {"ttl": float("nan")}, {"owner": ""}, {"wait": -1}, {"reason": "x" * 201})
    for kw in bad:
        args = {"owner": "a", "reason": "r", "ttl": 60, "root": str(tmp_path), **kw}
        with pytest.raises(BlockedError):
            lock.acquire(h, **args)  # type: ignore[arg-type]


def test_unreadable_host_is_broken(tmp_path: Path) -> None:
    class NoShell(LocalHost):
        def run(self, argv, **kw):  # type: ignore[no-untyped-def]
            return super().run(["sh", "-c", "echo oops >&2; exit 1"], **kw)

    with pytest.raises(BrokenError, match="oops"):
        lock.read_lease(NoShell("box"), root=str(tmp_path))
