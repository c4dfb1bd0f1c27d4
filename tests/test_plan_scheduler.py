"""PoolScheduling's own rules on xdist's scheduler protocol, with fake worker controllers
(the end-to-end behaviour under real pytest-xdist is tests/test_plan_pool.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from xenpvh.plan.scheduler import PoolScheduling


class FakeNode:
    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.shutting_down = False
        self.sent: list[int] = []

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent.extend(indices)

    def send_runtest_all(self) -> None:  # pragma: no cover - not used by load scheduling
        raise AssertionError

    def shutdown(self) -> None:
        self.shutting_down = True


def _sched(pytestconfig: pytest.Config, nodes: list[FakeNode], n_items: int) -> PoolScheduling:
    values = {"tx": [f"{len(nodes)}*popen"], "maxschedchunk": None}
    config = SimpleNamespace(getvalue=values.get, getoption=values.get, hook=pytestconfig.hook)
    sched = PoolScheduling(config)
    sched.numnodes = len(nodes)
    items = [f"t::p{i}" for i in range(n_items)]
    for n in nodes:
        sched.add_node(n)
        sched.add_node_collection(n, items)
    sched.schedule()
    return sched


def test_a_retired_worker_gets_nothing_more_and_its_points_go_elsewhere(
    pytestconfig: pytest.Config,
) -> None:
    a, b = FakeNode("gw0"), FakeNode("gw1")
    sched = _sched(pytestconfig, [a, b], 20)
    first_a = list(a.sent)
    assert first_a and b.sent
    # a's host breaks on its first point: it and a's queued points come back.
    for idx in list(sched.node2pending[a]):
        assert sched.requeue(a, sched.collection[idx]) is True
        sched.mark_test_complete(a, idx)
    assert a in sched.retired and a.shutting_down
    assert len(a.sent) == len(first_a)  # nothing more was sent to a
    # b gets everything, including what a returned.
    while sched.node2pending[b] or sched.pending:
        idx = sched.node2pending[b][0]
        sched.mark_test_complete(b, idx)
    assert sorted(set(b.sent)) == list(range(20))
    assert sched.left_over == []


def test_points_returned_when_no_worker_is_healthy_are_left_for_the_next_pass(
    pytestconfig: pytest.Config,
) -> None:
    a = FakeNode("gw0")
    sched = _sched(pytestconfig, [a], 10)
    sent = list(sched.node2pending[a])
    sched.requeue(a, sched.collection[sent[0]])
    sched.mark_test_complete(a, sent[0])
    assert sched.pending == []  # stranded, so the session can end
    assert len(sched.left_over) == 10 - len(sent) + 1
    assert a.shutting_down
