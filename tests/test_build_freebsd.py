"""FreeBSD kernel builds: native over a Host (fake only at the Host protocol boundary) and a
live cross build that runs only when a FreeBSD tree is given."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from xenpvh.build.freebsd import build_freebsd_cross, build_freebsd_native
from xenpvh.build.recipes import FreeBSDRecipe
from xenpvh.build.runner import BuildFailed
from xenpvh.errors import BlockedError
from xenpvh.host.base import CommandResult


class RecordingHost:
    """Stands in for an ssh FreeBSD build host: records argv, serves the kernel file."""

    name = "freebsd-builder"

    def __init__(self, status: int = 0, output: bytes = b"--- kernel ---\n") -> None:
        self.status = status
        self.output = output
        self.runs: list[tuple[str, ...]] = []
        self.fetched: list[str] = []

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 120.0,
        input: bytes | None = None,
        check: bool = False,
    ) -> CommandResult:
        self.runs.append(tuple(argv))
        return CommandResult(tuple(argv), self.status, self.output, b"")

    def get(self, remote: str, local: Path) -> None:
        self.fetched.append(remote)
        local.write_bytes(b"\x7fELF kernel")


def test_native_build_runs_buildkernel_on_the_host(tmp_path: Path) -> None:
    host = RecordingHost()
    recipe = FreeBSDRecipe("native")
    kernel = build_freebsd_native(host, "/usr/src", tmp_path, recipe=recipe)  # type: ignore[arg-type]
    assert host.runs == [tuple(recipe.build_commands("/usr/src")[0])]
    assert "buildkernel" in host.runs[0]
    assert host.fetched == ["/tmp/xenpvh-freebsd-obj/usr/src/amd64.amd64/sys/GENERIC/kernel"]
    assert kernel.kernel.read_bytes() == b"\x7fELF kernel"
    assert "--- kernel ---" in kernel.log.read_text()


def test_native_build_failure_is_blocked_with_log_tail(tmp_path: Path) -> None:
    host = RecordingHost(status=2, output=b"cc: error: vm_machdep.c:12: bad\n*** Error code 1\n")
    with pytest.raises(BuildFailed, match=r"vm_machdep\.c:12") as info:
        build_freebsd_native(host, "/usr/src", tmp_path)  # type: ignore[arg-type]
    assert info.value.log == tmp_path / "build.log"
    assert host.fetched == []


def test_cross_build_refuses_a_non_freebsd_tree(tmp_path: Path) -> None:
    with pytest.raises(BlockedError, match="not a FreeBSD source tree"):
        build_freebsd_cross(tmp_path, tmp_path / "out")


FREEBSD_SRC = os.environ.get("XENPVH_FREEBSD_SRC")


@pytest.mark.host
@pytest.mark.skipif(
    FREEBSD_SRC is None, reason="no FreeBSD tree given (set XENPVH_FREEBSD_SRC=/path/to/src)"
)
def test_live_cross_build_of_a_freebsd_kernel(tmp_path: Path) -> None:
    assert FREEBSD_SRC is not None
    built = build_freebsd_cross(Path(FREEBSD_SRC), tmp_path / "out")
    assert built.kernel.read_bytes()[:4] == b"\x7fELF"


# --------------------------------------------------------------------------- cross recipe


def test_cross_recipe_builds_the_toolchain_then_the_kernel_with_debians_llvm() -> None:
    recipe = FreeBSDRecipe("cross", jobs=3)
    toolchain, kernel = recipe.build_commands("/src")
    for argv in (toolchain, kernel):
        assert argv[argv.index("python3") + 1] == "/src/tools/build/make.py"
        # make.py asks on stdin unless told whether to clean.
        assert "--no-clean" in argv and "-j3" in argv
        # Debian's clang/lld build the kernel: FreeBSD's own llvm is not built.
        for flag in (
            "-DWITHOUT_CLANG",
            "-DWITHOUT_LLD",
            "-DWITHOUT_LLDB",
            "-DWITHOUT_LLVM_BINUTILS",
        ):
            assert flag in argv
    assert toolchain[-1] == "kernel-toolchain"
    # bmake's bootstrap (in the first run) skips the unit test that fails under dash.
    assert "BROKEN_TESTS=opt-debug-x-trace cmd-interrupt deptgt-interrupt" in toolchain
    assert kernel[-3:] == ["buildkernel", "KERNCONF=GENERIC", "NO_MODULES=yes"]
    assert "NO_MODULES=yes" not in FreeBSDRecipe("cross", modules=True).build_commands("/s")[1]
    # Native builds stay one `make buildkernel` on the FreeBSD host.
    (native,) = FreeBSDRecipe("native").build_commands("/usr/src")
    assert native[native.index("make") : native.index("make") + 3] == ["make", "-C", "/usr/src"]


FAKE_MAKE_PY = """\
import os, pathlib, sys
args = sys.argv[1:]
obj = pathlib.Path(os.environ["MAKEOBJDIRPREFIX"])
src = pathlib.Path(__file__).resolve().parent.parent.parent
log = obj / "calls"
with log.open("a") as f:
    f.write(" ".join(a for a in args if not a.startswith("--cross")) + "\\n")
