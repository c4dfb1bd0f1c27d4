"""What one pass of a plan run hands its pytest session (a JSON file): the plan, which of
its points, the pool, the history and where results go.  Written by the runner, read by the
plan's pytest plugin in the controller and in every worker."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from xenpvh.plan.pool import PoolHost
from xenpvh.util.fs import atomic_write_text


@dataclass(frozen=True)
class PassSpec:
    plan: str  # the plan file
    plan_run: str
    baseline: str
    db: str | None
    out: str  # the plan run's directory
    pool: tuple[PoolHost, ...]
    points: tuple[str, ...]  # point ids of this pass
    xen_images: dict[str, str] = field(default_factory=dict)  # xen build name -> image
    kernels: dict[str, str] = field(default_factory=dict)  # kernel name -> built kernel
    facts: dict[str, dict[str, str]] = field(default_factory=dict)  # build name -> ids
    cmdlines: dict[str, str] = field(default_factory=dict)  # kernel name -> its repo's line
    wait_host: float = 0.0  # seconds to wait for a leased host

    def save(self, path: Path) -> Path:
        doc = asdict(self)
        doc["pool"] = [h.as_dict() for h in self.pool]
        return atomic_write_text(path, json.dumps(doc, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> PassSpec:
        doc = json.loads(path.read_text())
        doc["pool"] = tuple(PoolHost(**h) for h in doc["pool"])
        doc["points"] = tuple(doc["points"])
        return cls(**doc)

    @property
    def broken_dir(self) -> Path:
        """One file per host taken out of the pool (name: the host's; text: why)."""
        return Path(self.out) / "broken-hosts"


def broken_hosts(out: Path) -> dict[str, str]:
    d = out / "broken-hosts"
    if not d.is_dir():
        return {}
    return {p.name: p.read_text().strip() for p in sorted(d.iterdir()) if p.is_file()}


def mark_broken(spec: PassSpec, host: str, why: str) -> None:
    spec.broken_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(spec.broken_dir / _safe(host), why[:2000] + "\n")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in name)[:120]


__all__ = ["PassSpec", "broken_hosts", "mark_broken"]
