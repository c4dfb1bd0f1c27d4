"""Xen Test Framework tests, built from the user's XTF checkout and kept in the build cache.

`xenpvh build xtf --tree PATH [--tests example,cpuid]` copies the tree (its `.git` and
whatever an earlier in-place `make` left are not taken), runs XTF's own `make` on the copy
with the host's gcc, and publishes every test's binaries (`tests/<test>/test-<env>-<test>`)
with their `info.json`.  The user's tree is only read.  The cache key is the tree's identity
(paths, sizes and mtimes of its sources), the tests asked for and the compiler and linker.
`newest_cached_test(name)` is how the live tests find a binary when `$XENPVH_XTF_DIR` is
not set.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xenpvh.build.cache import CACHE_FORMAT, ArtifactCache, Built, CacheReport, toolchain_version
from xenpvh.build.freebsd import tree_digest
from xenpvh.build.runner import BuildLog
from xenpvh.errors import BlockedError, BrokenError
from xenpvh.util.progress import ProgressSink, task

CACHE_RECIPE = "xtf-tests"
RECIPE_VERSION = 1
TESTS_ARTIFACT = "tests"
_TEST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# What an in-place `make` of the user's tree leaves: never copied, so the copy builds clean.
_BUILT = re.compile(r"(?:\.o|\.d|\.lds|\.tmp)$|^test-[a-z0-9]+-|^xtf-runner\.")


@dataclass(frozen=True)
class CachedXtf:
    tests: Path  # the entry's directory of tests/<test>/...
    names: tuple[str, ...]  # the test binaries built (test-hvm64-example, ...)
    log: Path
    report: CacheReport


def is_xtf_tree(src: Path) -> bool:
    return (
        (src / "Makefile").is_file()
        and (src / "tests").is_dir()
        and (src / "include" / "xtf").is_dir()
    )


def parse_tests(text: str | None, src: Path) -> tuple[str, ...]:
    """`--tests a,b` (names of directories under tests/), or () for all of them."""
    if not text:
        return ()
    names = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    for name in names:
        if not _TEST_NAME.match(name):
            raise BlockedError(f"--tests: {name!r} is not an XTF test name")
        if not (src / "tests" / name / "Makefile").is_file():
            raise BlockedError(f"--tests: {src}/tests/{name} is not an XTF test (no Makefile)")
    return names


def _ignored(name: str) -> bool:
    return name in (".git", "dist") or _BUILT.search(name) is not None


def xtf_cache_key(src: Path, tests: Sequence[str]) -> str:
    record = {
        "format": CACHE_FORMAT,
        "recipe": CACHE_RECIPE,
        "recipe_version": RECIPE_VERSION,
        "tests": sorted(tests),
        # An in-place `make` in the user's tree does not make the cached build stale.
        "tree": tree_digest(src, ignore=_ignored),
        "toolchain": toolchain_version(),
    }
    blob = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _copy_sources(src: Path, dest: Path) -> None:
    def ignore(_dir: str, names: list[str]) -> set[str]:
        return {n for n in names if _ignored(n)}

    shutil.copytree(src, dest, symlinks=True, ignore=ignore)


def collect_tests(tree: Path, out: Path) -> tuple[str, ...]:
    """Copy each built test's binaries, xl config and info.json to out/tests/<test>/."""
    names: list[str] = []
    for test_dir in sorted((tree / "tests").iterdir()):
        binaries = sorted(p for p in test_dir.glob("test-*") if p.is_file() and p.suffix != ".cfg")
        if not binaries:
            continue
        dest = out / "tests" / test_dir.name
        dest.mkdir(parents=True, exist_ok=True)
        for p in [*binaries, *test_dir.glob("test-*.cfg"), test_dir / "info.json"]:
            if p.is_file():
                shutil.copy2(p, dest / p.name)
        names += [p.name for p in binaries]
    return tuple(names)


def build_xtf_cached(
    src: Path,
    *,
    tests: Sequence[str] = (),
    jobs: int = 2,
    cache: ArtifactCache | None = None,
    rebuild: bool = False,
    progress: ProgressSink | None = None,
) -> CachedXtf:
    """Build XTF's tests from the checkout `src` (all of them, or `tests`), cached.  A build
    is one progress task (`xtf make`), its latest output line the task's detail."""
    start = time.monotonic()
    src = src.resolve()
    if not is_xtf_tree(src):
        raise BlockedError(f"{src} is not an XTF tree (no Makefile, tests/ and include/xtf/)")
    if shutil.which("gcc") is None or shutil.which("make") is None:
        raise BlockedError("building XTF needs gcc and make (apt-get install build-essential)")
    cache = cache if cache is not None else ArtifactCache()
    key = xtf_cache_key(src, tests)

    def build(work: Path) -> Built:
        tree, out = work / "xtf", work / "out"
        log_path = work / "build.log"
        _copy_sources(src, tree)
        argv = ["make", f"-j{max(1, int(jobs))}"]
        if tests:
            # XTF's Makefile takes the test directories to build in TESTS.
            argv.append("TESTS=" + " ".join(str(tree / "tests" / t) for t in tests))
        try:
            with BuildLog(log_path) as log, task(progress, "xtf make") as advance:
                log.phase(f"XTF tests from {src}")
                log.run(argv, cwd=tree, what="XTF make", on_line=lambda ln: advance(detail=ln))
                names = collect_tests(tree, out)
                log.note(f"built: {' '.join(names)}")
        except BaseException:
            failed = cache.new_log(CACHE_RECIPE, key)
            if log_path.exists():
                shutil.copyfile(log_path, failed)
            raise
        if not names:
            raise BrokenError(f"XTF's make succeeded but built no test binary; log: {log_path}")
        manifest = {
            "format": CACHE_FORMAT,
            "recipe": CACHE_RECIPE,
            "recipe_version": RECIPE_VERSION,
            "version": f"{len(names)} tests ({src.name})",
            "spec": str(src),
            "tests": list(tests),
            "tests_built": list(names),
            "toolchain": toolchain_version(),
            "elapsed": {"build": round(time.monotonic() - start, 3)},
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "built_on": socket.gethostname(),
        }
        return Built({TESTS_ARTIFACT: (out / "tests", "tests")}, manifest, log_path)

    served = cache.ensure(key, build, rebuild=rebuild)
    entry = served.entry
    report = CacheReport(
        key, served.hit, entry.path, CACHE_RECIPE, entry.version, time.monotonic() - start,
        forced=rebuild and not served.hit, built_at=entry.manifest.get("built_at"),
    )  # fmt: skip
    names = tuple(entry.manifest.get("tests_built", ()))
    return CachedXtf(entry.artifacts[TESTS_ARTIFACT], names, entry.log, report)


def newest_cached_test(name: str, cache: ArtifactCache | None = None) -> Path | None:
    """The binary `name` (e.g. test-hvm64-example) of the newest XTF cache entry that has
    it, or None."""
    entry = (cache if cache is not None else ArtifactCache()).newest(
        CACHE_RECIPE, lambda e: name in e.manifest.get("tests_built", ())
    )
    if entry is None:
        return None
    found = sorted(entry.artifacts[TESTS_ARTIFACT].glob(f"*/{name}"))
    return found[0] if found else None


__all__ = [
    "CACHE_RECIPE",
    "CachedXtf",
    "build_xtf_cached",
    "collect_tests",
    "is_xtf_tree",
    "newest_cached_test",
    "parse_tests",
    "xtf_cache_key",
]
