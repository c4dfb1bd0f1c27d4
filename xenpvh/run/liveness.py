"""Is the host's xenstored still answering while the guest boots?

A xenstored that stops answering stalls the guest at whatever stage it is in (xenbus
before all else); the stage's deadline would then blame the guest.  The probe asks XenStore
one cheap question (dom0's name) every `interval` seconds in a thread of its own, so the
watch loop never waits on it, and says `broken` as soon as a probe fails or is overdue.
`final()` asks once more, synchronously, before a guest is failed for a stage that showed no
console evidence (a deadline or an ended console): if xenstored is dead then, the run is
`broken`, not the guest's `fail`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from xenpvh.errors import BrokenError, XenpvhError

log = logging.getLogger(__name__)


class XenStoreProbe:
    """Periodic liveness probe of one host's xenstored, through the run's XenStore."""

    def __init__(
        self,
        xenstore: Callable[[], Any],
        *,
        host: str,
        interval: float = 5.0,
        timeout: float = 10.0,
    ) -> None:
        self._xenstore = xenstore
        self.host = host
        self.interval = interval
        # A probe still unanswered this long after it started is a dead xenstored, even
        # if the XenStore call itself has not given up yet.
        self.overdue = timeout + 5.0
        self._next = time.monotonic() + interval
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._error: str | None = None
        self.probes = 0

    def _probe(self) -> None:
        try:
            self._xenstore().alive()
        except (XenpvhError, OSError) as e:
            self._error = str(e)

    def problem(self) -> str:
        """'' while xenstored answers; else what is wrong (without waiting)."""
        if self._error is not None:
            return f"xenstored on {self.host} stopped answering: {self._error}"
        if self._thread is not None and self._thread.is_alive():
            waited = time.monotonic() - self._started
            if waited > self.overdue:
                return f"xenstored on {self.host} stopped answering: no reply in {waited:.0f}s"
        return ""

    def check(self) -> None:
        """Called every watch-loop turn: BrokenError once xenstored stopped answering;
        otherwise starts the next probe when one is due.  Never blocks."""
        problem = self.problem()
        if problem:
            raise BrokenError(problem)
        now = time.monotonic()
        if (self._thread is None or not self._thread.is_alive()) and now >= self._next:
            self._next = now + self.interval
            self._started = now
            self.probes += 1
            self._thread = threading.Thread(target=self._probe, name="xenstore-probe", daemon=True)
            self._thread.start()

    def final(self) -> str:
        """One synchronous probe (bounded by the XenStore deadline): '' when alive."""
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(max(self.overdue - (time.monotonic() - self._started), 0.0))
        problem = self.problem()
        if problem:
            return problem
        self._probe()
        return self.problem()


__all__ = ["XenStoreProbe"]
