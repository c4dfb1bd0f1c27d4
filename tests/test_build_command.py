"""`xenpvh build xen` behaviour: exit codes and what is printed for blocked input."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest
from rich.console import Console

from xenpvh.cli.build import build_xen_command


def _run(tmp_path: Path, **kw: object) -> tuple[int, str]:
    out = io.StringIO()
    args = argparse.Namespace(tree=str(tmp_path / "tree"), patches=None, config=None, rebuild=False)
    for key, value in kw.items():
        setattr(args, key, value)
    code = build_xen_command(args, Console(file=out, width=200, highlight=False))
    return code, out.getvalue()


def test_patch_that_does_not_apply_exits_blocked_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "tree/xen").mkdir(parents=True)
    (tmp_path / "tree/xen/Makefile").write_text("all:\n")
    bad = tmp_path / "0001-bad.diff"
    bad.write_text("--- a/xen/Makefile\n+++ b/xen/Makefile\n@@ -1 +1 @@\n-nothing\n+x\n")
    code, text = _run(tmp_path, patches=str(bad))
    assert code == 2
    assert "blocked:" in text
    assert "0001-bad.diff" in text
    assert "xen/Makefile" in text


def test_missing_tree_exits_blocked(tmp_path: Path) -> None:
    code, text = _run(tmp_path)
    assert code == 2
    assert "does not exist" in text
