"""Is the host's xenstored still answering while the guest boots?

A xenstored that stops answering stalls the guest at whatever stage it is in (xenbus
before all else); the stage's deadline would then blame the guest.  The probe asks XenStore
one cheap question (dom0's name) every `interval` seconds in a thread of its own, so the
watch loop never waits on it.

One unanswered question is not proof: a dom0 under TCG that is writing back a freshly
unpacked guest disk, or starting the relay's python3, can take longer than a call's
deadline (seen in CI: a good boot called `broken` 10 s after unpause).  So a timeout opens
a suspicion and the next probe is asked at once, on a fresh relay; xenstored is declared
dead only when nothing has been answered for `dead_after` seconds since the first unanswered
question, or at once when the relay cannot reach xenstored's socket at all.  `final()` asks
too, synchronously, before a guest is failed for a stage that showed no console evidence (a
deadline or an ended console): if xenstored is dead then, the run is `broken`, not the
guest's `fail`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from xenpvh.errors import BrokenError, XenpvhError
from xenpvh.toolstack.xenstore import XenStoreTimeout

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
        dead_after: float | None = None,
    ) -> None:
        self._xenstore = xenstore
        self.host = host
        self.interval = interval
        # Two unanswered calls in a row (each bounded by the XenStore's `timeout`).
        self.dead_after = dead_after if dead_after is not None else 2 * timeout
        # A call still running this long is hung, whatever the XenStore's own deadline.
        self.overdue = timeout + 5.0
        self._next = time.monotonic() + interval
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._lock = threading.Lock()
        self._error: str | None = None  # decided: xenstored is dead
        self._suspect_since: float | None = None  # the first unanswered question began
        self._last_timeout = ""
        self.probes = 0
        self.timeouts = 0

    def suspect(self, error: XenStoreTimeout, since: float) -> None:
        """A call that began at `since` went unanswered (the probe's, or another XenStore
        user's): xenstored is slow or dead, and the next probe tells which."""
        with self._lock:
            self.timeouts += 1
            self._last_timeout = str(error)
            if self._suspect_since is None:
                self._suspect_since = since
        log.info("xenstored on %s slow or dead (asking again): %s", self.host, error)

    def _probe(self, started: float) -> None:
        try:
            self._xenstore().alive()
        except XenStoreTimeout as e:
            self.suspect(e, started)
        except (XenpvhError, OSError) as e:
            with self._lock:
                self._error = str(e)
        else:
            with self._lock:
                self._suspect_since = None

    def problem(self) -> str:
        """'' while xenstored answers (or is only suspect); else what is wrong (without
        waiting)."""
        now = time.monotonic()
        with self._lock:
            if self._error is not None:
                return f"xenstored on {self.host} stopped answering: {self._error}"
            running = self._thread is not None and self._thread.is_alive()
            since = self._suspect_since
            if since is None and running and now - self._started > self.overdue:
                since = self._started
            if since is not None and now - since > self.dead_after:
                detail = f": {self._last_timeout}" if self._last_timeout else ""
                return (
                    f"xenstored on {self.host} stopped answering: nothing answered in "
                    f"{now - since:.0f}s{detail}"
                )
        return ""

    def _begin(self, now: float) -> None:
        self._started = now
        self.probes += 1

    def _start(self, now: float) -> None:
        self._next = now + self.interval
        self._begin(now)
        self._thread = threading.Thread(
            target=self._probe, args=(now,), name="xenstore-probe", daemon=True
        )
        self._thread.start()

    def check(self) -> None:
        """Called every watch-loop turn: BrokenError once xenstored stopped answering;
        otherwise starts the next probe when one is due (at once while suspect).  Never
        blocks."""
        problem = self.problem()
        if problem:
            raise BrokenError(problem)
        now = time.monotonic()
        idle = self._thread is None or not self._thread.is_alive()
        if idle and (now >= self._next or self._suspect_since is not None):
            self._start(now)

    def final(self) -> str:
        """Probes synchronously until xenstored answers or is declared dead: '' when
        alive.  Bounded by `dead_after` (plus one call's overdue margin)."""
        while True:
            if self._thread is not None and self._thread.is_alive():
                left = self.overdue - (time.monotonic() - self._started)
                self._thread.join(max(left, 0.2))
            problem = self.problem()
            if problem:
                return problem
            if self._thread is not None and self._thread.is_alive():
                continue  # overdue is judged by problem() on the next turn
            now = time.monotonic()
            self._begin(now)
            self._probe(now)
            problem = self.problem()
            if problem or self._suspect_since is None:
                return problem


__all__ = ["XenStoreProbe"]
