"""What a front end asks a Session for: typed, validated before any host is touched.

Every front end (CLI, pytest plugin, and later plans and the developer loop) builds one of
these and hands it to `xenpvh.run.session.Session`; none composes the pipeline itself.
`validate()` decides everything the input alone decides, so a bad request is `blocked`
before a build starts or a nested host boots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from xenpvh.build.qemu import check_choice
from xenpvh.errors import BlockedError
from xenpvh.host.request import HostRequest
from xenpvh.profile.bounds import MAX_CMDLINE, MAX_MEMORY_MB, MAX_VCPUS
from xenpvh.profile.domain import DiskSpec, VifSpec

# Bounds on what a point may ask for: far above any real PVH test guest, far below what
# would take a host down or make a run pointless.  Named in the error when exceeded.
MAX_ATTEMPTS = 20
MAX_TIMEOUT = 24 * 3600.0
MAX_KEEP_FOR = 7 * 24 * 3600.0
TOOLSTACKS = ("xl", "libvirt")
MAX_DEVICES = 16  # disks or vifs of one point


@dataclass(frozen=True)
class XenBuildRequest:
    """Build Xen from `tree` with `patches` (and a Kconfig fragment) before booting."""

    tree: str
    patches: tuple[str, ...] = ()
    config: str | None = None
    rebuild: bool = False


@dataclass(frozen=True)
class BootRequest:
    """One profile point on one host, with retries, artifacts and optional builds."""

    profile: str
    vcpus: int | None = None
    memory_mb: int | None = None
    kernel: str | None = None
    ramdisk: str | None = None
    cmdline_append: str = ""
    toolstack: str = "xl"
    host: HostRequest = field(default_factory=HostRequest)
    attempts: int = 3
    artifacts: Path | None = None
    xen_build: XenBuildRequest | None = None
    kernel_tree: str | None = None
    rebuild: bool = False
    timeout: float = 900.0
    # A name for the run's reports (JUnit testsuite/classname); derived when None.
    point_name: str | None = None
    # The point's disks and vifs instead of the profile's (None: the profile's): explicit
    # specs, or a count (the profile's first one repeated; disks get vdevs xvda, xvdb, ...).
    disks: tuple[DiskSpec, ...] | int | None = None
    vifs: tuple[VifSpec, ...] | int | None = None
    # The developer's loop (xenpvh dev): keep the guest of a `fail` running for `keep_for`
    # seconds; the host lock: wait up to `wait_host` seconds for another owner's lease
    # (xenpvh.host.lock), `owner` being who we are (default user@machine).
    keep_on_fail: bool = False
    keep_for: float = 2 * 3600.0
    wait_host: float = 0.0
    owner: str | None = None
    # Record the run in the results history too (xenpvh.report.history.HistoryTarget).
    history: object | None = None

    def validate(self) -> None:
        """BlockedError naming the first thing wrong with the request itself."""
        if not self.profile:
            raise BlockedError("no profile given (--profile NAME or a path to a .toml)")
        if self.toolstack not in TOOLSTACKS:
            raise BlockedError(
                f"toolstack {self.toolstack!r}: expected one of {', '.join(TOOLSTACKS)}"
            )
        if not 1 <= self.attempts <= MAX_ATTEMPTS:
            raise BlockedError(f"attempts must be 1-{MAX_ATTEMPTS}, not {self.attempts}")
        if not 0 < self.timeout <= MAX_TIMEOUT:  # also refuses inf and nan
            raise BlockedError(f"timeout must be > 0 and <= {MAX_TIMEOUT:g}s, not {self.timeout}")
        if not 0 < self.keep_for <= MAX_KEEP_FOR:
            raise BlockedError(
                f"keep-for must be > 0 and <= {MAX_KEEP_FOR:g}s, not {self.keep_for}"
            )
        if not 0 <= self.wait_host <= MAX_TIMEOUT:
            raise BlockedError(f"wait-host must be 0-{MAX_TIMEOUT:g}s, not {self.wait_host}")
        if self.owner is not None and not 0 < len(self.owner) <= 200:
            raise BlockedError("an owner must be 1-200 characters")
        if self.vcpus is not None and not 1 <= self.vcpus <= MAX_VCPUS:
            raise BlockedError(f"vcpus must be 1-{MAX_VCPUS}, not {self.vcpus}")
        if self.memory_mb is not None and not 16 <= self.memory_mb <= MAX_MEMORY_MB:
            raise BlockedError(f"memory must be 16-{MAX_MEMORY_MB} MiB, not {self.memory_mb}")
        for what, devs in (("disks", self.disks), ("vifs", self.vifs)):
            n = len(devs) if isinstance(devs, tuple) else devs
            if n is not None and not 0 <= n <= MAX_DEVICES:
                raise BlockedError(f"{what} must be 0-{MAX_DEVICES}, not {n}")
        append = self.cmdline_append
        if any(c in append for c in "\n\r\0"):
            raise BlockedError("the kernel command line addition must be one line")
        if len(append) > MAX_CMDLINE:
            raise BlockedError(
                f"the kernel command line addition is {len(append)} bytes; at most "
                f"{MAX_CMDLINE} are accepted"
            )
        if self.kernel_tree and self.kernel:
            raise BlockedError("give either a kernel or a kernel tree, not both")
        for what, value in (("kernel", self.kernel), ("ramdisk", self.ramdisk)):
            if value and not value.startswith("@") and not Path(value).is_file():
                raise BlockedError(f"{what} {value} does not exist (or is not a file)")
        if self.host.xen_image is not None and not self.host.xen_image.is_file():
            raise BlockedError(f"Xen image {self.host.xen_image} does not exist")
        if self.xen_build is not None and not self.host.nested:
            raise BlockedError(
                "a built Xen boots on the nested host here; install it on a lab box with "
                "`xenpvh host provision --xen-artifact ...` and boot with --host"
            )
        if self.host.nested:
            check_choice(self.host.qemu)
        elif self.host.qemu != "patched":
            raise BlockedError("--qemu chooses the nested host's QEMU; this run uses a lab box")


__all__ = [
    "MAX_ATTEMPTS",
    "MAX_CMDLINE",
    "MAX_MEMORY_MB",
    "MAX_VCPUS",
    "BootRequest",
    "HostRequest",
    "XenBuildRequest",
]
