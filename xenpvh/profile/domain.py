"""The domain a run creates: pure data shared by profiles, renderers and toolstacks.

A profile carries default values; a *point* (profile x vcpus x memory x kernel ...) is one
concrete `DomainSpec`.  Paths in a DomainSpec are paths **on the Xen host** (dom0), not on
the machine running xenpvh; the run uploads local files first and rewrites the paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DiskSpec:
    """One virtual block device.

    `target` is the backing file on the dom0.  When `size_mb` is set and `target` is empty,
    the run creates a scratch image of that size (formatted with `fs`) in its work dir.
    """

    vdev: str = "xvda"
    target: str = ""
    format: str = "raw"
    access: str = "rw"
    size_mb: int | None = None
    fs: str | None = "ext4"
    # A hotplug script on the host that attaches `target` (absolute path); None: libxl's.
    script: str | None = None


@dataclass(frozen=True)
class VifSpec:
    """One virtual network interface, bridged in the dom0."""

    bridge: str = "xenbr0"
    mac: str | None = None
    # A hotplug script on the host (absolute path); None: the toolstack's default.
    script: str | None = None


@dataclass(frozen=True)
class DomainSpec:
    """Everything the toolstack needs to create one PVH domain."""

    name: str
    kernel: str
    cmdline: str = ""
    ramdisk: str | None = None
    memory_mb: int = 256
    vcpus: int = 1
    disks: tuple[DiskSpec, ...] = ()
    vifs: tuple[VifSpec, ...] = ()
    on_crash: str = "destroy"
    on_poweroff: str = "destroy"
    on_reboot: str = "destroy"
    # "pvh" (PVHv2, Xen >= 4.10) or "pvhv1" (Xen 4.4-4.8, the 2013 seed era).
    mode: str = "pvh"
    extra: dict[str, str] = field(default_factory=dict)
