"""What one boot run is given besides its host, profile and point: where it lives
(`RunOptions`), how long it may take (`RunLimits`) and whom it tells (`RunHooks`).

Grouped so that `BootRun` takes a handful of parameters and a caller names only the group it
changes (`RunLimits(timeout=30)`)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from xenpvh.check.checker import StageChecker
from xenpvh.check.verdict import Verdict
from xenpvh.errors import BlockedError
from xenpvh.host.base import Host
from xenpvh.run.keep import KeepPolicy
from xenpvh.run.lease import DOMAIN_PREFIX
from xenpvh.run.remote import REMOTE_ROOT
from xenpvh.toolstack.base import Toolstack
from xenpvh.toolstack.console import MAX_LOG_BYTES
from xenpvh.toolstack.xenstore import XenStore

EventCallback = Callable[[object], None]
RUN_ID_FORM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,47}")


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


@dataclass(frozen=True)
class RunOptions:
    """The toolstack (a name, or an instance the caller holds), the run's id (default: a new
    one), the root of xenpvh's files on the host, and whether a `fail` keeps its guest."""

    toolstack: str | Toolstack = "xl"
    run_id: str | None = None
    remote_root: str = REMOTE_ROOT
    keep: KeepPolicy | None = None  # keep the guest of a `fail` running (xenpvh dev)


@dataclass(frozen=True)
class RunLimits:
    """Deadlines and bounds: the whole run, the XenStore device check's grace after the
    xenbus stage's console lines, one XenStore call, the liveness probe's period, and
    console.log's size."""

    timeout: float = 900.0
    xenbus_grace: float = 30.0
    xenstore_timeout: float = 10.0
    xenstore_probe_interval: float = 5.0
    max_console_bytes: int = MAX_LOG_BYTES


@dataclass(frozen=True)
class RunHooks:
    """Whom the run tells, and the boundaries a test may replace: `on_event` gets every
    state, stage and device event; `on_decided` the verdict before the destroy (the Session
    writes its reports then); the checker and XenStore factories default to the real ones."""

    on_event: EventCallback | None = None
    on_decided: Callable[[Verdict], None] | None = None
    checker_factory: Callable[..., StageChecker] | None = None
    xenstore_factory: Callable[[Host], XenStore] | None = None


@dataclass(frozen=True)
class HostClients:
    """Clients of the host's services that a caller holds instead of the run making them: a
    toolstack instance (the caller closes it) and a XenStore factory (tests: a fake at the
    protocol boundary)."""

    toolstack: Toolstack | None = None
    xenstore_factory: Callable[[Host], XenStore] | None = None


@dataclass(frozen=True)
class RunPlace:
    """Where one run lives: its id and domain, its directory on the host, its artifacts here."""

    run_id: str
    remote_root: str
    artifacts: Path

    @classmethod
    def make(cls, options: RunOptions, artifacts: Path) -> RunPlace:
        run_id = options.run_id
        if run_id is not None and not RUN_ID_FORM.fullmatch(run_id):
            raise BlockedError(f"run id {run_id!r}: use 1-48 of [A-Za-z0-9_-]")
        return cls(run_id or new_run_id(), options.remote_root.rstrip("/"), Path(artifacts))

    @property
    def domain_name(self) -> str:
        return f"{DOMAIN_PREFIX}{self.run_id}"

    @property
    def run_dir(self) -> str:
        return f"{self.remote_root}/runs/{self.run_id}"


__all__ = ["HostClients", "RunHooks", "RunLimits", "RunOptions", "RunPlace", "new_run_id"]
