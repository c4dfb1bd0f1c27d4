"""The QEMU that runs the nested Xen host: built from Debian's `qemu` source package with
xenpvh's patch series (`guestcfg/patches/qemu/`), or Debian's own binary on request.

Why a patched QEMU: QEMU's TCG nested SVM re-delivers an interrupt that VMRUN injected
(see the patch's message); Linux PVH guests under Xen under QEMU then die at random in
their interrupt entry code.  No QEMU release and no Debian package has the fix.

`QemuChoice` is what a front end asks for (`patched`, `system`, or a path to a binary);
`resolve_qemu` turns it into a `QemuBinary` (building, or serving from the build cache),
whose `describe()` goes into `verdict.json` so a run says which QEMU it ran on.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xenpvh.build.builder import build_tree
from xenpvh.build.cache import ArtifactCache
from xenpvh.build.recipes import QemuRecipe
from xenpvh.build.tree import TreeSpec
from xenpvh.errors import BlockedError, BrokenError
from xenpvh.profile.loader import guestcfg_dir
from xenpvh.util.fs import sha256_file
from xenpvh.util.progress import ProgressSink

log = logging.getLogger(__name__)

SYSTEM_QEMU = "qemu-system-x86_64"
# The tree spec of the default (patched) QEMU; relative to the repository's guestcfg/.
DEFAULT_SPEC = Path("patches") / "qemu" / "nested.toml"
CHOICES = ("patched", "system")


def default_spec_path() -> Path:
    return guestcfg_dir() / DEFAULT_SPEC


@dataclass(frozen=True)
class QemuBinary:
    """A `qemu-system-x86_64` to run: where it is and what it is."""

    path: Path
    origin: str  # "patched" (built by xenpvh), "system" (Debian's), or "path" (the user's)
    version: str
    build_key: str | None = None
    patches: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        """The record of `verdict.json`'s `host.qemu`."""
        record: dict[str, Any] = {
            "origin": self.origin,
            "path": str(self.path),
            "version": self.version,
        }
        if self.build_key is not None:
            record["build_key"] = self.build_key
            record["patches"] = list(self.patches)
        return record


def check_choice(choice: str) -> str:
    """`patched`, `system` or a path to an executable; anything else is blocked at once."""
    if choice in CHOICES:
        return choice
    path = Path(choice)
    if "/" not in choice or not path.is_file() or not os.access(path, os.X_OK):
        raise BlockedError(
            f"--qemu {choice!r}: expected 'patched', 'system' or the path of an executable "
            "qemu-system-x86_64"
        )
    return str(path.absolute())


def binary_version(path: Path | str) -> str:
    """First line of `qemu --version`, e.g. `QEMU emulator version 7.2.22 (xenpvh)`."""
    try:
        proc = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokenError(f"{path} --version failed: {exc}") from exc
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise BrokenError(f"{path} --version failed ({proc.returncode}): {proc.stderr[-300:]}")
    return lines[0].strip()


def build_qemu(
    spec: TreeSpec | None = None,
    *,
    jobs: int = 2,
    cache: ArtifactCache | None = None,
    rebuild: bool = False,
    progress: ProgressSink | None = None,
) -> QemuBinary:
    """Build (or serve from the cache) `qemu-system-x86_64` of `spec`, the patched default
    when None."""
    spec = spec if spec is not None else TreeSpec.from_toml(default_spec_path())
    built = build_tree(spec, QemuRecipe(jobs=jobs), cache=cache, rebuild=rebuild, progress=progress)
    path = built.image
    return QemuBinary(
        path=path,
        origin="patched",
        version=binary_version(path),
        build_key=built.key,
        patches=tuple(p.name for p in spec.patches),
    )


def resolve_qemu(
    choice: str = "patched",
    *,
    cache: ArtifactCache | None = None,
    progress: ProgressSink | None = None,
) -> QemuBinary:
    """The binary `choice` names, built when it is the patched default and not cached."""
    choice = check_choice(choice)
    if choice == "patched":
        return build_qemu(cache=cache, progress=progress)
    if choice == "system":
        found = shutil.which(SYSTEM_QEMU)
        if found is None:
            raise BlockedError(
                f"--qemu system: {SYSTEM_QEMU} is not installed (apt-get install qemu-system-x86)"
            )
        return QemuBinary(Path(found), "system", binary_version(found))
    return QemuBinary(Path(choice), "path", binary_version(choice))


def fingerprint(binary: QemuBinary) -> str:
    """What distinguishes one binary from another for a saved machine state."""
    return binary.build_key or sha256_file(binary.path)


__all__ = [
    "CHOICES",
    "QemuBinary",
    "binary_version",
    "build_qemu",
    "check_choice",
    "default_spec_path",
    "fingerprint",
    "resolve_qemu",
]
