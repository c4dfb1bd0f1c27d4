"""The PREPARE state of a boot run on the host: render the domain's config for the Xen the
host runs, then (only once the input is known good for this host) make the run's directory,
write its lease, sweep dead runs, check the host's memory, upload kernel, ramdisk and hotplug
scripts, make or copy the disks, and put the config beside them.

What it made is recorded as it goes (`run_dir_made`, `swept`, `uploads`, `disk_copies`), so
the destroy and the verdict's meta know it even when a later step failed."""

from __future__ import annotations

import dataclasses

from xenpvh.errors import BlockedError
from xenpvh.host.base import Host
from xenpvh.host.hotplug import HotplugScript, hotplug_scripts
from xenpvh.profile.domain import DomainSpec
from xenpvh.run import guest_disk, lease, remote
from xenpvh.run.guest_inputs import ResolvedInputs
from xenpvh.run.lease import DOMAIN_PREFIX
from xenpvh.run.options import RunPlace
from xenpvh.run.preflight import check_host_memory
from xenpvh.run.remote import remote_paths
from xenpvh.toolstack.base import Prepared, Toolstack
from xenpvh.toolstack.xl import Xl
from xenpvh.util.fs import atomic_write_text, sha256_file


class HostPreparation:
    """Prepares one run's domain on `host`; `prepare()` fills the attributes in order."""

    def __init__(self, host: Host, toolstack: Toolstack, place: RunPlace, timeout: float) -> None:
        self.host = host
        self.toolstack = toolstack
        self.place = place
        self.timeout = timeout  # the run's: its lease lasts that long
        self.spec: DomainSpec | None = None
        self.prepared: Prepared | None = None
        self.run_dir_made = False
        self.swept: list[str] = []
        # Bytes sent per upload (0: the host had the content-addressed file already).
        self.uploads: dict[str, int] = {}
        # vdev -> seconds the per-run copy of a built disk image took (and its first send).
        self.disk_copies: dict[str, dict[str, float]] = {}
        self._scripts: dict[str, tuple[HotplugScript, str]] = {}

    @property
    def cfg_remote(self) -> str:
        name = self.prepared.filename if self.prepared else "domain.cfg"
        return f"{self.place.run_dir}/{name}"

    def prepare(self, point: DomainSpec, inputs: ResolvedInputs) -> None:
        place = self.place
        kernels_dir = f"{place.remote_root}/kernels"
        spec = remote_paths(
            dataclasses.replace(point, name=place.domain_name),
            run_id=place.run_id,
            kernel=inputs.kernel,
            ramdisk=inputs.ramdisk,
            kernel_id=lambda p: sha256_file(p)[:16],
            remote_root=place.remote_root,
        )
        scripts = self._hotplug_scripts()
        disks, vifs = spec.disks, spec.vifs
        if "vbd" in scripts:
            disks = tuple(dataclasses.replace(d, script=scripts["vbd"]) for d in disks)
        if "vif" in scripts:
            vifs = tuple(dataclasses.replace(v, script=scripts["vif"]) for v in vifs)
        self.spec = dataclasses.replace(spec, disks=disks, vifs=vifs)
        uploads = [(inputs.kernel, self.spec.kernel)]
        if inputs.ramdisk is not None and self.spec.ramdisk is not None:
            uploads.append((inputs.ramdisk, self.spec.ramdisk))
        disks = self.spec.disks
        # Render for the Xen this host runs (RenderError: blocked, still nothing made).
        self.prepared = self.toolstack.prepare(self.spec)
        atomic_write_text(place.artifacts / self.prepared.filename, self.prepared.config)
        # Side effects on the host, once it is known to have every vif's bridge (a bridge
        # the host lacks is our input being wrong for this host: blocked, nothing made).
        bridges = sorted({v.bridge for v in self.spec.vifs})
        lacking = remote.missing_interfaces(self.host, bridges)
        if lacking:
            raise BlockedError(
                f"vif bridge(s) {', '.join(lacking)} do not exist on host {self.host.name} "
                f"(no such network interface; vifs: {', '.join(v.bridge for v in self.spec.vifs)})"
            )
        dirs = [kernels_dir, place.run_dir, "/var/lock"]
        if self._scripts:
            dirs.append(f"{place.remote_root}/scripts")
        self.host.run(["mkdir", "-p", "--", *dirs], check=True)
        self.run_dir_made = True
        lease.write_lease(
            self.host,
            place.run_dir,
            domain=place.domain_name,
            run_id=place.run_id,
            timeout=self.timeout,
        )
        self._sweep()
        # After the sweep (dead runs' domains gave their memory back), before any upload.
        info = self.prepared.host_info if not self.swept else Xl(self.host).info_text()
        check_host_memory(info, self.spec.memory_mb, host=self.host.name)
        self.uploads = remote.upload(self.host, uploads, list(self._scripts.values()))
        for orig, d in zip(point.disks, disks, strict=True):
            if d.vdev in inputs.images:
                base, took = guest_disk.ensure_on_host(
                    self.host, inputs.images[d.vdev], place.remote_root
                )
                copied = guest_disk.copy_for_run(self.host, base, d.target)
                self.disk_copies[d.vdev] = {**took, "copy_s": round(copied, 3)}
                continue
            if orig.target:
                if not self.host.run(["test", "-e", d.target]).ok:
                    raise BlockedError(f"disk {d.vdev}: target {d.target} does not exist")
                continue
            remote.make_scratch(self.host, d, orig)
        self.host.put_bytes(self.prepared.config.encode(), self.cfg_remote, mode=0o644)

    def upload_summary(self) -> dict[str, int]:
        """Bytes sent this run: kernel, ramdisk, hotplug scripts."""
        kinds = {}
        if self.spec is not None:
            kinds = {self.spec.kernel: "kernel", self.spec.ramdisk: "ramdisk"}
        out: dict[str, int] = {}
        for path, n in self.uploads.items():
            kind = kinds.get(path, "scripts")
            out[kind] = out.get(kind, 0) + n
        return out

    def _hotplug_scripts(self) -> dict[str, str]:
        """Device kind -> script path on the host, for the scripts the host declares
        (uploaded content-addressed in `prepare`; xl only: libvirt keeps its own)."""
        if getattr(self.toolstack, "name", "") != "xl":
            return {}
        root = self.place.remote_root
        self._scripts = {s.kind: (s, s.remote_path(root)) for s in hotplug_scripts(self.host)}
        return {kind: path for kind, (_, path) in self._scripts.items()}

    def _sweep(self) -> None:
        """Destroy `xenpvh-` domains of runs whose lease expired (or that have none), and
        remove the expired runs' directories."""
        live, stale_dirs = lease.live_and_stale(
            self.host,
            self.place.remote_root,
            run_id=self.place.run_id,
            domain=self.place.domain_name,
        )
        self.swept = self.toolstack.sweep(DOMAIN_PREFIX, keep=live)
        if stale_dirs:
            self.host.run(["rm", "-rf", "--", *stale_dirs], check=True)


__all__ = ["HostPreparation"]
