"""A plan point as the Session's input: one BootRequest, for `plan run` and `bisect` alike."""

from __future__ import annotations

from pathlib import Path

from xenpvh.host.request import HostRequest
from xenpvh.plan.model import PlanPoint
from xenpvh.run.request import BootRequest


def point_request(
    point: PlanPoint,
    *,
    artifacts: Path,
    kernel: str | None = None,
    cmdline_extra: str = "",
    history: object | None = None,
    host: HostRequest | None = None,
) -> BootRequest:
    append = " ".join(p for p in (point.full_cmdline_append, cmdline_extra) if p)
    return BootRequest(
        profile=point.profile,
        vcpus=point.vcpus,
        memory_mb=point.memory_mb,
        kernel=kernel or point.kernel.kernel,
        ramdisk=point.kernel.ramdisk,
        cmdline_append=append,
        toolstack=point.toolstack,
        attempts=point.attempts,
        timeout=point.timeout,
        artifacts=artifacts,
        point_name=point.id,
        disks=point.disks,
        vifs=point.vifs,
        history=history,
        host=host or HostRequest(),
    )


__all__ = ["point_request"]
