"""The COLLECT state of a boot run: the hypervisor's log and the domain's XenStore, fetched
side by side (on a TCG dom0 each costs a second or more) while the domain still exists.

Best effort: evidence that cannot be fetched is noted in the verdict's meta
(`collect_errors`); it does not change what the guest did.  `EarlyDump` takes the XenStore
dump while the guest boots on (the devices just connected), so a pass does not wait for it."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from xenpvh.errors import XenpvhError
from xenpvh.toolstack.base import Toolstack
from xenpvh.toolstack.xenstore import XenStore
from xenpvh.util.fs import atomic_write_text

log = logging.getLogger(__name__)


class EarlyDump:
    """The domain's XenStore dumped in a thread of its own, from the moment its devices
    connected: on a slow dom0 the walk takes seconds that would otherwise follow the verdict."""

    def __init__(self) -> None:
        self.taken: tuple[float, str] | None = None  # (t into the run, the dump)
        self._thread: threading.Thread | None = None

    def start(self, xs: XenStore, domid: int, t: float) -> None:
        def dump() -> None:
            try:
                self.taken = (t, xs.domain_dump(domid))
            except (XenpvhError, OSError) as e:
                log.debug("early XenStore dump failed: %s", e)

        self._thread = threading.Thread(target=dump, name="xenstore-dump", daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=60)


def collect(
    toolstack: Toolstack,
    artifacts: Path,
    domid: int,
    xenstore: Callable[[], XenStore],
    early: EarlyDump | None,
    use_early: bool,
) -> list[str]:
    """Fetch the evidence into `artifacts`; returns what could not be fetched.  `early`: a
    dump taken when the devices connected, waited for, and used instead of a fresh one when
    `use_early` (a pass: the guest's XenStore cannot have changed for the worse since)."""

    def hypervisor() -> None:
        toolstack.collect(artifacts)

    def xenstore_dump() -> None:
        if early is not None:
            early.join()
        taken = early.taken if early is not None else None
        if taken is not None and use_early:
            t, dump = taken
            dump = f"# dumped when the devices connected, t={t:.1f}s into the run\n{dump}"
        else:
            dump = xenstore().domain_dump(domid)
        atomic_write_text(artifacts / "xenstore.txt", dump)

    errors: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="collect") as pool:
        jobs = {"toolstack": pool.submit(hypervisor), "xenstore": pool.submit(xenstore_dump)}
        for what, job in jobs.items():
            try:
                job.result()
            except (XenpvhError, OSError) as e:
                errors.append(f"{what}: {e}")
    return errors


__all__ = ["EarlyDump", "collect"]
