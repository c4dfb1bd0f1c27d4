"""The build driver and artifact cache with a tiny real make-based recipe on a local tree,
and `ArtifactCache.ensure` serving the dom0 image and the FreeBSD kit (their builds faked).

The recipe is a test double of the recipe protocol only; make, git, patch, the cache's
renames and the logs are all real.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from xenpvh.build import freebsdkit
from xenpvh.build.builder import build_tree
from xenpvh.build.cache import ArtifactCache, Built, cache_key, toolchain_version
from xenpvh.build.patching import PatchFailed
from xenpvh.build.runner import BuildFailed
from xenpvh.build.tree import LocalSource, Patch, TreeSpec, TreeState
from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host import image as image_mod
from xenpvh.host.image import ImageBuilder
from xenpvh.host.image_recipe import ImageRecipe

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


# --------------------------------------------------------------------------- ensure()


def _one_file_build(counter: list[str], recipe: str = "thing", data: bytes = b"built"):
    def build(work: Path) -> Built:
        counter.append(work.name)
        (work / "out.bin").write_bytes(data)
        return Built({"out": (work / "out.bin", "out.bin")}, {"recipe": recipe})

    return build


def test_ensure_builds_once_then_serves_the_entry(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "c")
    builds: list[str] = []
    first = cache.ensure("k1", _one_file_build(builds))
    assert not first.hit and builds and first.entry.artifacts["out"].read_bytes() == b"built"
    again = cache.ensure("k1", _one_file_build(builds))
    assert again.hit and again.entry == first.entry and len(builds) == 1
    forced = cache.ensure("k1", _one_file_build(builds, data=b"again"), rebuild=True)
    assert not forced.hit and len(builds) == 2
    assert forced.entry.artifacts["out"].read_bytes() == b"again"
    # Another key is another entry; the work directories are gone.
    assert not cache.ensure("k2", _one_file_build(builds)).hit and len(builds) == 3
    assert list(cache.work_root.iterdir()) == []


def test_ensure_moves_a_sparse_file_without_filling_it(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "c")

    def build(work: Path) -> Built:
        with (work / "disk.img").open("wb") as f:
            f.truncate(64 << 20)  # 64 MiB of holes
        return Built({"disk": (work / "disk.img", "disk.img")}, {"recipe": "disk"})

    disk = cache.ensure("k", build).entry.artifacts["disk"]
    assert disk.stat().st_size == 64 << 20
    assert disk.stat().st_blocks * 512 < 1 << 20


def test_a_failed_ensure_publishes_nothing_and_leaves_no_work_dir(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "c")

    def build(work: Path) -> Built:
        (work / "half.bin").write_bytes(b"partial")
        raise BrokenError("mirror unreachable")

    with pytest.raises(BrokenError, match="mirror unreachable"):
        cache.ensure("k", build)
    assert cache.lookup("k") is None
    assert list(cache.work_root.iterdir()) == []


def test_prune_removes_only_other_entries_of_the_recipe(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "c")
    builds: list[str] = []
    old = cache.ensure("old", _one_file_build(builds, "guest")).entry
    other = cache.ensure("other", _one_file_build(builds, "kit")).entry
    new = cache.ensure("new", _one_file_build(builds, "guest")).entry
    assert cache.prune("guest", keep="new") == [old.path]
    assert cache.lookup("old") is None
    assert cache.lookup("new") == new and cache.lookup("other") == other


def test_dom0_image_second_ensure_is_a_hit_and_a_recipe_change_a_miss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The nested host's image through the cache (the debootstrap build faked: the cache is
    the unit here; the real build is tests/test_host_nested.py's)."""
    builds: list[str] = []

    def build(self: ImageBuilder, work: Path) -> Built:
        builds.append(self.recipe.hostname)
        files = {}
        for name, stored in image_mod._ARTIFACTS.items():
            (work / stored).write_bytes(name.encode())
            files[name] = (work / stored, stored)
        manifest = {"recipe": image_mod.CACHE_RECIPE, "dom0_cmdline": "console=hvc0",
                    "kernel_version": "6.1.0-test", "xen_version": "4.17"}  # fmt: skip
        return Built(files, manifest)

    monkeypatch.setattr(ImageBuilder, "_build", build)
    cache = ArtifactCache(tmp_path / "nested")
    recipe = ImageRecipe(packages=("systemd-sysv",), roles="r")
    first = ImageBuilder(recipe, cache=cache).ensure()
    assert not first.cache_hit and builds == [recipe.hostname]
    assert first.image.disk.read_bytes() == b"disk" and first.image.xen_version == "4.17"
    again = ImageBuilder(recipe, cache=cache).ensure()
    assert again.cache_hit and again.image == first.image and len(builds) == 1
    assert ImageBuilder(recipe, cache=cache).cached() == first.image
    for changed in (
        dataclasses.replace(recipe, hostname="other"),
        dataclasses.replace(recipe, roles="r2"),
        dataclasses.replace(recipe, packages=("systemd-sysv", "vim")),
    ):
        assert not ImageBuilder(changed, cache=cache).ensure().cache_hit
    assert len(builds) == 4


def test_freebsd_kit_second_build_is_a_hit_and_a_new_clang_a_miss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The FreeBSD kit through the cache, its compiler and xorriso faked."""
    versions = {"clang": "Debian clang version 14.0.6", "xorriso": "xorriso 1.5.4"}
    runs: list[str] = []

    def fake_run(argv: list[str], what: str) -> None:
        runs.append(what)
        Path(argv[argv.index("-o") + 1]).write_bytes(what.encode())

    monkeypatch.setattr(freebsdkit, "_tool", lambda name, bindir: name)
    monkeypatch.setattr(freebsdkit, "_version", lambda argv: versions[argv[0]])
    monkeypatch.setattr(freebsdkit, "_run", fake_run)
    first = freebsdkit.build_freebsd_kit(tmp_path)
    assert len(runs) == 2 and first.init.read_bytes() == b"compiling the FreeBSD init"
    assert freebsdkit.build_freebsd_kit(tmp_path) == first and len(runs) == 2
    versions["clang"] = "Debian clang version 15.0.7"
    second = freebsdkit.build_freebsd_kit(tmp_path)
    assert second.key != first.key and len(runs) == 4


def test_a_hit_does_not_wait_for_a_builder_of_the_same_key(tmp_path: Path) -> None:
    """A published entry is served without the key's lock: a forced rebuild in another
    process does not hold up every run that only needs the entry."""
    cache = ArtifactCache(tmp_path / "c")
    builds: list[str] = []
    cache.ensure("k", _one_file_build(builds))
    served: list[bool] = []
    with cache.lock("k"):  # a builder of "k" (flock: another open file blocks)
        reader = threading.Thread(
            target=lambda: served.append(cache.ensure("k", _one_file_build(builds)).hit),
            daemon=True,
        )
        reader.start()
        reader.join(timeout=5)
        assert served == [True]
