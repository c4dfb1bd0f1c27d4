"""The build driver and artifact cache with a tiny real make-based recipe on a local tree.

The recipe is a test double of the recipe protocol only; make, git, patch, the cache's
renames and the logs are all real.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from xenpvh.build.builder import build_tree
from xenpvh.build.cache import ArtifactCache, cache_key, toolchain_version
from xenpvh.build.patching import PatchFailed
from xenpvh.build.runner import BuildFailed
from xenpvh.build.tree import LocalSource, Patch, TreeSpec, TreeState
from xenpvh.errors import BlockedError, BrokenError

MAKEFILE = """\
defconfig:
\tprintf 'CONFIG_BASE=y\\n' > .config
olddefconfig:
\tgrep -v '^CONFIG_UNKNOWN' .config > .config.new; mv .config.new .config
all:
\t@echo compiling
\tcat src.txt .config > out.bin
version:
\t@echo 1.2.3
"""


@dataclass(frozen=True)
class TinyRecipe:
    name: str = "tiny"
    version: int = 1
    config_path: str = ".config"
    required_tools: tuple[str, ...] = ("make",)
    target: str = "all"
    extra: dict[str, Any] = field(default_factory=dict)

    def options(self) -> dict[str, Any]:
        return {"target": self.target}

    def configure_commands(self, *, fragment: bool) -> list[list[str]]:
        return [["make", "defconfig"], *([["make", "olddefconfig"]] if fragment else [])]

    def build_commands(self) -> list[list[str]]:
        return [["make", self.target]]

    def version_command(self) -> list[str]:
        return ["make", "-s", "version"]

    def artifacts(self) -> dict[str, str]:
        return {"image": "out.bin"}

    def stored_name(self, artifact: str, version: str, key: str) -> str:
        return f"{artifact}-{version}.bin"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "Makefile").write_text(
        MAKEFILE
        + "boom:\n\t@echo 'error: boom at line 7'; exit 1\n"
        + "killed:\n\tkill -KILL $$PPID\n"
    )
    (src / "src.txt").write_text("hello\n")
    return src


def _patch(tmp_path: Path, new: str = "patched") -> Path:
    path = tmp_path / f"0001-{new}.diff"
    path.write_text(f"--- a/src.txt\n+++ b/src.txt\n@@ -1 +1 @@\n-hello\n+{new}\n")
    return path


def test_miss_then_hit_with_report(tree: Path, tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    spec = TreeSpec(LocalSource(tree), (Patch(_patch(tmp_path)),))
    first = build_tree(spec, TinyRecipe(), cache=cache)
    assert not first.cache.hit
    assert first.artifacts["image"].read_text() == "patched\nCONFIG_BASE=y\n"
    assert first.version == "1.2.3"
    assert first.artifacts["image"] == first.cache.path / "image-1.2.3.bin"
    assert "compiling" in first.log.read_text()
    manifest = json.loads((first.cache.path / "manifest.json").read_text())
    assert manifest["tree"]["patches"][0]["sha256"] == spec.patches[0].sha256()
    assert manifest["tree"]["identity"]["path"] == str(tree)
    assert len(manifest["applied_commits"]) == 1

    start = time.monotonic()
    second = build_tree(spec, TinyRecipe(), cache=cache)
    assert time.monotonic() - start < 1.0
    assert second.cache.hit
    assert second.cache.key == first.cache.key
    assert second.artifacts == first.artifacts
    assert "cache hit" in second.cache.describe()
    # The work tree is gone and only the entry (plus logs dir) remains.
    assert not any((tmp_path / "cache/work").iterdir())
    assert not list((tmp_path / "cache").glob(".staging-*"))

    forced = build_tree(spec, TinyRecipe(), cache=cache, rebuild=True)
    assert not forced.cache.hit
    assert forced.cache.key == first.cache.key


def test_changed_patch_misses(tree: Path, tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    a = build_tree(
        TreeSpec(LocalSource(tree), (Patch(_patch(tmp_path, "a")),)), TinyRecipe(), cache=cache
    )
    b = build_tree(
        TreeSpec(LocalSource(tree), (Patch(_patch(tmp_path, "b")),)), TinyRecipe(), cache=cache
    )
    assert a.cache.key != b.cache.key
    assert not b.cache.hit
    assert b.artifacts["image"].read_text().startswith("b\n")


def test_key_covers_every_input() -> None:
    state = TreeState("debian", {"package": "xen", "version": "1"}, ({"sha256": "aa"},), None)
    base = cache_key("xen", 1, state, "gcc 12", {"with_tools": False})
    opts = {"with_tools": False}
    v2 = TreeState("debian", {"package": "xen", "version": "2"}, state.patches)
    other_patch = TreeState("debian", state.identity, ({"sha256": "ab"},))
    with_config = TreeState("debian", state.identity, state.patches, "CONFIG_X=y\n")
    variants = [
        cache_key("linux", 1, state, "gcc 12", opts),
        cache_key("xen", 2, state, "gcc 12", opts),
        cache_key("xen", 1, state, "gcc 13", opts),
        cache_key("xen", 1, state, "gcc 12", {"with_tools": True}),
        cache_key("xen", 1, v2, "gcc 12", opts),
        cache_key("xen", 1, other_patch, "gcc 12", opts),
        cache_key("xen", 1, with_config, "gcc 12", opts),
    ]
    assert len({base, *variants}) == len(variants) + 1
    assert toolchain_version().startswith("gcc")


def test_failed_build_keeps_log_caches_nothing(tree: Path, tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    spec = TreeSpec(LocalSource(tree))
    with pytest.raises(BuildFailed) as info:
        build_tree(spec, TinyRecipe(target="boom"), cache=cache)
    err = info.value
    assert isinstance(err, BlockedError)
    assert "error: boom at line 7" in err.tail
    assert str(err.log) in str(err)
    assert "error: boom at line 7" in err.log.read_text()
    assert [p.name for p in cache.root.iterdir() if p.name not in ("logs", "work", ".locks")] == []
    assert not any((cache.root / "work").iterdir())


def test_killed_build_is_broken_not_blocked(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(BrokenError, match="killed by signal 9"):
        build_tree(
            TreeSpec(LocalSource(tree)),
            TinyRecipe(target="killed"),
            cache=ArtifactCache(tmp_path / "c"),
        )


def test_patch_that_does_not_apply_is_blocked_and_logged(tree: Path, tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    bad = tmp_path / "0002-bad.diff"
    bad.write_text("--- a/src.txt\n+++ b/src.txt\n@@ -1 +1 @@\n-goodbye\n+x\n")
    spec = TreeSpec(LocalSource(tree), (Patch(_patch(tmp_path)), Patch(bad)))
    with pytest.raises(PatchFailed, match=r"patch 2 .*0002-bad\.diff does not apply to src\.txt"):
        build_tree(spec, TinyRecipe(), cache=cache)
    logs = list((cache.root / "logs").iterdir())
    assert len(logs) == 1
    assert "0002-bad.diff" in logs[0].read_text()
    assert [p.name for p in cache.root.iterdir() if p.name not in ("logs", "work", ".locks")] == []


def test_fragment_is_merged_and_dropped_options_are_named(tree: Path, tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    frag = tmp_path / "extra.config"
    frag.write_text("CONFIG_EXTRA=y\n")
    built = build_tree(TreeSpec(LocalSource(tree), (), frag), TinyRecipe(), cache=cache)
    assert "CONFIG_EXTRA=y" in built.artifacts["image"].read_text()

    frag.write_text("CONFIG_UNKNOWN_THING=y\n")
    with pytest.raises(BlockedError, match=r"CONFIG_UNKNOWN_THING=y \(got n\)"):
        build_tree(TreeSpec(LocalSource(tree), (), frag), TinyRecipe(), cache=cache)


def test_newest_is_the_latest_valid_entry_of_its_recipe_that_is_accepted(tmp_path: Path) -> None:
    import os

    cache = ArtifactCache(tmp_path / "cache")
    assert cache.newest("r") is None  # no cache directory at all

    def publish(key: str, recipe: str, body: bytes, stamp: int) -> Path:
        f = tmp_path / f"{key}.bin"
        f.write_bytes(body)
        with cache.lock(key):
            entry = cache.publish(key, {"a": (f, "a.bin")}, {"recipe": recipe, "tag": key})
        os.utime(entry.path / "manifest.json", (stamp, stamp))
        return entry.path

    publish("k1", "r", b"one", 1000)
    newest = publish("k2", "r", b"two", 3000)
    publish("k3", "other", b"three", 5000)
    publish("k4", "r", b"four", 2000)
    assert cache.newest("r").key == "k2"
    assert cache.newest("r", lambda e: e.manifest["tag"] != "k2").key == "k4"
    assert cache.newest("nothing") is None
    # An entry whose artifact was cut short is not valid: the next newest is served.
    (newest / "a.bin").write_bytes(b"t")
    assert cache.newest("r").key == "k4"
