"""A pytest plugin for simulated plan runs: fake hosts behind the plan's PoolDriver hook,
everything else real (the plan runner, pytest-xdist, PoolScheduling, the history).

Loaded with `-p tests.plan_sim`; configured by the environment variable XENPVH_PLAN_SIM, a
JSON object:
    seconds        per point (default 0.2): how long a fake boot takes
    break_after    {host: n}: the host dies after its n-th point (that point ends broken)
    unreachable    [host, ...]: the host cannot be opened at all
    fail           [point id, ...]: these points fail at ap-launch
    flaky          [point id, ...]: pass after one broken attempt
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from xenpvh.errors import BrokenError


def _config() -> dict[str, Any]:
    return json.loads(os.environ.get("XENPVH_PLAN_SIM", "{}"))


class FakeHost:
    def __init__(self, name: str) -> None:
        self.name = name
        self.points = 0
        self.dead = False


class FakeDriver:
    def __init__(self) -> None:
        self.cfg = _config()

    @contextlib.contextmanager
    def open(self, pool_host: Any, xen: str, spec: Any) -> Iterator[FakeHost]:
        if pool_host.name in self.cfg.get("unreachable", []):
            raise BrokenError(f"{pool_host.name}: connection refused (simulated)")
        yield FakeHost(pool_host.name)

    def run_point(self, host: FakeHost, pool_host: Any, point: Any, spec: Any) -> str:
        from xenpvh.history import open_store
        from xenpvh.history.store import AttemptRow, RunRecord, StageRow

        t0 = time.time()
        time.sleep(float(self.cfg.get("seconds", 0.2)))
        host.points += 1
        limit = self.cfg.get("break_after", {}).get(host.name)
        attempts: tuple[AttemptRow, ...] = ()
        if limit is not None and host.points >= limit:
            host.dead = True
            verdict, stage, reason = "broken", None, "ssh: connection reset (simulated)"
        elif point.id in self.cfg.get("fail", []):
            verdict, stage, reason = "fail", "ap-launch", "expected 4 CPUs, saw 1"
        else:
            verdict, stage, reason = "pass", None, "every stage passed"
            if point.id in self.cfg.get("flaky", []):
                attempts = (AttemptRow(1, "broken", "emulation fault"), AttemptRow(2, "pass", "ok"))
        with open_store(spec.db) as store:
            store.record_run(
                RunRecord(
                    id=uuid.uuid4().hex,
                    point=point.id,
                    profile=point.profile,
                    verdict=verdict,
                    reason=reason,
                    started_at=t0,
                    finished_at=time.time(),
                    failed_stage=stage,
                    plan_run_id=spec.plan_run,
                    baseline=spec.baseline,
                    host=pool_host.name,
                    stages=(StageRow("ap-launch", "failed" if stage else "passed", 1.0),),
                    attempts=attempts,
                )
            )
        return verdict

    def alive(self, host: FakeHost) -> bool:
        return not host.dead


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xenpvh_pool_driver(config: pytest.Config) -> FakeDriver:
    return FakeDriver()
