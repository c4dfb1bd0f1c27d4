"""Tree specs from TOML and CLI strings, series files, validation and resolved state."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from xenpvh.build.source import resolve
from xenpvh.build.tree import DebianSource, GitSource, LocalSource, Patch, TreeSpec, read_series
from xenpvh.errors import BlockedError

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "guestcfg/patches/xen"


def test_sample_spec_loads_debian_source_and_series() -> None:
    spec = TreeSpec.from_toml(SAMPLE / "sample.toml")
    assert spec.source == DebianSource("xen", "4.17.5+72-g01140da4e8-1")
    assert [p.path.name for p in spec.patches] == [
        "0001-xen-console-print-a-xenpvh-marker-after-the-boot-ban.patch"
    ]
    assert spec.patches[0].method == "git-am"
    assert spec.config_fragment is None


def test_series_supports_comments_and_strip_levels(tmp_path: Path) -> None:
    (tmp_path / "a.diff").write_text("--- a/x\n+++ b/x\n")
    (tmp_path / "b.diff").write_text("--- x\n+++ x\n")
    (tmp_path / "series").write_text("# comment\na.diff\n\nb.diff -p0  # trailing\n")
    patches = read_series(tmp_path / "series")
    assert patches == (Patch(tmp_path / "a.diff", 1), Patch(tmp_path / "b.diff", 0))
    assert patches[0].method == "patch"
    dep3 = tmp_path / "dep3.diff"
    dep3.write_text("From: A Person <a@example.org>\nSubject: x\n---\n--- a/x\n+++ b/x\n")
    assert Patch(dep3).method == "patch"


def test_series_with_unknown_option_names_line(tmp_path: Path) -> None:
    (tmp_path / "a.diff").write_text("")
    (tmp_path / "series").write_text("a.diff --reverse\n")
    with pytest.raises(BlockedError, match=r"series:1: unsupported option '--reverse'"):
        read_series(tmp_path / "series")


def test_missing_patch_is_named(tmp_path: Path) -> None:
    (tmp_path / "series").write_text("nope.patch\n")
    with pytest.raises(BlockedError, match=r"nope\.patch does not exist"):
        TreeSpec.from_cli("debian:xen", [str(tmp_path / "series")])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[patches]\nfiles=[]\n", "missing \\[source\\]"),
        ('[source]\ngit="u"\ndebian="xen"\n', "exactly one of"),
        ('[source]\ndebian="Xen; rm -rf /"\n', "not a Debian source package name"),
        ('[source]\ndebian="xen"\nversion="1 2"\n', "not a Debian version"),
        ('[source]\ngit="--upload-pack=evil"\n', "not usable"),
        ('[source]\npath="does-not-exist"\n', "does not exist"),
        ("[source\n", "sample.toml"),
    ],
)
def test_bad_toml_is_blocked_with_reason(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "sample.toml"
    path.write_text(text)
    with pytest.raises(BlockedError, match=message):
        TreeSpec.from_toml(path)


def test_cli_forms(tmp_path: Path) -> None:
    assert TreeSpec.from_cli("debian:xen=4.17.5-1").source == DebianSource("xen", "4.17.5-1")
    assert TreeSpec.from_cli("debian:xen").source == DebianSource("xen", None)
    assert TreeSpec.from_cli("git:https://h/x.git@RELEASE-4.17.5").source == GitSource(
        "https://h/x.git", "RELEASE-4.17.5"
    )
    assert TreeSpec.from_cli("git:https://h/x.git").source == GitSource("https://h/x.git")
    assert TreeSpec.from_cli("https://h/x.git#stable-4.17").source == GitSource(
        "https://h/x.git", "stable-4.17"
    )
    assert TreeSpec.from_cli(str(tmp_path)).source == LocalSource(tmp_path.resolve())


def test_cli_patch_directory_and_toml_spec() -> None:
    spec = TreeSpec.from_cli(str(SAMPLE / "sample.toml"))
    assert spec == TreeSpec.from_toml(SAMPLE / "sample.toml")
    from_dir = TreeSpec.from_cli("debian:xen", [str(SAMPLE)])
    assert from_dir.patches == spec.patches


def test_cli_patch_directory_without_series_takes_patches_in_order(tmp_path: Path) -> None:
    for name in ("0002-b.patch", "0001-a.patch", "notes.txt"):
        (tmp_path / name).write_text("--- a/x\n+++ b/x\n")
    spec = TreeSpec.from_cli("debian:xen", [str(tmp_path)])
    assert [p.path.name for p in spec.patches] == ["0001-a.patch", "0002-b.patch"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(BlockedError, match="has no series"):
        TreeSpec.from_cli("debian:xen", [str(tmp_path / "empty")])


def _git(cwd: Path, *args: str) -> str:
    argv = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    return subprocess.run(
        [*argv, *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def test_resolved_state_records_commit_patches_and_config(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "f").write_text("one\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "f")
    _git(repo, "commit", "-qm", "c1")
    _git(repo, "tag", "-a", "v1", "-m", "v1")
    head = _git(repo, "rev-parse", "HEAD").strip()
    patch = tmp_path / "p.diff"
    patch.write_text("--- a/f\n+++ b/f\n@@ -1 +1 @@\n-one\n+two\n")
    frag = tmp_path / "frag.config"
    frag.write_text("CONFIG_X=y\n")

    state = resolve(TreeSpec(GitSource(str(repo), "v1"), (Patch(patch),), frag))
    assert state.kind == "git"
    assert state.identity["commit"] == head  # the annotated tag peeled to its commit
    assert state.patches[0]["name"] == "p.diff"
    assert len(state.patches[0]["sha256"]) == 64
    assert state.config == "CONFIG_X=y\n"

    local = resolve(TreeSpec(LocalSource(repo)))
    (repo / "f").write_text("changed\n")
    assert resolve(TreeSpec(LocalSource(repo))).identity["content"] != local.identity["content"]

    with pytest.raises(BlockedError, match="has no ref 'nope'"):
        resolve(TreeSpec(GitSource(str(repo), "nope")))