if (src / "FAIL").exists():
    print("kern_fail.c:7: error: broken", flush=True)
    sys.exit(2)
if "buildkernel" in args:
    conf = [a for a in args if a.startswith("KERNCONF=")][0].split("=", 1)[1]
    out = obj / str(src).lstrip("/") / "amd64.amd64" / "sys" / conf
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernel").write_bytes(b"\\x7fELF" + conf.encode())
"""


def _fake_tree(tmp_path: Path) -> tuple[Path, FreeBSDRecipe]:
    """A tree whose tools/build/make.py stands in for FreeBSD's (the build tool boundary):
    it records its argv and leaves a kernel where buildkernel would."""
    src = tmp_path / "src"
    (src / "sys/amd64/conf").mkdir(parents=True)
    (src / "sys/amd64/conf/GENERIC").write_text("ident GENERIC\n")
    (src / "tools/build").mkdir(parents=True)
    (src / "tools/build/make.py").write_text(FAKE_MAKE_PY)
    llvm = tmp_path / "llvm"
    llvm.mkdir()
    for tool in ("clang", "ld.lld"):
        (llvm / tool).write_text("#!/bin/sh\necho 'Debian clang version 14.0.6'\n")
        (llvm / tool).chmod(0o755)
    recipe = FreeBSDRecipe("cross", objdir=str(tmp_path / "obj"), llvm_bindir=str(llvm))
    return src, recipe


def test_cached_cross_build_hits_misses_and_keeps_a_failed_log(tmp_path: Path) -> None:
    from xenpvh.build.cache import ArtifactCache
    from xenpvh.build.freebsd import build_freebsd_cached, newest_cached_kernel

    src, recipe = _fake_tree(tmp_path)
    cache = ArtifactCache(tmp_path / "cache")
    assert newest_cached_kernel(cache) is None
    first = build_freebsd_cached(src, recipe=recipe, cache=cache)
    assert not first.report.hit and first.kernel.read_bytes() == b"\x7fELFGENERIC"
    calls = (tmp_path / "obj/calls").read_text().splitlines()
    assert [c.split()[-1] for c in calls] == ["kernel-toolchain", "NO_MODULES=yes"]
    again = build_freebsd_cached(src, recipe=recipe, cache=cache)
    assert again.report.hit and again.kernel == first.kernel
    assert len((tmp_path / "obj/calls").read_text().splitlines()) == 2  # nothing ran
    assert newest_cached_kernel(cache) == first.kernel
    # A fragment is another kernel (config XENPVH), and writing it into the tree does not
    # make the next identical request miss.
    frag = build_freebsd_cached(src, recipe=recipe, cache=cache, fragment="options BOOTVERBOSE")
    assert frag.kernconf == "XENPVH" and frag.kernel.read_bytes() == b"\x7fELFXENPVH"
    assert "options BOOTVERBOSE" in (src / "sys/amd64/conf/XENPVH").read_text()
    assert build_freebsd_cached(
        src, recipe=recipe, cache=cache, fragment="options BOOTVERBOSE"
    ).report.hit
    # A changed tree misses; a failing build is blocked with the compiler's line, and its log
    # is kept in the cache's logs/.
    (src / "FAIL").write_text("")
    with pytest.raises(BuildFailed, match=r"kern_fail\.c:7"):
        build_freebsd_cached(src, recipe=recipe, cache=cache)
    assert any("kern_fail.c:7" in p.read_text() for p in cache.logs.glob("freebsd-kernel-*.log"))
