"""Patch series against a tiny real git repository: git am, patch -p1, and failure messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenpvh.build.patching import PatchFailed, apply_series, commit_base, find_hunk, git
from xenpvh.build.tree import Patch

BANNER = "".join(f"line {i}\n" for i in range(1, 21))


def _tree(path: Path) -> Path:
    path.mkdir()
    (path / "src").mkdir()
    (path / "src/console.c").write_text(BANNER)
    (path / "README").write_text("readme\n")
    commit_base(path, "base")
    return path


def _format_patch(tmp_path: Path) -> Path:
    """A real `git format-patch` file inserting a marker after line 10."""
    work = _tree(tmp_path / "author")
    text = BANNER.replace("line 10\n", "line 10\nxenpvh marker\n")
    (work / "src/console.c").write_text(text)
    git(work, "commit", "-qam", "console: add marker")
    out = git(work, "format-patch", "-1", "-o", str(tmp_path / "out")).stdout.strip()
    return Path(out)


def test_mbox_series_applies_with_git_am(tmp_path: Path) -> None:
    patch = _format_patch(tmp_path)
    tree = _tree(tmp_path / "tree")
    base = git(tree, "rev-parse", "HEAD").stdout.strip()
    shas = apply_series(tree, [Patch(patch)])
    assert "xenpvh marker" in (tree / "src/console.c").read_text()
    assert git(tree, "log", "-1", "--format=%s").stdout.strip() == "console: add marker"
    assert git(tree, "rev-parse", "HEAD~1").stdout.strip() == base
    assert shas == [git(tree, "rev-parse", "HEAD").stdout.strip()]


def test_mbox_that_does_not_apply_names_patch_file_and_hunk(tmp_path: Path) -> None:
    patch = _format_patch(tmp_path)
    tree = _tree(tmp_path / "tree")
    (tree / "src/console.c").write_text(BANNER.replace("line 9\n", "line nine\n"))
    git(tree, "commit", "-qam", "diverge")
    with pytest.raises(PatchFailed) as info:
        apply_series(tree, [Patch(patch)])
    err = info.value
    assert err.patch == patch
    assert err.target == "src/console.c"
    assert err.index == 1
    assert str(patch) in str(err)
    assert "@@ -8,6 +8,7 @@ line 7" in str(err)
    assert str(err).endswith("+xenpvh marker\n line 11\n line 12\n line 13")
    # git am was aborted: the tree is back at its last good commit and clean.
    assert git(tree, "status", "--porcelain").stdout == ""
    assert not (tree / ".git/rebase-apply").exists()


def test_mbox_for_missing_file_is_named(tmp_path: Path) -> None:
    patch = _format_patch(tmp_path)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "README").write_text("x\n")
    commit_base(tree, "base")
    with pytest.raises(PatchFailed, match=r"src/console\.c"):
        apply_series(tree, [Patch(patch)])


def test_quilt_diff_applies_and_is_committed(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    diff = tmp_path / "readme.diff"
    diff.write_text("--- a/README\n+++ b/README\n@@ -1 +1 @@\n-readme\n+patched readme\n")
    apply_series(tree, [Patch(diff)])
    assert (tree / "README").read_text() == "patched readme\n"
    assert git(tree, "status", "--porcelain").stdout == ""
    assert "readme.diff" in git(tree, "log", "-1", "--format=%s").stdout


def test_quilt_diff_failure_names_hunk_number_and_file(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    good = tmp_path / "0001-good.diff"
    good.write_text("--- a/README\n+++ b/README\n@@ -1 +1 @@\n-readme\n+patched\n")
    bad = tmp_path / "0002-bad.diff"
    bad.write_text(
        "--- a/src/console.c\n+++ b/src/console.c\n"
        "@@ -1,2 +1,2 @@\n line 1\n-line 2\n+line two\n"
        "@@ -15,3 +15,3 @@\n line 15\n-no such line\n+line sixteen\n line 17\n"
    )
    with pytest.raises(PatchFailed) as info:
        apply_series(tree, [Patch(good), Patch(bad)])
    err = info.value
    assert err.index == 2
    assert err.patch == bad
    assert err.target == "src/console.c"
    assert "hunk #2 FAILED" in str(err)
    assert "@@ -15,3 +15,3 @@" in str(err)


def test_find_hunk_by_line_and_number() -> None:
    text = (
        "--- a/x.c\n+++ b/x.c\n@@ -3,2 +3,3 @@\n a\n+b\n--- a/y.c\n+++ b/y.c\n@@ -9 +9 @@\n-c\n+d\n"
    )
    assert find_hunk(text, "y.c", line=9) == "@@ -9 +9 @@\n-c\n+d"
    assert find_hunk(text, "x.c", number=1) == "@@ -3,2 +3,3 @@\n a\n+b"
    assert find_hunk(text, "x.c", line=9) is None
