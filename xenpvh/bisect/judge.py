"""The real judge of a bisection step: build what the commit holds (cached), boot the target
(a plan point, described by the caller) on it, return the Session's verdict and failed stage.

Roles (what the bisected tree is):
    xen                 a Xen tree: built with the point's patch series and config; the
                        nested host boots each build
    kernel              a Linux guest kernel tree: built, booted as the point's kernel
    cmdline-file:PATH   a guest-side configuration repository: the file PATH (one line)
                        is added to the point's kernel command line
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from xenpvh.bisect.driver import StepOutcome
from xenpvh.build.builder import build_linux, build_xen
from xenpvh.build.tree import TreeSpec
from xenpvh.errors import BlockedError
from xenpvh.host.base import Host
from xenpvh.host.lock import acquire, release
from xenpvh.host.open import open_host
from xenpvh.host.request import HostRequest
from xenpvh.report.history import HistoryTarget
from xenpvh.run.request import BootRequest
from xenpvh.run.session import Session

log = logging.getLogger(__name__)

MAX_CMDLINE_FILE = 4096
ROLES = ("xen", "kernel", "cmdline-file:PATH")


def check_role(role: str) -> str:
    if role in ("xen", "kernel"):
        return role
    if role.startswith("cmdline-file:") and role.partition(":")[2]:
        rel = Path(role.partition(":")[2])
        if rel.is_absolute() or ".." in rel.parts:
            raise BlockedError(f"--role {role}: the file must be a path inside the tree")
        return role
    raise BlockedError(f"--role {role!r}: expected one of {', '.join(ROLES)}")


class StepRequest(Protocol):
    """The boot of one step, made by whoever knows the point (`plan.bisection` for a plan
    point): the bisection only says what this commit changes."""

    def __call__(
        self,
        *,
        artifacts: Path,
        kernel: str | None,
        cmdline_extra: str,
        host: HostRequest,
        history: HistoryTarget | None,
    ) -> BootRequest: ...


@dataclass(frozen=True)
class BisectTarget:
    """What a bisection boots at each step.  The caller (a plan point) fills it in, so the
    bisection knows no plans: `plan` and `point` only name its record in the history."""

    plan: str  # the plan's name
    point: str  # the point's id
    request: StepRequest
    xen_patches: tuple[str, ...] = ()  # the xen role: the series and config each build gets
    xen_config: str | None = None


@dataclass
class PointJudge:
    """Judge commits of a tree for one target.  `host` (a Host the caller holds) serves
    the kernel and cmdline roles; the xen role boots a nested host per build."""

    target: BisectTarget
    role: str
    artifacts_root: Path
    host: Any = None
    host_request: HostRequest = field(default_factory=HostRequest)
    guest_kit: Any = None
    history: Any = None  # a BisectHistory: each step's boot is recorded under its plan run

    def __call__(self, commit: str, work: Path) -> StepOutcome:
        artifacts = self.artifacts_root / f"{time.strftime('%H%M%S')}-{commit[:12]}"
        kernel: str | None = None
        extra = ""
        host_req = self.host_request
        host = self.host
        if self.role == "xen":
            t = self.target
            built = build_xen(TreeSpec.from_cli(str(work), list(t.xen_patches), t.xen_config))
            host_req = HostRequest(spec="nested", xen_image=built.image, qemu=host_req.qemu)
            host = None  # this Xen needs a host booted on it
        elif self.role == "kernel":
            kernel = str(build_linux(TreeSpec.from_cli(str(work), [], None)).image)
        else:
            extra = read_cmdline(work / self.role.partition(":")[2])
        req = self.target.request(
            artifacts=artifacts,
            kernel=kernel,
            cmdline_extra=extra,
            host=host_req,
            history=None if self.history is None else self.history.target(commit),
        )
        result = Session(req, host=host, guest_kit=self.guest_kit).run()
        v = result.verdict
        return StepOutcome(str(v.verdict), v.failed_stage, v.reason, str(result.artifacts))


def read_cmdline(path: Path) -> str:
    try:
        data = path.read_bytes()[: MAX_CMDLINE_FILE + 1]
    except FileNotFoundError:
        return ""  # not there at this commit: nothing added
    except OSError as e:
        raise BlockedError(f"{path.name}: {e.strerror or e}") from e
    if len(data) > MAX_CMDLINE_FILE:
        raise BlockedError(f"{path.name} is longer than {MAX_CMDLINE_FILE} bytes")
    text = data.decode("utf-8", errors="replace").strip()
    if any(c in text for c in "\n\r\0"):
        raise BlockedError(f"{path.name}: the kernel command line must be one line")
    return text


@contextlib.contextmanager
def held_host(request: HostRequest, artifacts: Path) -> Iterator[Host]:
    artifacts.mkdir(parents=True, exist_ok=True)
    with open_host(request, artifacts=artifacts) as host:
        # The box is ours for the bisection: no plan or developer boots on it meanwhile.
        lease = acquire(host, owner="xenpvh bisect", reason="bisection", ttl=4 * 3600.0)
        try:
            yield host
        finally:
            with contextlib.suppress(Exception):
                release(host, lease)


__all__ = [
    "ROLES",
    "BisectTarget",
    "PointJudge",
    "StepRequest",
    "check_role",
    "held_host",
    "read_cmdline",
]
