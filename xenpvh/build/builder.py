"""Build a tree: spec -> resolve -> (cache hit, or) fetch -> patch -> configure -> build ->
collect -> publish.

`build_tree` drives any recipe (see `recipes.Recipe`); `build_xen` and `build_linux` are the
two the front ends use.  The key is computed from the resolved state before anything is
fetched, so a hit costs one resolve (offline for a pinned Debian version, a git ls-remote for
a git ref, a content hash for a local tree) and a manifest read.

Every build writes one log (fetch, patch, configure and build output, and the error that
stopped it).  A failed build keeps its log under the cache's `logs/`, removes its work tree
and publishes nothing; a successful one moves its log into the entry.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xenpvh.build import source
from xenpvh.build.cache import (
    CACHE_FORMAT,
    ArtifactCache,
    CacheEntry,
    CacheReport,
    cache_key,
    toolchain_version,
)
from xenpvh.build.patching import apply_series
from xenpvh.build.recipes import (
    LinuxRecipe,
    Recipe,
    XenRecipe,
    describe_unapplied,
    merge_kconfig,
    unapplied,
)
from xenpvh.build.runner import BuildLog
from xenpvh.build.tree import TreeSpec, TreeState
from xenpvh.errors import BlockedError, BrokenError, XenpvhError
from xenpvh.util.progress import ProgressSink, task

# Phases timed in the manifest's "elapsed" (bench/build.py reads them).
PHASES = ("resolve", "fetch", "patch", "configure", "build", "collect")
# What the progress display calls a phase.
_LABELS = {"fetch": "download"}
_DETAIL_WIDTH = 90


@dataclass(frozen=True)
class BuildResult:
    """A built (or cached) tree: its artifacts in the cache entry, version, log and how the
    cache served it (`cache.hit`, `cache.describe()`)."""

    recipe: str
    version: str
    artifacts: dict[str, Path]
    cache: CacheReport
    log: Path
    state: TreeState
    applied_commits: tuple[str, ...] = ()
    manifest: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def image(self) -> Path:
        """The bootable artifact (Xen's multiboot image, Linux's bzImage)."""
        return self.artifacts["image"]

    @property
    def key(self) -> str:
        return self.cache.key


@dataclass(frozen=True)
class XenBuild(BuildResult):
    @property
    def xen_gz(self) -> Path:
        """xen-<version>-<key12>.gz: what a lab box installs to /boot (provisioning)."""
        return self.artifacts["xen_gz"]


# --------------------------------------------------------------------------- progress


class _Steps:
    """One progress task per phase (`<recipe>: <phase>`), its latest output line as the
    task's detail; each phase's elapsed time is kept for the manifest."""

    def __init__(self, progress: ProgressSink | None, label: str) -> None:
        self.progress = progress
        self.label = label
        self.elapsed: dict[str, float] = {}

    def served(self, key: str) -> None:
        """A finished task saying the cache served the build."""
        with task(self.progress, f"{self.label}: cache") as advance:
            advance(label=f"{self.label}: cache hit {key[:12]}")

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Callable[[str], None]]:
        start = time.monotonic()
        try:
            with task(self.progress, f"{self.label}: {_LABELS.get(name, name)}") as advance:

                def on_line(line: str) -> None:
                    advance(detail=line.strip()[:_DETAIL_WIDTH])

                yield on_line
        finally:
            self.elapsed[name] = time.monotonic() - start


# --------------------------------------------------------------------------- the driver


def build_tree(
    spec: TreeSpec,
    recipe: Recipe,
    *,
    cache: ArtifactCache | None = None,
    rebuild: bool = False,
    progress: ProgressSink | None = None,
    result_type: type[BuildResult] = BuildResult,
) -> BuildResult:
    """Build `spec` with `recipe`, or serve it from `cache` (`rebuild` forces a build).

    Raises BlockedError (PatchFailed, BuildFailed, a dropped config option, a missing tool)
    when our input is wrong, BrokenError (BuildKilled, a failed download) when the
    infrastructure failed.  The log's path is attached to errors raised while building.
    """
    start = time.monotonic()
    cache = cache if cache is not None else ArtifactCache()
    steps = _Steps(progress, recipe.name)
    with steps.step("resolve"):
        state = source.resolve(spec)
    toolchain = toolchain_version()
    key = cache_key(recipe.name, recipe.version, state, toolchain, recipe.options())
    if not rebuild and (entry := cache.lookup(key)) is not None:
        return _served(entry, state, start, steps, result_type)
    _check_tools(recipe)
    with cache.lock(key):
        # Another process may have built it while we waited for the lock.
        if not rebuild and (entry := cache.lookup(key)) is not None:
            return _served(entry, state, start, steps, result_type)
        entry = _build(spec, recipe, state, key, toolchain, cache, steps)
    report = CacheReport(
        key,
        False,
        entry.path,
        recipe.name,
        entry.version,
        time.monotonic() - start,
        forced=rebuild,
        built_at=entry.manifest.get("built_at"),
    )
    return _result(entry, state, report, result_type)


def _served(
    entry: CacheEntry,
    state: TreeState,
    start: float,
    steps: _Steps,
    result_type: type[BuildResult],
) -> BuildResult:
    report = CacheReport(
        entry.key,
        True,
        entry.path,
        str(entry.manifest.get("recipe", "")),
        entry.version,
        time.monotonic() - start,
        built_at=entry.manifest.get("built_at"),
    )
    steps.served(entry.key)
    return _result(entry, state, report, result_type)


def _result(
    entry: CacheEntry, state: TreeState, report: CacheReport, result_type: type[BuildResult]
) -> BuildResult:
    return result_type(
        recipe=str(entry.manifest.get("recipe", "")),
        version=entry.version,
        artifacts=entry.artifacts,
        cache=report,
        log=entry.log,
        state=state,
        applied_commits=tuple(entry.manifest.get("applied_commits", ())),
        manifest=entry.manifest,
    )


def _check_tools(recipe: Recipe) -> None:
    missing = [tool for tool in recipe.required_tools if shutil.which(tool) is None]
    if missing:
        raise BlockedError(
            f"building {recipe.name} needs {', '.join(missing)} on this machine (not in PATH)"
        )


def _build(
    spec: TreeSpec,
    recipe: Recipe,
    state: TreeState,
    key: str,
    toolchain: str,
    cache: ArtifactCache,
    steps: _Steps,
) -> CacheEntry:
    log_path = cache.new_log(recipe.name, key)
    work = cache.new_workdir(key)
    tree = work / "src"
    try:
        with BuildLog(log_path) as log:
            try:
                log.phase(f"build {recipe.name}: {spec.describe()}")
                log.note(f"state: {state.describe()}\nkey: {key}\ntoolchain: {toolchain}")
                log.note(f"options: {recipe.options()}")
                with steps.step("fetch"):
                    log.phase("fetch")
                    base = _fetch(spec, state, tree, log)
                with steps.step("patch"):
                    log.phase("patch")
                    commits = _patch(tree, spec, log)
                with steps.step("configure") as on_line:
                    log.phase("configure")
                    _configure(tree, recipe, state, log, on_line)
                with steps.step("build") as on_line:
                    log.phase("build")
                    for argv in recipe.build_commands():
                        log.run(argv, cwd=tree, what=f"{recipe.name} build", on_line=on_line)
                with steps.step("collect") as on_line:
                    log.phase("collect")
                    version = _version(tree, recipe, log, on_line)
                    files = {
                        name: (tree / rel, recipe.stored_name(name, version, key))
                        for name, rel in recipe.artifacts().items()
                    }
                    for name, (path, _) in files.items():
                        if not path.exists():
                            raise BrokenError(
                                f"{recipe.name} build succeeded but left no {name} at "
                                f"{path.relative_to(tree)}"
                            )
                    log.note(f"version {version}; publishing {key}")
            except XenpvhError as exc:
                # The log's path goes with the error (the CLI prints notes), once.
                if str(log_path) not in str(exc):
                    exc.add_note(f"log: {log_path}")
                raise
        # Publishing (copy, hash, rename) happens after the log is closed: it moves into the
        # entry.
        manifest = {
            "format": CACHE_FORMAT,
            "recipe": recipe.name,
            "recipe_version": recipe.version,
            "options": recipe.options(),
            "version": version,
            "spec": spec.describe(),
            "tree": state.to_dict(),
            "toolchain": toolchain,
            "base_commit": base,
            "applied_commits": commits,
            "elapsed": {k: round(v, 3) for k, v in steps.elapsed.items()},
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "built_on": socket.gethostname(),
        }
        return cache.publish(key, files, manifest, log=log_path)
    finally:
        # Built or not, the work tree goes (a failed build's evidence is its log).
        shutil.rmtree(work, ignore_errors=True)


def _fetch(spec: TreeSpec, state: TreeState, tree: Path, log: BuildLog) -> str:
    """Materialise the resolved state as a git work tree; return its base commit."""
    buffer = io.StringIO()
    try:
        base = source.fetch(spec, state, tree, log=buffer)
    finally:
        log.note(buffer.getvalue())
    log.note(f"base commit {base}")
    return base


def _patch(tree: Path, spec: TreeSpec, log: BuildLog) -> list[str]:
    """Apply the series as commits on top of the base commit."""
    buffer = io.StringIO()
    try:
        commits = apply_series(tree, spec.patches, log=buffer)
    finally:
        log.note(buffer.getvalue())
    for sha in commits:
        log.note(f"applied {sha}")
    return commits


def _fragment_text(recipe: Recipe, config: str | None) -> str | None:
    """The recipe's own fragment (Linux: PVH options) with the user's merged over it."""
    base = getattr(recipe, "base_fragment", None)
    if base and config:
        return merge_kconfig(base, config)
    return base or config or None


def _configure(
    tree: Path,
    recipe: Recipe,
    state: TreeState,
    log: BuildLog,
    on_line: Callable[[str], None],
) -> None:
    fragment = _fragment_text(recipe, state.config)
    commands = recipe.configure_commands(fragment=fragment is not None)
    if not commands:
        if fragment is not None:
            raise BlockedError(f"{recipe.name} has no configure step for a config fragment")
        return
    what = f"{recipe.name} configure"
    log.run(commands[0], cwd=tree, what=what, on_line=on_line)
    config = tree / recipe.config_path
    if fragment is not None:
        if not config.is_file():
            raise BrokenError(f"{commands[0]} did not write {recipe.config_path}")
        config.write_text(merge_kconfig(config.read_text(), fragment))
        log.note(f"merged the config fragment into {recipe.config_path}:\n{fragment}")
    for argv in commands[1:]:
        log.run(argv, cwd=tree, what=what, on_line=on_line)
    if fragment is not None:
        missing = unapplied(fragment, config.read_text())
        if missing:
            raise BlockedError(
                f"{recipe.name} config: the fragment's {describe_unapplied(missing)} did not "
                "survive olddefconfig (an unknown option, or its dependencies are off)"
            )


def _version(tree: Path, recipe: Recipe, log: BuildLog, on_line: Callable[[str], None]) -> str:
    lines = log.run(recipe.version_command(), cwd=tree, what=f"{recipe.name} version")
    version = next((ln.strip() for ln in reversed(lines) if ln.strip()), "")
    if not version or any(c.isspace() or c == "/" for c in version):
        raise BrokenError(f"{recipe.name}: cannot tell the built version (got {version!r})")
    on_line(version)
    return version


# --------------------------------------------------------------------------- front doors


def build_xen(
    spec: TreeSpec,
    *,
    jobs: int = 2,
    with_tools: bool = False,
    cache: ArtifactCache | None = None,
    rebuild: bool = False,
    progress: ProgressSink | None = None,
) -> XenBuild:
    """The Xen hypervisor of `spec` (and its tools when asked)."""
    built = build_tree(
        spec,
        XenRecipe(jobs=jobs, with_tools=with_tools),
        cache=cache,
        rebuild=rebuild,
        progress=progress,
        result_type=XenBuild,
    )
    assert isinstance(built, XenBuild)
    return built


def build_linux(
    spec: TreeSpec,
    *,
    jobs: int = 2,
    cache: ArtifactCache | None = None,
    rebuild: bool = False,
    progress: ProgressSink | None = None,
) -> BuildResult:
    """A Linux bzImage of `spec` that boots as a PVH guest."""
    return build_tree(spec, LinuxRecipe(jobs=jobs), cache=cache, rebuild=rebuild, progress=progress)


__all__ = ["BuildResult", "XenBuild", "build_linux", "build_tree", "build_xen"]
