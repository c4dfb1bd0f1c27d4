"""A plan's data: what to build once, and every point to boot.

A point's `id` is stable from night to night (the history and the regression report match
points by it): profile, toolstack, vcpus, memory, disks, vifs, then the Xen build's and the
guest kernel's names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xenpvh.errors import BlockedError


@dataclass(frozen=True)
class XenBuild:
    """A Xen to boot the points on: `host` (no tree: the host's own Xen) or a tree + patch
    series + Kconfig fragment, built once per plan run by the build room."""

    name: str
    tree: str | None = None
    patches: tuple[str, ...] = ()
    config: str | None = None

    @property
    def builds(self) -> bool:
        return self.tree is not None


@dataclass(frozen=True)
class GuestKernel:
    """The guest side of a point: the profile's kernel (no field set), a kernel file, or a
    kernel tree built once per plan run; `cmdline_append` is added to the kernel command
    line."""

    name: str
    kernel: str | None = None
    ramdisk: str | None = None
    tree: str | None = None
    cmdline_append: str = ""
    # A guest-side configuration repository (a local git work tree) whose file
    # `cmdline_file` is added to the kernel command line; its HEAD is the run's tree commit
    # (so a regression names the commits to bisect with `--role cmdline-file:FILE`).
    cmdline_repo: str | None = None
    cmdline_file: str = "cmdline"


@dataclass(frozen=True)
class PlanPoint:
    """One boot of the plan: a profile point on one Xen build with one guest kernel."""

    profile: str
    toolstack: str
    vcpus: int
    memory_mb: int
    disks: int
    vifs: int
    xen: XenBuild
    kernel: GuestKernel
    attempts: int
    timeout: float
    cmdline_append: str = ""

    @property
    def id(self) -> str:
        return (
            f"{self.profile_name}.{self.toolstack}.vcpus{self.vcpus}.mem{self.memory_mb}"
            f".disks{self.disks}.vifs{self.vifs}.xen-{self.xen.name}.kernel-{self.kernel.name}"
        )

    @property
    def profile_name(self) -> str:
        """The profile's name (a profile given as a .toml path: the file's stem)."""
        return self.profile.rsplit("/", 1)[-1].removesuffix(".toml")

    @property
    def full_cmdline_append(self) -> str:
        return " ".join(p for p in (self.cmdline_append, self.kernel.cmdline_append) if p)

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "profile": self.profile,
            "toolstack": self.toolstack,
            "vcpus": self.vcpus,
            "memory_mb": self.memory_mb,
            "disks": self.disks,
            "vifs": self.vifs,
            "xen": self.xen.name,
            "kernel": self.kernel.name,
            "cmdline_append": self.full_cmdline_append,
            "attempts": self.attempts,
            "timeout": self.timeout,
        }


@dataclass(frozen=True)
class Plan:
    """A loaded plan: its name, its builds and its points (already expanded)."""

    name: str
    path: str
    description: str
    xen_builds: tuple[XenBuild, ...]
    kernels: tuple[GuestKernel, ...]
    points: tuple[PlanPoint, ...] = field(default_factory=tuple)

    def point(self, point_id: str) -> PlanPoint:
        for p in self.points:
            if p.id == point_id:
                return p
        raise BlockedError(
            f"plan {self.name!r} has no point {point_id!r} (`xenpvh plan show {self.path}`)"
        )


__all__ = ["GuestKernel", "Plan", "PlanPoint", "XenBuild"]
