"""The plan's pytest plugin: a plan run is a pytest session whose items are the plan's
points (parametrized `test_point` of `xenpvh/plan/points.py`), spread by pytest-xdist over
the pool, one worker per host.

Registered by the xenpvh plugin when `--xenpvh-plan-run SPEC.json` is given.  In a worker,
the session fixture `xenpvh_pool_slot` opens the worker's host (pool[N] for worker gwN) and
leases it (`xenpvh.host.lock`) for the session; each point runs through a `PoolDriver` — the
real one boots a Session with the history target of the plan run; the hook
`pytest_xenpvh_pool_driver` lets a simulation (bench/plan_spread.py) supply fake hosts and
keep everything else, the scheduler included.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from xenpvh.build.guestkit import build_linux_guest_kit
from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.lock import HostBusy, acquire, release
from xenpvh.host.open import open_host
from xenpvh.host.request import HostRequest
from xenpvh.plan.loader import load_plan
from xenpvh.plan.model import PlanPoint
from xenpvh.plan.pool import PoolHost
from xenpvh.plan.request import point_request
from xenpvh.plan.scheduler import REQUEUE_PROPERTY, PoolScheduling
from xenpvh.plan.spec import PassSpec, mark_broken
from xenpvh.report.history import HistoryTarget
from xenpvh.run.session import Session

log = logging.getLogger(__name__)

POINTS_MODULE = Path(__file__).with_name("points.py")
LEASE_TTL = 4 * 3600.0


def add_options(group: Any) -> None:
    group.addoption(
        "--xenpvh-plan-run",
        dest="xenpvh_plan_run",
        default=None,
        help="run one pass of a plan run (a JSON spec written by `xenpvh plan run`)",
    )


class PoolDriver(Protocol):
    """How a worker reaches its host and boots one point there."""

    def open(
        self, pool_host: PoolHost, xen: str, spec: PassSpec
    ) -> contextlib.AbstractContextManager[Any]: ...
    def run_point(
        self, host: Any, pool_host: PoolHost, point: PlanPoint, spec: PassSpec
    ) -> str: ...
    def alive(self, host: Any) -> bool: ...


class PlanHookSpecs:
    @pytest.hookspec(firstresult=True)
    def pytest_xenpvh_pool_driver(self, config: pytest.Config) -> PoolDriver | None:
        """The PoolDriver of this plan run (default: real hosts and Sessions)."""


@dataclass
class PoolSlot:
    """A worker's hold on its pool host: opened lazily per Xen build, leased, and marked
    broken for the rest of the run once it fails."""

    pool_host: PoolHost
    driver: PoolDriver
    spec: PassSpec
    broken: str | None = None
    points: int = 0
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _host: Any = None
    _xen: str | None = None

    def host_for(self, xen: str) -> Any:
        if self._host is not None and self._xen == xen:
            return self._host
        self.close()
        self._host = self._stack.enter_context(self.driver.open(self.pool_host, xen, self.spec))
        self._xen = xen
        return self._host

    def close(self) -> None:
        self._stack.close()
        self._stack = contextlib.ExitStack()
        self._host, self._xen = None, None

    def take_out(self, why: str) -> None:
        self.broken = why
        log.error("pool: host %s taken out of the pool: %s", self.pool_host.name, why)
        mark_broken(self.spec, self.pool_host.name, why)
        with contextlib.suppress(Exception):
            self.close()


class RealDriver:
    """Real hosts: `nested` boots a Xen host under QEMU (with the plan's built Xen, when the
    point asks for one), anything else is an ssh host; each is leased while held."""

    def __init__(self) -> None:
        self._kits: dict[str, Any] = {}

    @contextlib.contextmanager
    def open(self, pool_host: PoolHost, xen: str, spec: PassSpec) -> Iterator[Any]:
        image = spec.xen_images.get(xen)
        if image and not pool_host.nested:
            raise BlockedError(
                f"point needs the plan's Xen build {xen!r}: a lab box boots it once it is "
                "installed (`xenpvh host provision --xen-artifact ...`); use nested hosts"
            )
        artifacts = Path(spec.out) / "hosts" / pool_host.name
        artifacts.mkdir(parents=True, exist_ok=True)
        req = HostRequest(
            spec=pool_host.spec,
            identity=Path(pool_host.identity) if pool_host.identity else None,
            xen_image=Path(image) if image else None,
        )
        with open_host(req, artifacts=artifacts) as host, _leased(host, pool_host, spec):
            yield host

    def run_point(self, host: Any, pool_host: PoolHost, point: PlanPoint, spec: PassSpec) -> str:
        facts = {**spec.facts.get(f"xen:{point.xen.name}", {})}
        facts.update(spec.facts.get(f"kernel:{point.kernel.name}", {}))
        stamp = time.strftime("%H%M%S")
        req = point_request(
            point,
            artifacts=Path(spec.out) / "points" / point.id / f"{stamp}-{pool_host.name}",
            kernel=spec.kernels.get(point.kernel.name),
            cmdline_extra=spec.cmdlines.get(point.kernel.name, ""),
            history=HistoryTarget(
                db=spec.db,
                plan_run_id=spec.plan_run,
                baseline=spec.baseline,
                point=point.id,
                host=pool_host.name,
                facts=facts,
            ),
        )
        result = Session(req, host=host, guest_kit=self._kit).run()
        return str(result.verdict.verdict)

    def _kit(self) -> Any:
        if "linux" not in self._kits:
            self._kits["linux"] = build_linux_guest_kit()
        return self._kits["linux"]

    def alive(self, host: Any) -> bool:
        try:
            host.run(["xl", "list"], timeout=60, check=True)
        except Exception as e:  # any failure to answer is a dead host here
            log.warning("pool: host %s does not answer `xl list`: %s", host.name, e)
            return False
        return True


@contextlib.contextmanager
def _leased(host: Any, pool_host: PoolHost, spec: PassSpec) -> Iterator[None]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    lease = acquire(
        host,
        owner=f"xenpvh plan run {spec.plan_run} ({worker})",
        reason=f"plan {Path(spec.plan).stem}: {len(spec.points)} points",
        ttl=LEASE_TTL,
        wait=spec.wait_host,
    )
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            release(host, lease)


class PlanPlugin:
    def __init__(self, config: pytest.Config, spec: PassSpec) -> None:
        self.config = config
        self.spec = spec
        plan = load_plan(spec.plan)
        wanted = set(spec.points)
        self.points = [p for p in plan.points if p.id in wanted]
        self.scheduler: PoolScheduling | None = None

    # -- collection -------------------------------------------------------------------------

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "xenpvh_plan_point" in metafunc.fixturenames:
            metafunc.parametrize("xenpvh_plan_point", self.points, ids=[p.id for p in self.points])

    # -- the controller ---------------------------------------------------------------------

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> PoolScheduling:
        self.scheduler = PoolScheduling(config, log)
        return self.scheduler

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        node = getattr(report, "node", None)  # set by xdist in the controller
        if node is None or self.scheduler is None:
            return
        wants = any(name == REQUEUE_PROPERTY for name, _ in report.user_properties)
        if wants and report.when in ("setup", "call"):
            self.scheduler.requeue(node, report.nodeid)

    def open_slot(self) -> PoolSlot:
        """This worker's slot: pool[N] for worker gwN (a plain pytest session: pool[0])."""
        worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
        index = int(worker.removeprefix("gw") or 0)
        if index >= len(self.spec.pool):
            pytest.exit(f"worker {worker}: the pool has {len(self.spec.pool)} hosts", 2)
        driver = self.config.hook.pytest_xenpvh_pool_driver(config=self.config) or RealDriver()
        return PoolSlot(self.spec.pool[index], driver, self.spec)


