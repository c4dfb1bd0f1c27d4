"""chroot_run on a real chroot: a root holding only Debian's static busybox."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from xenpvh.errors import BrokenError
from xenpvh.util.chroot import chroot_run

BUSYBOX = shutil.which("busybox")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or BUSYBOX is None, reason="needs root and busybox-static (scripts/setup)"
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "bin").mkdir()
    shutil.copy(str(BUSYBOX), tmp_path / "bin" / "busybox")
    return tmp_path


def test_the_command_runs_inside_the_root_with_the_image_path(root: Path) -> None:
    assert chroot_run(root, ["/bin/busybox", "echo", "hi"]) == "hi\n"
    # The environment is the image's own, not the builder's.
    env = chroot_run(root, ["/bin/busybox", "env"]).splitlines()
    assert sorted(env) == ["LANG=C", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    (root / "marker").write_text("inside\n")
    assert chroot_run(root, ["/bin/busybox", "cat", "/marker"]) == "inside\n"


def test_a_failing_command_is_broken_naming_it_and_its_stderr(root: Path) -> None:
    with pytest.raises(BrokenError) as info:
        chroot_run(root, ["/bin/busybox", "cat", "/no-such-file"])
    msg = str(info.value)
    assert "chroot /bin/busybox cat /no-such-file failed (1)" in msg
    assert "no-such-file" in msg.split("):", 1)[1]
