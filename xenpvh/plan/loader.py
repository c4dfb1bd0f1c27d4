"""Load a plan from TOML and expand it into points; every error names the file and key.

    name = "nightly"
    [defaults]                      # attempts, timeout (per point; a matrix may override)
    [[xen]]      name, tree?, patches?, config?     # no tree: the host's own Xen
    [[kernel]]   name, kernel?, ramdisk?, tree?, cmdline_append?
    [[matrix]]   profile, toolstack, vcpus, memory_mb, disks, vifs   # scalar or list each
                 cmdline_append?, attempts?, timeout?

Points = every matrix's cross product x every Xen build x every kernel.  Relative paths
(patches, config, kernel files, directory trees) are relative to the plan file.  A plan is
`blocked` before anything is built or booted when the file alone says it is wrong.
"""

from __future__ import annotations

import itertools
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from xenpvh.errors import BlockedError
from xenpvh.plan.model import GuestKernel, Plan, PlanPoint, XenBuild
from xenpvh.profile import load_profile
from xenpvh.run.request import MAX_ATTEMPTS, MAX_MEMORY_MB, MAX_TIMEOUT, MAX_VCPUS, TOOLSTACKS

ENV_DIR = "XENPVH_PLANS"
MAX_DEVICES = 16  # per kind: far above any test guest; a typo (100) is named, not booted
MAX_POINTS = 10_000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
_TOP = {"name", "description", "defaults", "xen", "kernel", "matrix"}
_DEFAULTS = {"attempts", "timeout"}
_XEN = {"name", "tree", "patches", "config"}
_KERNEL = {"name", "kernel", "ramdisk", "tree", "cmdline_append", "cmdline_repo", "cmdline_file"}
_MATRIX = {
    "profile",
    "toolstack",
    "vcpus",
    "memory_mb",
    "disks",
    "vifs",
    "cmdline_append",
    "attempts",
    "timeout",
}


class PlanError(BlockedError):
    """A plan file is wrong; the message names the file and the key."""


def plans_dir() -> Path:
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "guestcfg" / "plans"


def plan_path(name_or_path: str | os.PathLike[str]) -> Path:
    text = os.fspath(name_or_path)
    if text.endswith(".toml") or "/" in text or os.sep in text:
        path = Path(text)
    else:
        path = plans_dir() / f"{text}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in plans_dir().glob("*.toml"))) or "none"
        raise PlanError(f"plan {text!r} not found (looked for {path}; known: {known})")
    return path


def load_plan(name_or_path: str | os.PathLike[str]) -> Plan:
    """Load and expand a plan by name (guestcfg/plans/NAME.toml) or path."""
    path = plan_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise PlanError(f"{path}: invalid TOML: {e}") from e
    return parse_plan(data, path)


