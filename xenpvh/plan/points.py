"""The one test of a plan run, parametrized with the plan's points (collected explicitly by
`xenpvh plan run`; its outcome is the point's verdict, the history holds the details)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from xenpvh.plan.model import PlanPoint
from xenpvh.plan.pytest_plan import PLAN_PLUGIN, PoolSlot, run_point


@pytest.fixture(scope="session")
def xenpvh_pool_slot(request: pytest.FixtureRequest) -> Iterator[PoolSlot]:
    """The worker's pool host, held (and leased) for the whole session."""
    slot = request.config.stash[PLAN_PLUGIN].open_slot()
    try:
        yield slot
    finally:
        slot.close()


def test_point(
    request: pytest.FixtureRequest, xenpvh_plan_point: PlanPoint, xenpvh_pool_slot: PoolSlot
) -> None:
    verdict = run_point(request.node, xenpvh_pool_slot, xenpvh_plan_point)
    if verdict != "pass":
        pytest.fail(f"{xenpvh_plan_point.id}: {verdict}", pytrace=False)
