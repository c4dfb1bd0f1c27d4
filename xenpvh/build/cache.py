"""The content-addressed artifact cache: one mechanism for every built thing (Xen, QEMU,
FreeBSD and XTF trees, the guest kits, the Debian guest, the dom0 image).

A key is the sha256 of everything that shapes the output.  For a source tree (`cache_key`):
the resolved tree state (source identity, each patch's content, the config fragment's text),
the recipe's name and version, the toolchain's version and the recipe's options.  Nothing
else -- not paths, not -j -- so the same inputs on the same toolchain always hit.  The kits
and images key their own recipes and keep their own roots below
`${XDG_CACHE_HOME:-~/.cache}/xenpvh`.

`ensure(key, build)` serves a built thing: a hit returns the published entry; a miss takes
the key's lock, runs `build` in a fresh work directory and publishes what it made.  `lookup`,
`lock`, `new_workdir`, `new_log` and `publish` are its parts, for a builder that needs them
one by one.

Layout under the root (`${XDG_CACHE_HOME:-~/.cache}/xenpvh/builds` by default)::

    <key>/              a published entry: the artifacts, manifest.json, build.log
    .staging-<key16>-*  an entry being assembled; renamed to <key> when complete
    work/<key12>-*      a build's work tree, removed when the build ends (either way)
    logs/               logs of failed builds (a successful build's log moves into its entry)
    .locks/<key>.lock   one builder per key at a time (flock)

Publishing is a rename of a complete directory, so a reader sees a whole entry or none, and a
killed build leaves only a staging or work directory that the next build of the same key
removes (holding the key's lock, no one else can be using it).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xenpvh.build.tree import TreeState
from xenpvh.errors import BrokenError
from xenpvh.util.fs import cache_root, flock, sha256_bytes, sha256_file

MANIFEST = "manifest.json"
ENTRY_LOG = "build.log"
# Failed builds' logs kept in logs/ (oldest removed first).
KEEP_FAILED_LOGS = 30
# Bump when the manifest or key layout changes: old entries then simply miss.
CACHE_FORMAT = 1


def state_record(state: TreeState) -> dict[str, Any]:
    return state.to_dict()


def cache_key(
    recipe: str,
    recipe_version: int,
    state: TreeState,
    toolchain: str,
    options: Mapping[str, Any],
) -> str:
    """The sha256 (hex) of every input that shapes a build's output."""
    record = {
        "format": CACHE_FORMAT,
        "recipe": recipe,
        "recipe_version": recipe_version,
        "tree": state_record(state),
        "toolchain": toolchain,
        "options": dict(options),
    }
    blob = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return sha256_bytes(blob.encode())


def first_line(argv: list[str]) -> str | None:
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=30, env={**os.environ, "LC_ALL": "C"}
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = proc.stdout.strip().splitlines()
    return lines[0].strip() if proc.returncode == 0 and lines else None


@functools.cache
def toolchain_version() -> str:
    """The compiler and linker versions, e.g. `gcc (Debian 12.2.0-14) 12.2.0; GNU ld ... 2.40`.

    Part of the key: a compiler upgrade must not serve objects of the old one.  Cached for the
    process, so a cache hit does not pay for two subprocesses each time.
    """
    gcc = first_line(["gcc", "--version"]) or "gcc not installed"
    ld = first_line(["ld", "--version"]) or "ld not installed"
    return f"{gcc}; {ld}"


@dataclass(frozen=True)
class CacheEntry:
    """A published entry: its directory and manifest."""

    key: str
    path: Path
    manifest: dict[str, Any]

    @property
    def artifacts(self) -> dict[str, Path]:
        return {name: self.path / a["file"] for name, a in self.manifest["artifacts"].items()}

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", ""))

    @property
    def log(self) -> Path:
        return self.path / ENTRY_LOG


@dataclass(frozen=True)
class CacheReport:
    """How a build was served: from the cache (`hit`) or built (a miss, or a forced rebuild).
    `seconds` is the wall time of the whole `build_*` call."""

    key: str
    hit: bool
    path: Path
    recipe: str
    version: str
    seconds: float
    forced: bool = False
    built_at: str | None = None

    def describe(self) -> str:
        what = f"{self.recipe} {self.version} (key {self.key[:12]})"
        if self.hit:
            when = f", built {self.built_at}" if self.built_at else ""
            return f"cache hit: {what} in {self.seconds * 1000:.0f} ms from {self.path}{when}"
        how = "rebuilt (--rebuild)" if self.forced else "cache miss: built"
        return f"{how} {what} in {_human(self.seconds)}; stored in {self.path}"


