"""The pool's pytest-xdist scheduler: xdist's own load scheduling, plus one rule — a worker
whose host broke gets no more points, and the points it gives back go to the others.

A worker that finds its host broken (cannot be opened or leased, or fails its health check
after a `broken` point) reports that point and every point still queued to it as skipped
with the user property `xenpvh-requeue`.  The controller's report hook calls
`PoolScheduling.requeue()`: the worker is retired (no new points; shut down once drained)
and each returned point goes back to the front of the pending queue, for a healthy worker
that is still taking points.  A point given back after every healthy worker was told to
shut down (xdist's load scheduling shuts a worker down as soon as nothing is pending) is
left for the plan runner's next pass, on the hosts still healthy.
"""

from __future__ import annotations

import logging
from typing import Any

from xdist.scheduler.load import LoadScheduling

log = logging.getLogger(__name__)

REQUEUE_PROPERTY = "xenpvh-requeue"


class PoolScheduling(LoadScheduling):
    def __init__(self, config: Any, log: Any = None) -> None:
        super().__init__(config, log)
        self.retired: set[Any] = set()
        self.requeued: list[str] = []  # node ids handed to another worker in this pass
        self.left_over: list[str] = []  # node ids for the runner's next pass

    def healthy(self) -> list[Any]:
        return [n for n in self.node2pending if n not in self.retired and not n.shutting_down]

    def requeue(self, node: Any, nodeid: str) -> bool:
        """`node`'s host is broken and `nodeid` must run elsewhere; False when no healthy
        worker takes points any more (the runner's next pass runs it)."""
        if node not in self.retired:
            log.warning("pool: worker %s retired (its host is broken)", node.gateway.id)
            self.retired.add(node)
        if self.collection is None or not self.healthy():
            self.left_over.append(nodeid)
            self._strand_pending()
            return False
        self.pending.insert(0, self.collection.index(nodeid))
        self.requeued.append(nodeid)
        return True

    def _strand_pending(self) -> None:
        """No healthy worker takes points: what is still pending goes to the next pass (so
        the session can end instead of waiting for a worker that will never come)."""
        if self.collection is not None and not self.healthy():
            self.left_over.extend(self.collection[i] for i in self.pending)
            self.pending.clear()

    def check_schedule(self, node: Any, duration: float = 0) -> None:
        if node in self.retired:
            # No new points; the ones queued to it come back skipped (and requeued).  A
            # worker runs its last queued point only once told to shut down.
            if not node.shutting_down:
                node.shutdown()
            for other in self.healthy():
                super().check_schedule(other, 0)
            self._strand_pending()
            return
        super().check_schedule(node, duration)


__all__ = ["REQUEUE_PROPERTY", "PoolScheduling"]
