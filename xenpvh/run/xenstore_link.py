"""One XenStore connection for a whole boot run: starting the relay costs an ssh channel and
a python3 start on a slow dom0, too much to repeat every poll.  The liveness probe's thread,
the watch loop and the collect all share it; it is opened on first use and closed before the
destroy (or the keep)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

from xenpvh.host.base import Host
from xenpvh.toolstack.xenstore import XenStore


class XenStoreLink:
    def __init__(self, host: Host, factory: Callable[[Host], XenStore]) -> None:
        self.host = host
        self.factory = factory
        self._xs: XenStore | None = None
        self._opened: XenStore | None = None  # kept past the close, for its counters
        self._exits = contextlib.ExitStack()
        self._lock = threading.Lock()  # the probe's thread may open the connection

    def get(self) -> XenStore:
        with self._lock:
            if self._xs is None:
                self._xs = self._exits.enter_context(self.factory(self.host))
                self._opened = self._xs
            return self._xs

    def close(self) -> None:
        """Close the relay; its failure must not stop what follows (the destroy)."""
        with contextlib.suppress(Exception):
            self._exits.close()
        self._xs = None

    def counters(self) -> dict[str, int]:
        """The relays the connection started and the late replies it skipped (a slow dom0
        shows late replies; a dropped connection one more relay)."""
        out: dict[str, int] = {}
        connection = getattr(self._opened, "connection", None)
        for key in ("relays", "late_replies"):
            value = getattr(connection, key, None)
            if isinstance(value, int):
                out[key] = value
        return out


__all__ = ["XenStoreLink"]