def _human(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} m {seconds % 60:.0f} s"


@dataclass(frozen=True)
class Built:
    """What a build step made in its work directory: `files` (artifact name -> (file or
    directory in the work directory, stored name)), the manifest's own fields (`recipe` names
    the kind of thing, for `newest` and `prune`) and the build's log, moved into the entry."""

    files: Mapping[str, tuple[Path, str]]
    manifest: Mapping[str, Any]
    log: Path | None = None


@dataclass(frozen=True)
class Ensured:
    """An entry `ensure` served: `hit` when it was in the cache, False when just built."""

    entry: CacheEntry
    hit: bool


@dataclass
class ArtifactCache:
    """Build entries under `root` (see the module docstring for the layout)."""

    root: Path = field(default_factory=lambda: cache_root("builds"))

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    @property
    def work_root(self) -> Path:
        return self.root / "work"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def locks(self) -> Path:
        return self.root / ".locks"

    def entry_path(self, key: str) -> Path:
        return self.root / key

    # -- reading --------------------------------------------------------------------------

    def lookup(self, key: str) -> CacheEntry | None:
        """The published entry for `key`, or None.  An entry whose manifest or artifacts
        are missing or truncated counts as absent (it is rebuilt and replaced)."""
        path = self.entry_path(key)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(manifest, dict) or manifest.get("key") != key:
            return None
        artifacts = manifest.get("artifacts")
        if not isinstance(artifacts, dict):
            return None
        for record in artifacts.values():
            # Sizes, not hashes: a hit must stay cheap; publishing is atomic, so a size
            # mismatch means someone edited the entry by hand.
            file = path / str(record.get("file", ""))
            if record.get("dir"):
                if not file.is_dir():
                    return None
            elif not file.is_file() or file.stat().st_size != record.get("size"):
                return None
        return CacheEntry(key, path, manifest)

    def newest(
        self, recipe: str, accept: Callable[[CacheEntry], bool] = lambda e: True
    ) -> CacheEntry | None:
        """The most recently published valid entry of `recipe` that `accept` takes, or None
        (what the live tests boot when the user names no build of their own)."""
        best: tuple[float, CacheEntry] | None = None
        if not self.root.is_dir():
            return None
        for manifest in self.root.glob(f"*/{MANIFEST}"):
            entry = self.lookup(manifest.parent.name)  # reads and checks the manifest once
            if entry is None or entry.manifest.get("recipe") != recipe or not accept(entry):
                continue
            try:
                stamp = manifest.stat().st_mtime
            except OSError:
                continue
            if best is None or stamp > best[0]:
                best = (stamp, entry)
        return best[1] if best else None

    def prune(self, recipe: str, keep: str) -> list[Path]:
        """Remove every published entry of `recipe` but `keep` (call holding `lock(keep)`
        after publishing it): for things of which only the newest is of any use."""
        removed: list[Path] = []
        if not self.root.is_dir():
            return removed
        for manifest in self.root.glob(f"*/{MANIFEST}"):
            entry = manifest.parent
            if entry.name == keep:
                continue
            try:
                if json.loads(manifest.read_text()).get("recipe") != recipe:
                    continue
            except (OSError, ValueError, AttributeError):
                continue
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        return removed

    # -- building ---------------------------------------------------------------------------

    def ensure(self, key: str, build: Callable[[Path], Built], *, rebuild: bool = False) -> Ensured:
        """The entry for `key`: served from the cache, or built by `build(work_dir)` and
        published, one builder per key at a time (a process that waited for the lock is
        served what the other one built).  `rebuild` builds even when the entry exists.
        The work directory is removed whatever happens; `build`'s files are moved, not
        copied, into the entry (so a sparse disk image stays sparse)."""
        if not rebuild and (entry := self.lookup(key)) is not None:
            return Ensured(entry, True)
        with self.lock(key):
            if not rebuild and (entry := self.lookup(key)) is not None:
                return Ensured(entry, True)
            work = self.new_workdir(key)
            try:
                built = build(work)
                entry = self.publish(key, built.files, built.manifest, log=built.log, move=True)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return Ensured(entry, False)

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Hold the key's build lock; clears what a killed build of this key left behind."""
        self.locks.mkdir(parents=True, exist_ok=True)
        with flock(self.locks / f"{key}.lock"):
            self._clear_leftovers(key)
            yield

    def _clear_leftovers(self, key: str) -> None:
        for pattern, base in (
            (f".staging-{key[:16]}-*", self.root),
            (f".old-{key[:16]}-*", self.root),
            (f"{key[:12]}-*", self.work_root),
        ):
            if base.is_dir():
                for stale in base.glob(pattern):
                    shutil.rmtree(stale, ignore_errors=True)

    def new_workdir(self, key: str) -> Path:
        """A fresh directory for one build of `key` (the caller removes it)."""
        self.work_root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{key[:12]}-", dir=self.work_root))

    def new_log(self, recipe: str, key: str) -> Path:
        self.logs.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        fd, name = tempfile.mkstemp(prefix=f"{recipe}-{key[:12]}-{stamp}-", suffix=".log",
                                    dir=self.logs)  # fmt: skip
        os.close(fd)
        self._prune_logs()
        return Path(name)

    def _prune_logs(self) -> None:
        logs = sorted(self.logs.glob("*.log"), key=lambda p: p.stat().st_mtime)
        for old in logs[:-KEEP_FAILED_LOGS]:
            with contextlib.suppress(OSError):
                old.unlink()

    def publish(
        self,
        key: str,
        files: Mapping[str, tuple[Path, str]],
        manifest: Mapping[str, Any],
        log: Path | None = None,
        *,
        move: bool = False,
    ) -> CacheEntry:
        """Publish artifacts as the entry for `key`, atomically; call holding `lock(key)`.

        `files`: artifact name -> (built file or directory, stored name), copied, or moved
        when `move` (they must then be on the cache's file system, as a work directory is).
        The log file is moved into the entry.  An existing entry (a forced rebuild) is
        replaced.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".staging-{key[:16]}-", dir=self.root))
        try:
            # mkdtemp/mkstemp make 0700/0600; an entry is read by whoever boots it (a QEMU
            # or libvirt running as another user), like any file in a cache.
            staging.chmod(0o755)
            records: dict[str, dict[str, Any]] = {}
            for name, (src, stored) in files.items():
                dest = staging / stored
                if src.is_dir():
                    if move:
                        os.rename(src, dest)
                    else:
                        shutil.copytree(src, dest, symlinks=True)
                    records[name] = {"file": stored, "dir": True}
                elif src.is_file():
                    if move:
                        os.rename(src, dest)
                    else:
                        shutil.copy2(src, dest)
                    records[name] = {
                        "file": stored,
                        "size": dest.stat().st_size,
                        "sha256": sha256_file(dest),
                    }
                else:
                    raise BrokenError(f"the build did not produce {name} ({src})")
            full = {**manifest, "key": key, "artifacts": records}
            (staging / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
            if log is not None and log.exists():
                shutil.move(log, staging / ENTRY_LOG)
                (staging / ENTRY_LOG).chmod(0o644)
            _fsync_tree(staging)
            dest_dir = self.entry_path(key)
            old: Path | None = None
            if dest_dir.exists():
                # rename() cannot replace a non-empty directory: move the old entry aside
                # first (still atomic for readers: they see the old or the new one, or for
                # an instant none, which is a miss, never a mix).
                old = Path(tempfile.mkdtemp(prefix=f".old-{key[:16]}-", dir=self.root))
                os.rename(dest_dir, old / "entry")
            os.rename(staging, dest_dir)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        entry = self.lookup(key)
        if entry is None:
            raise BrokenError(f"cache entry {dest_dir} is unreadable right after publishing")
        return entry


def _fsync_tree(path: Path) -> None:
    """Flush the entry's files before the rename makes it visible (a crash right after must
    not leave a published entry with empty files)."""
    for file in path.rglob("*"):
        if file.is_file() and not file.is_symlink():
            fd = os.open(file, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


__all__ = [
    "ArtifactCache",
    "Built",
    "CacheEntry",
    "CacheReport",
    "Ensured",
    "cache_key",
    "state_record",
    "toolchain_version",
]
