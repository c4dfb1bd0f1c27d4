"""`xenpvh build xtf`: XTF's tests built in a copy of the user's checkout, cached.

The trees here are XTF-shaped (a top Makefile that runs each test directory's `build`, as
XTF's does) and built by the real make; the live XTF test boots what the cache holds
(tests/test_xtf_live.py via xenpvh.run.guest_inputs.xtf_test)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from xenpvh.build.xtf import build_xtf_cached, newest_cached_test, parse_tests
from xenpvh.cli.main import main
from xenpvh.errors import BlockedError

TOP = """\
TESTS ?= $(wildcard $(CURDIR)/tests/*)
all:
\t@set -e; for D in $(TESTS); do [ ! -e $$D/Makefile ] && continue; $(MAKE) -C $$D build; done
"""
# One test: two environments' binaries, their xl configs and info.json, as XTF writes them.
TEST = """\
NAME := $(notdir $(CURDIR))
build:
\t@test ! -e FAIL || (echo "main.c:1: error: broken test" >&2; exit 1)
\tprintf 'ELF %s\\n' "$$(cat main.c)" > test-hvm64-$(NAME)
\tprintf 'ELF %s\\n' "$$(cat main.c)" > test-pv64-$(NAME)
\techo 'name="$(NAME)"' > test-hvm64-$(NAME).cfg
\techo '{"name": "$(NAME)", "environments": ["hvm64", "pv64"]}' > info.json
"""


def xtf_tree(root: Path, tests: tuple[str, ...] = ("example", "cpuid")) -> Path:
    root.mkdir()
    (root / "Makefile").write_text(TOP)
    (root / "include" / "xtf").mkdir(parents=True)
    (root / "include" / "xtf" / "lib.h").write_text("/* xtf */\n")
    for name in tests:
        d = root / "tests" / name
        d.mkdir(parents=True)
        (d / "Makefile").write_text(TEST)
        (d / "main.c").write_text(f"{name} v1\n")
    return root


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("XENPVH_XTF_DIR", raising=False)
    return tmp_path / "cache"


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_builds_in_a_copy_caches_and_serves_the_live_tests(tmp_path: Path) -> None:
    src = xtf_tree(tmp_path / "xtf")
    before = _files(src)
    built = build_xtf_cached(src)
    assert not built.report.hit
    assert sorted(built.names) == [
        "test-hvm64-cpuid", "test-hvm64-example", "test-pv64-cpuid", "test-pv64-example",
    ]  # fmt: skip
    example = built.tests / "example"
    assert (example / "test-hvm64-example").read_text() == "ELF example v1\n"
    assert json.loads((example / "info.json").read_text())["name"] == "example"
    assert (example / "test-hvm64-example.cfg").is_file()
    assert _files(src) == before, "the user's tree was written"
    # What the live tests find without $XENPVH_XTF_DIR.
    from xenpvh.run.guest_inputs import xtf_test

    assert xtf_test("test-hvm64-example") == example / "test-hvm64-example"
    assert newest_cached_test("test-hvm64-nosuch") is None
    # Unchanged sources: a hit.  An in-place `make` in the user's tree is not a change.
    (src / "tests" / "example" / "test-hvm64-example").write_text("stale")
    (src / "tests" / "example" / "main.o").write_text("obj")
    again = build_xtf_cached(src)
    assert again.report.hit and again.tests == built.tests
    # A changed source: a miss, built from the copy (the in-place products are not taken).
    main_c = src / "tests" / "example" / "main.c"
    main_c.write_text("example v2\n")
    os.utime(main_c, ns=(1, 2_000_000_000))
    rebuilt = build_xtf_cached(src)
    assert not rebuilt.report.hit
    assert (rebuilt.tests / "example" / "test-hvm64-example").read_text() == "ELF example v2\n"
    assert xtf_test("test-hvm64-example") == rebuilt.tests / "example" / "test-hvm64-example"


def test_only_the_tests_asked_for(tmp_path: Path) -> None:
    src = xtf_tree(tmp_path / "xtf")
    built = build_xtf_cached(src, tests=parse_tests("cpuid", src))
    assert sorted(built.names) == ["test-hvm64-cpuid", "test-pv64-cpuid"]
    assert newest_cached_test("test-hvm64-example") is None


def test_a_failing_test_build_is_blocked_with_the_log_kept(tmp_path: Path, cache: Path) -> None:
    src = xtf_tree(tmp_path / "xtf")
    (src / "tests" / "cpuid" / "FAIL").write_text("")
    with pytest.raises(BlockedError, match="XTF make") as e:
        build_xtf_cached(src)
    assert "broken test" in str(e.value)
    logs = list((cache / "xenpvh" / "builds" / "logs").glob("xtf-tests-*.log"))
    assert logs and "broken test" in logs[0].read_text()
    assert newest_cached_test("test-hvm64-example") is None
    assert not list((cache / "xenpvh" / "builds" / "work").iterdir())


def test_bad_input_is_blocked_before_any_build(tmp_path: Path, capsys) -> None:
    src = xtf_tree(tmp_path / "xtf")
    assert main(["build", "xtf", "--tree", str(tmp_path)]) == 2
    assert "is not an XTF tree" in capsys.readouterr().err
    assert main(["build", "xtf", "--tree", str(src), "--tests", "nosuch"]) == 2
    assert "tests/nosuch is not an XTF test" in capsys.readouterr().err
    assert main(["build", "xtf", "--tree", str(src), "--tests", "../etc"]) == 2
    assert "'../etc' is not an XTF test name" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "xenpvh" / "builds" / "work").exists()
    assert main(["build", "xtf", "--tree", str(src), "--tests", "example"]) == 0
    assert "test-hvm64-example" not in capsys.readouterr().out  # paths go to stderr