PLAN_PLUGIN = pytest.StashKey[PlanPlugin]()


def run_point(item: pytest.Item, slot: PoolSlot, point: PlanPoint) -> str:
    """Boot `point` on the worker's host; a host that is or turns out broken hands the
    point back (skip + requeue property) and takes no more."""

    def requeue(why: str) -> None:
        item.user_properties.append((REQUEUE_PROPERTY, slot.pool_host.name))
        pytest.skip(f"host {slot.pool_host.name} is out of the pool ({why}); point requeued")

    if slot.broken:
        requeue(slot.broken)
    try:
        host = slot.host_for(point.xen.name)
    except HostBusy as e:  # someone else holds the box: the others take its points
        slot.take_out(str(e))
        requeue(slot.broken or "")
    except BlockedError:
        raise
    except (BrokenError, OSError) as e:
        slot.take_out(f"cannot open or lease it: {e}")
        requeue(slot.broken or "")
    verdict = slot.driver.run_point(host, slot.pool_host, point, slot.spec)
    slot.points += 1
    item.user_properties.append(("xenpvh-host", slot.pool_host.name))
    item.user_properties.append(("xenpvh-verdict", verdict))
    if verdict == "broken" and not slot.driver.alive(host):
        slot.take_out(f"dead after point {point.id}")
        requeue(slot.broken or "")
    return verdict


def pytest_configure_plan(config: pytest.Config) -> None:
    """Called by the xenpvh plugin's pytest_configure."""
    path = config.getoption("xenpvh_plan_run", None)
    if not path:
        return
    config.pluginmanager.add_hookspecs(PlanHookSpecs)
    spec = PassSpec.load(Path(path))
    plugin = PlanPlugin(config, spec)
    config.stash[PLAN_PLUGIN] = plugin
    config.pluginmanager.register(plugin, "xenpvh-plan")


__all__ = [
    "PLAN_PLUGIN",
    "POINTS_MODULE",
    "PassSpec",
    "PlanPlugin",
    "PoolDriver",
    "RealDriver",
    "run_point",
]
