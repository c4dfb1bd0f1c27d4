"""What a run's input alone decides about its domain config, before any host is touched.

The config is rendered for the host's Xen once the host is reached; everything in it that
does not depend on the host (a hostile or malformed command line, names, MACs, extra keys) is
checked here by rendering the point once with placeholder paths (as `xenpvh config render`
previews it), so such input is `blocked` without booting a nested host or dialling a lab box.
"""

from __future__ import annotations

from pathlib import Path

from xenpvh.errors import BlockedError
from xenpvh.profile.domain import DomainSpec
from xenpvh.render.libvirt import render_libvirt_xml
from xenpvh.render.xl import render_xl_config
from xenpvh.run.remote import remote_paths
from xenpvh.toolstack.xl import parse_info

# A Xen version that has the point's PVH mode: the host's own version is checked later.
_XEN_FOR_MODE = {"pvh": "4.17", "pvhv1": "4.8"}


def check_renderable(point: DomainSpec, toolstack: str) -> None:
    """RenderError (blocked) naming what the point's config would refuse."""

    def placeholder(value: str | None) -> Path | None:
        return Path(value.rsplit(":", 1)[-1] or "kernel") if value else None

    spec = remote_paths(
        point,
        run_id="00000000-000000-000000",
        kernel=placeholder(point.kernel) or Path("kernel"),
        ramdisk=placeholder(point.ramdisk),
        kernel_id=lambda p: "0" * 16,
    )
    if toolstack == "libvirt":
        render_libvirt_xml(spec)
    else:
        render_xl_config(spec, _XEN_FOR_MODE.get(point.mode, "4.17"))


def check_host_memory(xl_info: str, memory_mb: int, *, host: str) -> None:
    """BlockedError when the host cannot give the guest `memory_mb` MiB (Xen's free memory
    from `xl info`, read after the sweep reclaimed dead runs' domains and before create): the
    request asks more than this host has, named with the figures."""

    try:
        info = parse_info(xl_info)
        free = int(info["free_memory"])
        total = int(info.get("total_memory", "0") or 0)
    except Exception:  # no figures (an odd toolstack): xl create will say it
        return
    if memory_mb > free:
        of = f" of {total} MiB" if total else ""
        raise BlockedError(
            f"memory {memory_mb} MiB: host {host} has {free} MiB free for guests{of} "
            "(xl info free_memory); ask for less (--memory)"
        )


__all__ = ["check_host_memory", "check_renderable"]