class _Where:
    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, key: str, message: str) -> PlanError:
        return PlanError(f"{self.path}: {key}: {message}")

    def keys(self, table: Any, allowed: set[str], key: str) -> dict[str, Any]:
        if not isinstance(table, dict):
            raise self.error(key, f"expected a table, got {type(table).__name__}")
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise self.error(
                f"{key}.{unknown[0]}" if key else unknown[0],
                f"unknown key (expected one of {', '.join(sorted(allowed))})",
            )
        return table

    def name(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not _NAME.match(value):
            raise self.error(key, f"a name of letters, digits, - and _ (<= 40), not {value!r}")
        return value

    def text(self, value: Any, key: str, *, one_line: bool = False) -> str:
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {type(value).__name__}")
        if one_line and any(c in value for c in "\n\r\0"):
            raise self.error(key, "must be one line")
        return value

    def integer(self, value: Any, key: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {value!r}")
        if not lo <= value <= hi:
            raise self.error(key, f"must be {lo}-{hi}, not {value}")
        return value

    def seconds(self, value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"expected seconds, got {value!r}")
        if not 0 < value <= MAX_TIMEOUT:  # also refuses inf and nan
            raise self.error(key, f"must be > 0 and <= {MAX_TIMEOUT:g}, not {value}")
        return float(value)

    def listed(self, value: Any, key: str) -> list[Any]:
        values = value if isinstance(value, list) else [value]
        if not values:
            raise self.error(key, "an empty list makes no points")
        if len(set(map(repr, values))) != len(values):
            raise self.error(key, f"a value is listed twice: {values!r}")
        return values

    def local_path(self, value: Any, key: str) -> str:
        text = self.text(value, key, one_line=True)
        p = Path(text)
        if not p.is_absolute():
            p = self.path.parent / p
        if not p.exists():
            raise self.error(key, f"{text} does not exist (relative paths: to the plan file)")
        return str(p)

    def tree(self, value: Any, key: str) -> str:
        """A tree spec: debian:PKG, git:URL, URL#REF, or a directory / TOML spec file."""
        text = self.text(value, key, one_line=True)
        if text.startswith(("debian:", "git:", "http://", "https://", "ssh://", "file://")):
            return text
        return self.local_path(text, key)


def parse_plan(data: dict[str, Any], path: Path) -> Plan:
    w = _Where(path)
    w.keys(data, _TOP, "")
    name = w.name(data.get("name", path.stem), "name")
    description = w.text(data.get("description", ""), "description")
    defaults = w.keys(data.get("defaults", {}), _DEFAULTS, "defaults")
    attempts = w.integer(defaults.get("attempts", 3), "defaults.attempts", 1, MAX_ATTEMPTS)
    timeout = w.seconds(defaults.get("timeout", 900.0), "defaults.timeout")

    xens = _tables(w, data.get("xen", [{"name": "host"}]), "xen")
    xen_builds = tuple(_xen(w, t, f"xen[{i}]") for i, t in enumerate(xens))
    kernels_raw = _tables(w, data.get("kernel", [{"name": "profile"}]), "kernel")
    kernels = tuple(_kernel(w, t, f"kernel[{i}]") for i, t in enumerate(kernels_raw))
    for what, items in (("xen", xen_builds), ("kernel", kernels)):
        names = [x.name for x in items]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise w.error(f"{what}.name", f"{dup!r} is named twice")

    matrices = _tables(w, data.get("matrix"), "matrix")
    points: list[PlanPoint] = []
    for i, m in enumerate(matrices):
        points.extend(_expand(w, m, f"matrix[{i}]", xen_builds, kernels, attempts, timeout))
    seen: dict[str, str] = {}
    for p in points:
        if p.id in seen:
            raise w.error("matrix", f"point {p.id} is listed twice ({seen[p.id]})")
        seen[p.id] = p.id
    if len(points) > MAX_POINTS:
        raise w.error("matrix", f"{len(points)} points; at most {MAX_POINTS} per plan")
    return Plan(name, str(path), description, xen_builds, kernels, tuple(points))


def _tables(w: _Where, value: Any, key: str) -> list[dict[str, Any]]:
    if value is None:
        raise w.error(key, f"missing: a plan needs at least one [[{key}]] table")
    if not isinstance(value, list) or not value:
        raise w.error(key, f"expected one or more [[{key}]] tables")
    for i, t in enumerate(value):
        if not isinstance(t, dict):
            raise w.error(f"{key}[{i}]", "expected a table")
    return value


def _xen(w: _Where, t: dict[str, Any], key: str) -> XenBuild:
    w.keys(t, _XEN, key)
    if "name" not in t:
        raise w.error(f"{key}.name", "missing")
    name = w.name(t["name"], f"{key}.name")
    tree = w.tree(t["tree"], f"{key}.tree") if "tree" in t else None
    patches_raw = t.get("patches", [])
    if not isinstance(patches_raw, list):
        patches_raw = [patches_raw]
    patches = tuple(w.local_path(p, f"{key}.patches[{i}]") for i, p in enumerate(patches_raw))
    config = w.local_path(t["config"], f"{key}.config") if "config" in t else None
    if tree is None and (patches or config):
        raise w.error(f"{key}.tree", "patches or a config need a tree to apply to")
    return XenBuild(name, tree, patches, config)


def _kernel(w: _Where, t: dict[str, Any], key: str) -> GuestKernel:
    w.keys(t, _KERNEL, key)
    if "name" not in t:
        raise w.error(f"{key}.name", "missing")
    name = w.name(t["name"], f"{key}.name")
    kernel = w.local_path(t["kernel"], f"{key}.kernel") if "kernel" in t else None
    ramdisk = w.local_path(t["ramdisk"], f"{key}.ramdisk") if "ramdisk" in t else None
    tree = w.tree(t["tree"], f"{key}.tree") if "tree" in t else None
    if tree and kernel:
        raise w.error(f"{key}.tree", "give either a kernel or a kernel tree, not both")
    append = w.text(t.get("cmdline_append", ""), f"{key}.cmdline_append", one_line=True)
    repo = w.local_path(t["cmdline_repo"], f"{key}.cmdline_repo") if "cmdline_repo" in t else None
    cmdline_file = w.text(t.get("cmdline_file", "cmdline"), f"{key}.cmdline_file", one_line=True)
    rel = Path(cmdline_file)
    if rel.is_absolute() or ".." in rel.parts or not cmdline_file:
        raise w.error(f"{key}.cmdline_file", "a path inside cmdline_repo")
    if repo is not None and tree is not None:
        raise w.error(f"{key}.cmdline_repo", "a kernel tree or a cmdline repository, not both")
    return GuestKernel(name, kernel, ramdisk, tree, append, repo, cmdline_file)


def _expand(
    w: _Where,
    m: dict[str, Any],
    key: str,
    xens: tuple[XenBuild, ...],
    kernels: tuple[GuestKernel, ...],
    attempts: int,
    timeout: float,
) -> list[PlanPoint]:
    w.keys(m, _MATRIX, key)
    if "profile" not in m:
        raise w.error(f"{key}.profile", "missing")
    profile_name = w.text(m["profile"], f"{key}.profile", one_line=True)
    profile_ref = profile_name
    if profile_name.endswith(".toml") and not Path(profile_name).is_absolute():
        profile_ref = str(path if (path := w.path.parent / profile_name).exists() else profile_name)
    try:
        profile = load_profile(profile_ref)
    except BlockedError as e:
        raise w.error(f"{key}.profile", str(e)) from e
    base = profile.point()
    toolstacks = [
        w.text(t, f"{key}.toolstack", one_line=True)
        for t in w.listed(m.get("toolstack", "xl"), f"{key}.toolstack")
    ]
    for t in toolstacks:
        if t not in TOOLSTACKS:
            raise w.error(f"{key}.toolstack", f"{t!r}: expected one of {', '.join(TOOLSTACKS)}")
    axes = {
        "vcpus": (m.get("vcpus", base.vcpus), 1, MAX_VCPUS),
        "memory_mb": (m.get("memory_mb", base.memory_mb), 16, MAX_MEMORY_MB),
        "disks": (m.get("disks", len(base.disks)), 0, MAX_DEVICES),
        "vifs": (m.get("vifs", len(base.vifs)), 0, MAX_DEVICES),
    }
    values: dict[str, list[int]] = {}
    for axis, (raw, lo, hi) in axes.items():
        values[axis] = [
            w.integer(v, f"{key}.{axis}", lo, hi) for v in w.listed(raw, f"{key}.{axis}")
        ]
    for axis, template in (("disks", base.disks), ("vifs", base.vifs)):
        if not template and any(values[axis]):
            raise w.error(f"{key}.{axis}", f"profile {profile.name!r} has no {axis[:-1]} to repeat")
    append = w.text(m.get("cmdline_append", ""), f"{key}.cmdline_append", one_line=True)
    point_attempts = w.integer(m.get("attempts", attempts), f"{key}.attempts", 1, MAX_ATTEMPTS)
    point_timeout = w.seconds(m.get("timeout", timeout), f"{key}.timeout")
    return [
        PlanPoint(
            profile=profile_ref,
            toolstack=ts,
            vcpus=vcpus,
            memory_mb=mem,
            disks=disks,
            vifs=vifs,
            xen=xen,
            kernel=kernel,
            attempts=point_attempts,
            timeout=point_timeout,
            cmdline_append=append,
        )
        for xen, kernel, ts, vcpus, mem, disks, vifs in itertools.product(
            xens,
            kernels,
            toolstacks,
            values["vcpus"],
            values["memory_mb"],
            values["disks"],
            values["vifs"],
        )
    ]


__all__ = ["PlanError", "load_plan", "parse_plan", "plan_path", "plans_dir"]
