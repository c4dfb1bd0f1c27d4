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

Silence alone still cannot tell a dead xenstored from a host too slow to answer (seen in CI
on a loaded 2-core machine: a nested dom0 left questions unanswered for 20-31 s while its
xenstored ran, and three good boots were called `broken`).  So before silence is called
death, a `witness` asks the host another way -- a plain command reading xenstored's process
state from /proc: no process, or one stopped (SIGSTOP), traced or a zombie, is death at
once; a running one is a slow host, and the run waits on, up to `slow_cap` seconds of
silence in all.
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

# One line per xenstored process on the dom0: its state letter (proc(5) field 3; the comm
# field, "(xenstored)", has no blank).  Exit 3: no xenstored runs.
XENSTORED_STATE_SCRIPT = (
    "pids=$(pidof xenstored oxenstored) || exit 3; "
    'for p in $pids; do cut -d" " -f3 "/proc/$p/stat"; done'
)
# Process states in which xenstored cannot answer, whatever the host's speed.
NOT_SERVING: dict[str, str] = {
    "T": "stopped (SIGSTOP)",
    "t": "stopped by a tracer",
    "Z": "a zombie",
    "X": "dead",
}


def xenstored_witness(host: Any, *, timeout: float = 30.0) -> Callable[[], str | None]:
    """The witness of a host's xenstored for `XenStoreProbe`: what makes it unable to
    answer (no process, stopped, a zombie), None when it runs.  Raises BrokenError when
    the host does not run the command either."""

    def witness() -> str | None:
        r = host.run(["sh", "-c", XENSTORED_STATE_SCRIPT], timeout=timeout)
        states = r.out.split()
        if r.exit_status == 3 or (r.ok and not states):
            return "no xenstored process runs"
        if not r.ok:
            raise BrokenError(f"reading xenstored's state failed: {r.err.strip()[:200]}")
        for state in states:
            if state in NOT_SERVING:
                return f"xenstored is {NOT_SERVING[state]}"
        return None

    return witness


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
        witness: Callable[[], str | None] | None = None,
        slow_cap: float | None = None,
    ) -> None:
        self._xenstore = xenstore
        self.host = host
        self.interval = interval
        # Two unanswered calls in a row (each bounded by the XenStore's `timeout`).
        self.dead_after = dead_after if dead_after is not None else 2 * timeout
        # Asked once silence passed `dead_after`; without one, silence alone decides.
        self._witness = witness
        # Silence that long is death even while the process runs (hung, not slow).
        self.slow_cap = slow_cap if slow_cap is not None else 12 * timeout
        self._witnessed: float | None = None  # the suspicion the witness called slow
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
            self._ask_witness()
        except (XenpvhError, OSError) as e:
            with self._lock:
                self._error = str(e)
        else:
            with self._lock:
                self._suspect_since = None
                self._witnessed = None

    def _silent_for(self, now: float) -> float | None:
        with self._lock:
            return None if self._suspect_since is None else now - self._suspect_since

    def _ask_witness(self) -> None:
        """Silence past `dead_after`: is xenstored unable to answer, or the host slow?"""
        silent = self._silent_for(time.monotonic())
        if self._witness is None or silent is None or silent <= self.dead_after:
            return
        try:
            why = self._witness()
        except (XenpvhError, OSError) as e:
            # The host did not answer a plain command either: no proof of either kind,
            # and `slow_cap` still bounds the wait.
            log.info("xenstored on %s: its process state could not be read: %s", self.host, e)
            return
        with self._lock:
            if why is not None:
                self._error = f"{why} (nothing answered in {silent:.0f}s)"
            elif self._suspect_since is not None:
                self._witnessed = self._suspect_since
        if why is None:
            log.info(
                "xenstored on %s runs but answered nothing in %.0fs: the host is slow; "
                "waiting up to %.0fs",
                self.host,
                silent,
                self.slow_cap,
            )

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
            limit = self.dead_after
            if self._witness is not None:
                # Death needs the witness's word, or silence past the cap.
                limit = self.slow_cap
            if since is not None and now - since > limit:
                detail = f": {self._last_timeout}" if self._last_timeout else ""
                runs = " although its process runs" if self._witnessed == since else ""
                return (
                    f"xenstored on {self.host} stopped answering: nothing answered in "
                    f"{now - since:.0f}s{runs}{detail}"
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
        alive.  Bounded by `dead_after` (plus one call's overdue margin), or by `slow_cap`
        while the witness finds xenstored running."""
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


__all__ = ["NOT_SERVING", "XENSTORED_STATE_SCRIPT", "XenStoreProbe", "xenstored_witness"]
