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
