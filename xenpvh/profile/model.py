"""Guest profiles as frozen data: stages, their patterns, forbidden patterns, domain defaults.

A profile is loaded from `guestcfg/<name>.toml` by `xenpvh.profile.loader`; this module only
holds the shapes and the one behaviour that belongs to the data, `Profile.point()`.

The stage model (what the checker in `xenpvh.check.checker` does with it):

* `Profile.stages` are in the **OS's real boot order**, not a fixed list: host stages
  (`hypervisor`, `dom0`) first, then the five guest stages in the order the guest's kernel
  reaches them (FreeBSD attaches its xenbus devices before it releases the APs; Linux with a
  modular initramfs runs `/init` before blkfront/netfront load).  A stage completes only after
  the one before it, so the order is what "not reached" means.
* `Profile.forbidden` patterns fail the run.  `Pattern.stage` names the stage a forbidden line
  indicts (`No working init found` -> `root-mount`); without it the line blames the stage in
  progress, unless a `Profile.blame` pattern refines it.
* `Profile.blame` patterns name a stage but never fail anything alone: when a forbidden line
  without a stage matches, the checker looks at that line and at most `Profile.blame_lines`
  lines after it (a panic message and its backtrace) for a blame pattern; the first one found
  names the stage (a FreeBSD `panic:` whose backtrace shows `xbd_connect()` -> `xenbus`).
* `Profile.notices` patterns (Linux `WARNING:`, FreeBSD's WITNESS `lock order reversal`) are
  recorded in the verdict (`meta.notices`) and never decide it.
* `StageSpec.disk_evidence` / `vif_evidence` say what proves a device of that kind:
  `"console"` (a per-device console line, `disk_devices` / `vif_devices`) or `"xenstore"`
  (the kernel prints nothing per device: a live run proves it by XenStore frontend and backend
  state 4; an offline check reports it `unverified on the console` and passes it unless
  `strict_devices`).  Either way a live run still requires every device Connected in XenStore.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from xenpvh.errors import BlockedError
from xenpvh.profile.bounds import MAX_CMDLINE, MAX_MEMORY_MB, MAX_VCPUS
from xenpvh.profile.domain import DiskSpec, DomainSpec, VifSpec
from xenpvh.profile.regex import ConsoleRegex

# Guest stages every profile has, in boot order; host-console stages may precede them.
GUEST_STAGES: tuple[str, ...] = ("early-init", "ap-launch", "xenbus", "root-mount", "login")
HOST_STAGES: tuple[str, ...] = ("hypervisor", "dom0")
STAGE_ORDER: tuple[str, ...] = HOST_STAGES + GUEST_STAGES
# What proves one PV device of a stage: its own console line, or XenStore (live runs only).
DEVICE_EVIDENCE: tuple[str, ...] = ("console", "xenstore")
EVIDENCE_CONSOLE, EVIDENCE_XENSTORE = DEVICE_EVIDENCE
# `stage_set`: "os" (default) requires the five guest stages; "custom" is a profile's own
# ordered stage set (an XTF test or a unikernel has no root mount and no login).
STAGE_SETS: tuple[str, ...] = ("os", "custom")
STAGE_SET_OS, STAGE_SET_CUSTOM = STAGE_SETS
# `device_checks`: what the run's XenStore device check demands (default: all of them).
DEVICE_CHECKS: tuple[str, ...] = ("vbd", "vif", "console-tty")
BLAME_LINES_MAX = 200  # lines after a forbidden line searched for blame (bounded work/memory)


@dataclass(frozen=True)
class Pattern:
    """One compiled console pattern.

    `literals` is a prefilter derived from the regex: every match contains at least one of
    these substrings, so the checker can skip text lacking all of them with `str.find`
    (C speed).  Empty means "no usable literal": the regex is tried on every line.
    """

    name: str
    regex: ConsoleRegex  # RE2: linear time on hostile console lines (profile.regex)
    literals: tuple[str, ...] = ()
    # The stage this pattern indicts (forbidden and blame patterns; None: the one in progress).
    stage: str | None = None

    @property
    def source(self) -> str:
        return self.regex.pattern


@dataclass(frozen=True)
class StageSpec:
    """What one boot stage must show, and how long it may take.

    A stage completes when every `required` pattern has matched, the AP/CPU-count
    requirements (`ap_ids`, `cpu_count` with `cpu_count_completes`) are met for the run's
    vcpus, and one distinct device per expected disk/vif has been named by `disk_devices` /
    `vif_devices`.  `deadline` counts from the previous stage's completion.

    `disk_evidence` / `vif_evidence` (`"console"` or `"xenstore"`): with `"xenstore"` the
    kernel prints no per-device line for that kind, the `*_devices` list is empty, and the
    devices count as proven once the run reports them Connected in XenStore
    (`StageChecker.prove_devices`); offline they are `unverified on the console`.
    """

    name: str
    deadline: float
    required: tuple[Pattern, ...] = ()
    optional: tuple[Pattern, ...] = ()
    # Regexes with a named group `ids`: every integer in it is an AP (cpu) id seen launched.
    ap_ids: tuple[Pattern, ...] = ()
    # Regexes with a named group `n`: the CPU count the guest reports; != vcpus fails.
    cpu_count: tuple[Pattern, ...] = ()
    # Linux: the reported count is the proof the APs came up (no per-AP line).
    cpu_count_completes: bool = False
    # Regexes with a named group `dev`: one distinct device name per disk / vif.
    disk_devices: tuple[Pattern, ...] = ()
    vif_devices: tuple[Pattern, ...] = ()
    disk_evidence: str = EVIDENCE_CONSOLE
    vif_evidence: str = EVIDENCE_CONSOLE

    def patterns(self) -> tuple[Pattern, ...]:
        return (
            self.required
            + self.optional
            + self.ap_ids
            + self.cpu_count
            + self.disk_devices
            + self.vif_devices
        )


@dataclass(frozen=True)
class Profile:
    """A guest profile: domain defaults plus the stage model its console must satisfy."""

    name: str
    description: str
    path: Path
    defaults: DomainSpec
    stages: tuple[StageSpec, ...]
    forbidden: tuple[Pattern, ...] = ()
    # Lines that name the stage a forbidden line without its own stage belongs to.
    blame: tuple[Pattern, ...] = ()
    blame_lines: int = 0
    # Lines recorded in the verdict (meta.notices) that never decide it.
    notices: tuple[Pattern, ...] = ()
    # Lines that say the guest cannot run its test here (XTF's `Test result: SKIP`): the
    # verdict is blocked, naming the line.
    blocked: tuple[Pattern, ...] = ()
    stage_set: str = STAGE_SET_OS
    device_checks: tuple[str, ...] = DEVICE_CHECKS
    meta: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    def stage(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def point(
        self,
        vcpus: int | None = None,
        memory_mb: int | None = None,
        kernel: str | None = None,
        ramdisk: str | None = None,
        cmdline: str | None = None,
        name: str | None = None,
        disks: tuple[DiskSpec, ...] | list[DiskSpec] | None = None,
        vifs: tuple[VifSpec, ...] | list[VifSpec] | None = None,
    ) -> DomainSpec:
        """One concrete domain of this profile; unset arguments take the profile defaults.

        The kernel may stay empty here (a profile without a default kernel still answers
        "how many disks by default?"); whoever boots the point must supply one.
        """
        d = self.defaults
        spec = dataclasses.replace(
            d,
            name=d.name if name is None else name,
            vcpus=d.vcpus if vcpus is None else vcpus,
            memory_mb=d.memory_mb if memory_mb is None else memory_mb,
            kernel=d.kernel if kernel is None else kernel,
            ramdisk=d.ramdisk if ramdisk is None else ramdisk,
            cmdline=d.cmdline if cmdline is None else cmdline,
            disks=d.disks if disks is None else tuple(disks),
            vifs=d.vifs if vifs is None else tuple(vifs),
            extra=dict(d.extra),
        )
        _validate_point(self.name, spec)
        return spec


def _validate_point(profile: str, spec: DomainSpec) -> None:
    where = f"profile {profile!r}"
    if isinstance(spec.vcpus, bool) or not isinstance(spec.vcpus, int) or spec.vcpus < 1:
        raise BlockedError(f"{where}: vcpus must be an integer >= 1, got {spec.vcpus!r}")
    if spec.vcpus > MAX_VCPUS:
        raise BlockedError(f"{where}: vcpus {spec.vcpus} exceeds {MAX_VCPUS}")
    if isinstance(spec.memory_mb, bool) or not isinstance(spec.memory_mb, int):
        raise BlockedError(f"{where}: memory_mb must be an integer, got {spec.memory_mb!r}")
    if not 32 <= spec.memory_mb <= MAX_MEMORY_MB:
        raise BlockedError(
            f"{where}: memory_mb must be 32-{MAX_MEMORY_MB} MiB, got {spec.memory_mb}"
        )
    if not isinstance(spec.cmdline, str) or len(spec.cmdline) > MAX_CMDLINE:
        raise BlockedError(
            f"{where}: the kernel command line is {len(str(spec.cmdline))} characters; at most "
            f"{MAX_CMDLINE} are accepted"
        )
    if not spec.name:
        raise BlockedError(f"{where}: domain name must not be empty")
    for d in spec.disks:
        if not isinstance(d, DiskSpec):
            raise BlockedError(f"{where}: disks must be DiskSpec, got {d!r}")
        if d.size_mb is not None and d.size_mb < 1:
            raise BlockedError(f"{where}: disk {d.vdev} size_mb must be >= 1")
    vdevs = [d.vdev for d in spec.disks]
    if len(set(vdevs)) != len(vdevs):
        raise BlockedError(f"{where}: duplicate disk vdev in {vdevs}")
    for v in spec.vifs:
        if not isinstance(v, VifSpec):
            raise BlockedError(f"{where}: vifs must be VifSpec, got {v!r}")


__all__ = [
    "BLAME_LINES_MAX",
    "DEVICE_CHECKS",
    "DEVICE_EVIDENCE",
    "EVIDENCE_CONSOLE",
    "EVIDENCE_XENSTORE",
    "GUEST_STAGES",
    "HOST_STAGES",
    "STAGE_ORDER",
    "STAGE_SETS",
    "Pattern",
    "Profile",
    "StageSpec",
]
