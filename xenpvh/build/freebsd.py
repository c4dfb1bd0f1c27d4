"""FreeBSD kernels: built natively on a FreeBSD build host over ssh, or cross on Debian.

Native: `make buildkernel` runs on the host (any `Host`: an `SSHHost` to a FreeBSD box), its
output becomes the local build log, and the kernel is fetched back.  Cross: FreeBSD's own
`tools/build/make.py` bootstraps bmake and the build tools on Linux and compiles with Debian's
clang/lld (`clang-14`, `lld-14`).  Both use `FreeBSDRecipe`'s argv, so the two paths build the
same kernel config.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from xenpvh.build.cache import CACHE_FORMAT, ArtifactCache, CacheReport, first_line
from xenpvh.build.recipes import FreeBSDRecipe
from xenpvh.build.runner import BuildFailed, BuildLog, tail_of
from xenpvh.errors import BlockedError, BrokenError
from xenpvh.util.progress import ProgressSink, task

# A GENERIC buildkernel at -j2 takes about an hour on a small box; give it room.
NATIVE_TIMEOUT = 6 * 3600.0


class _Ran(Protocol):
    """What a native build reads of a finished command (a `CommandResult`)."""

    @property
    def ok(self) -> bool: ...
    @property
    def out(self) -> str: ...
    @property
    def err(self) -> str: ...
    @property
    def exit_status(self) -> int: ...


class BuildHost(Protocol):
    """What a native build needs of its FreeBSD host: the part of the `Host` protocol
    (`xenpvh.host.base`) it uses, declared here so the build room does not import the host
    room."""

    name: str

    def run(self, argv: Sequence[str], *, timeout: float = 120.0) -> _Ran: ...
    def put_bytes(self, data: bytes, remote: str, *, mode: int = 0o644) -> None: ...
    def get(self, remote: str, local: Path) -> None: ...


@dataclass(frozen=True)
class FreeBSDKernel:
    """A built kernel on this machine and the log of its build."""

    kernel: Path
    log: Path
    kernconf: str


def build_freebsd_native(
    host: BuildHost,
    src: str,
    out: Path,
    *,
    recipe: FreeBSDRecipe | None = None,
    fragment: str | None = None,
    timeout: float = NATIVE_TIMEOUT,
) -> FreeBSDKernel:
    """Run `make buildkernel` in `src` on the FreeBSD `host`; fetch the kernel to `out`.

    The log is `out/build.log`.  A failed build raises BuildFailed (blocked) with the log's
    last lines; the host being unreachable is the Host's BrokenError.
    """
    recipe = recipe or FreeBSDRecipe("native")
    if recipe.mode != "native":
        raise BlockedError(f"build_freebsd_native needs a native recipe, not {recipe.mode!r}")
    out.mkdir(parents=True, exist_ok=True)
    use_fragment = fragment is not None
    if fragment is not None:
        rel, text = recipe.fragment_config(fragment)
        # put_bytes is part of the Host protocol; the path is a fixed name under src.
        host.put_bytes(text.encode(), f"{src.rstrip('/')}/{rel}")
    argv = recipe.build_commands(src, fragment=use_fragment)[0]
    log_path = out / "build.log"
    with BuildLog(log_path) as log:
        log.phase(f"buildkernel on {host.name}")
        log.note(f"$ {shlex.join(argv)}    # on {host.name}")
        result = host.run(argv, timeout=timeout)
        # Host.run collects output; it lands in the log in one piece (stdout, then stderr).
        output = result.out + result.err
        log.note(output)
        if not result.ok:
            log.note(f"!!! exit {result.exit_status}")
            raise BuildFailed(
                f"FreeBSD buildkernel on {host.name}",
                log_path,
                tail_of(output),
                result.exit_status,
            )
        remote = recipe.kernel_path(src, fragment=use_fragment)
        kernel = out / "kernel"
        log.note(f"fetching {remote} from {host.name}")
        host.get(remote, kernel)
    return FreeBSDKernel(kernel, log_path, recipe.conf_name(use_fragment))


def is_freebsd_tree(src: Path) -> bool:
    return (src / "sys/amd64/conf/GENERIC").is_file() and (src / "tools/build/make.py").is_file()


def _forget_failed_bmake_bootstrap(objdir: Path) -> None:
    """make.py reuses objdir/bmake-build without configuring it again, and bootstraps only
    when bmake-install/bin/bmake is missing: a bootstrap that failed (say, configured with
    the wrong shell) would fail the same way forever."""
    if not (objdir / "bmake-install/bin/bmake").exists():
        shutil.rmtree(objdir / "bmake-build", ignore_errors=True)


def build_freebsd_cross(
    src: Path,
    out: Path,
    *,
    recipe: FreeBSDRecipe | None = None,
    fragment: str | None = None,
    on_line: Callable[[str], None] | None = None,
) -> FreeBSDKernel:
    """Cross-build a FreeBSD/amd64 kernel from the tree `src` on this (Debian) machine.

    Needs Debian's clang-14 and lld-14 (their binaries in /usr/lib/llvm-14/bin).  The kernel
    is copied to `out/kernel`; the log is `out/build.log`.
    """
    src = src.resolve()
    if not is_freebsd_tree(src):
        raise BlockedError(
            f"{src} is not a FreeBSD source tree (no sys/amd64/conf/GENERIC and "
            "tools/build/make.py)"
        )
    recipe = recipe or FreeBSDRecipe("cross")
    if recipe.mode != "cross":
        raise BlockedError(f"build_freebsd_cross needs a cross recipe, not {recipe.mode!r}")
    bindir = Path(recipe.llvm_bindir)
    missing = [t for t in ("clang", "ld.lld") if not (bindir / t).exists()]
    if missing:
        raise BlockedError(
            f"cross-building FreeBSD needs {', '.join(missing)} in {bindir} "
            "(apt-get install clang-14 lld-14)"
        )
    if shutil.which("python3") is None:
        raise BlockedError("cross-building FreeBSD needs python3 (tools/build/make.py)")
    out.mkdir(parents=True, exist_ok=True)
    use_fragment = fragment is not None
    if fragment is not None:
        rel, text = recipe.fragment_config(fragment)
        # FreeBSD finds KERNCONF files in sys/<arch>/conf only: the config goes into the tree.
        (src / rel).write_text(text)
    objdir = Path(recipe.objdir)
    # make.py refuses a MAKEOBJDIRPREFIX that does not exist yet.
    objdir.mkdir(parents=True, exist_ok=True)
    _forget_failed_bmake_bootstrap(objdir)
    log_path = out / "build.log"
    with BuildLog(log_path) as log:
        log.phase(f"cross buildkernel of {src}")
        for argv in recipe.build_commands(str(src), fragment=use_fragment):
            log.run(argv, cwd=src, what="FreeBSD cross buildkernel", on_line=on_line)
        built = Path(recipe.kernel_path(str(src), fragment=use_fragment))
        if not built.is_file():
            raise BrokenError(
                f"buildkernel succeeded but left no kernel at {built}; log: {log_path}"
            )
        kernel = out / "kernel"
        shutil.copy2(built, kernel)
        log.note(f"kernel: {built} -> {kernel}")
    return FreeBSDKernel(kernel, log_path, recipe.conf_name(use_fragment))


# The cache's recipe name for cross-built FreeBSD kernels (manifest "recipe").
CACHE_RECIPE = "freebsd-kernel"
KERNEL_ARTIFACT = "kernel"


def tree_digest(
    src: Path,
    skip: frozenset[str] = frozenset(),
    *,
    ignore: Callable[[str], bool] | None = None,
) -> str:
    """A cheap identity of a source tree: every file's path, size and mtime (a GENERIC tree
    is ~90,000 files and 1.4 GB: reading it all for a cache hit would take longer than the
    incremental build it saves).  A touched file is a miss, and the build is incremental.
    `skip`: relative paths left out; `ignore`: names of files and directories left out
    wherever they are (what a build writes into the tree); `.git` is always left out."""
    h = hashlib.sha256(b"freebsd-tree\0")
    for root, dirs, files in os.walk(src):
        dirs.sort()
        dirs[:] = [d for d in dirs if d != ".git" and (ignore is None or not ignore(d))]
        for name in sorted(files):
            if ignore is not None and ignore(name):
                continue
            path = Path(root, name)
            rel = path.relative_to(src).as_posix()
            if rel in skip:
                continue
            try:
                st = path.lstat()
            except OSError:
                continue
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def llvm_version(recipe: FreeBSDRecipe) -> str:
    clang = str(Path(recipe.llvm_bindir) / "clang")
    return first_line([clang, "--version"]) or f"{clang} not runnable"


def freebsd_cache_key(src: Path, recipe: FreeBSDRecipe, fragment: str | None) -> str:
    record = {
        "format": CACHE_FORMAT,
        "recipe": CACHE_RECIPE,
        "recipe_version": recipe.version,
        "options": {k: v for k, v in asdict(recipe).items() if k not in ("jobs", "objdir")},
        "fragment": fragment,
        # The config a fragment becomes is written into the tree by the build itself.
        "tree": tree_digest(src, frozenset({recipe.fragment_config("")[0]})),
        "toolchain": llvm_version(recipe),
    }
    blob = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class CachedFreeBSDKernel:
    kernel: Path
    log: Path
    kernconf: str
    report: CacheReport


def build_freebsd_cached(
    src: Path,
    *,
    recipe: FreeBSDRecipe | None = None,
    fragment: str | None = None,
    cache: ArtifactCache | None = None,
    rebuild: bool = False,
    progress: ProgressSink | None = None,
) -> CachedFreeBSDKernel:
    """`build_freebsd_cross`, served from the build cache when the tree, the recipe, the
    fragment and clang are the same as for a kernel built before.  A build is one progress
    task (`buildkernel`), its latest output line the task's detail."""
    start = time.monotonic()
    src = src.resolve()
    if not is_freebsd_tree(src):
        raise BlockedError(
            f"{src} is not a FreeBSD source tree (no sys/amd64/conf/GENERIC and "
            "tools/build/make.py)"
        )
    recipe = recipe or FreeBSDRecipe("cross")
    cache = cache if cache is not None else ArtifactCache()
    key = freebsd_cache_key(src, recipe, fragment)
    conf = recipe.conf_name(fragment is not None)

    def served(entry_key: str, hit: bool) -> CachedFreeBSDKernel | None:
        entry = cache.lookup(entry_key)
        if entry is None:
            return None
        report = CacheReport(
            entry_key, hit, entry.path, CACHE_RECIPE, entry.version,
            time.monotonic() - start, forced=rebuild and not hit,
            built_at=entry.manifest.get("built_at"),
        )  # fmt: skip
        return CachedFreeBSDKernel(entry.artifacts[KERNEL_ARTIFACT], entry.log, conf, report)

    if not rebuild and (found := served(key, True)) is not None:
        return found
    with cache.lock(key):
        if not rebuild and (found := served(key, True)) is not None:
            return found
        cache.work_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"{key[:12]}-", dir=cache.work_root) as work:
            out = Path(work)
            try:
                with task(progress, "buildkernel") as advance:
                    built = build_freebsd_cross(
                        src,
                        out,
                        recipe=recipe,
                        fragment=fragment,
                        on_line=lambda line: advance(detail=line),
                    )
            except BaseException:
                # A failed build's log outlives the work directory.
                failed = cache.new_log(CACHE_RECIPE, key)
                if (out / "build.log").exists():
                    shutil.copyfile(out / "build.log", failed)
                raise
            manifest = {
                "format": CACHE_FORMAT,
                "recipe": CACHE_RECIPE,
                "recipe_version": recipe.version,
                "version": f"{conf} ({src.name})",
                "kernconf": conf,
                "spec": str(src),
                "fragment": fragment,
                "toolchain": llvm_version(recipe),
                "elapsed": {"build": round(time.monotonic() - start, 3)},
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "built_on": socket.gethostname(),
            }
            cache.publish(
                key, {KERNEL_ARTIFACT: (built.kernel, KERNEL_ARTIFACT)}, manifest, log=built.log
            )
    found = served(key, False)
    if found is None:
        raise BrokenError(f"the FreeBSD kernel {key[:12]} was published but is not readable")
    return found


def newest_cached_kernel(cache: ArtifactCache | None = None) -> Path | None:
    """The kernel of the most recently built FreeBSD cache entry, or None."""
    entry = (cache if cache is not None else ArtifactCache()).newest(CACHE_RECIPE)
    return None if entry is None else entry.artifacts[KERNEL_ARTIFACT]


__all__ = [
    "CACHE_RECIPE",
    "CachedFreeBSDKernel",
    "FreeBSDKernel",
    "build_freebsd_cached",
    "build_freebsd_cross",
    "build_freebsd_native",
    "freebsd_cache_key",
    "is_freebsd_tree",
    "newest_cached_kernel",
    "tree_digest",
]
