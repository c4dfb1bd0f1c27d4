"""The nested host's QEMU: the recipe's commands, the choice a front end passes, and (host
tier) the real build of Debian's qemu source package with xenpvh's fix, through the build
room and its cache."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from xenpvh.build.qemu import (
    QemuBinary,
    build_qemu,
    check_choice,
    default_spec_path,
    resolve_qemu,
)
from xenpvh.build.recipes import DEBIAN_QEMU_FIRMWARE, QemuRecipe
from xenpvh.build.tree import TreeSpec
from xenpvh.errors import BlockedError
from xenpvh.host.nested import NestedHost

FIX = "0001-target-i386-do-not-leave-an-injected-SVM-interrupt-i.patch"
# FreeBSD's PVH entry (EFER.LME before CR4.PAE, paging off) froze the nested host.
VMEXIT_FIX = "0002-target-i386-restore-the-host-s-CR0-on-VMEXIT-whateve.patch"


def test_recipe_builds_only_qemu_system_x86_64_with_debian_firmware() -> None:
    recipe = QemuRecipe(jobs=3)
    (configure,) = recipe.configure_commands(fragment=False)
    assert configure[0] == "./configure"
    assert "--target-list=x86_64-softmmu" in configure
    assert "--without-default-features" in configure
    assert "--enable-slirp" in configure  # the ssh port forward is user networking
    assert f"--firmwarepath={':'.join(DEBIAN_QEMU_FIRMWARE)}" in configure
    assert recipe.build_commands() == [["ninja", "-C", "build", "-j3", "qemu-system-x86_64"]]
    assert recipe.artifacts() == {"image": "build/qemu-system-x86_64"}
    # -j is not part of the key; the configure flags are.
    assert QemuRecipe(jobs=1).options() == QemuRecipe(jobs=2).options()
    assert QemuRecipe(pkgversion="x").options() != QemuRecipe().options()
    key = "ab" * 32
    assert recipe.stored_name("image", "7.2.22", key) == "qemu-system-x86_64-7.2.22-abababababab"


def test_recipe_refuses_a_kconfig_fragment() -> None:
    with pytest.raises(BlockedError, match="no config fragment"):
        QemuRecipe().configure_commands(fragment=True)


def test_default_spec_is_debian_qemu_with_the_fix() -> None:
    spec = TreeSpec.from_toml(default_spec_path())
    assert spec.source.describe().startswith("debian qemu")
    assert [p.name for p in spec.patches] == [FIX, VMEXIT_FIX]
    text = spec.patches[0].path.read_text()
    # Upstream-ready: a mail with a subject, an explanation and the one-line change.
    assert text.startswith("From ") and "Subject: [PATCH] target/i386:" in text
    assert "cpu_handle_exception" in text and "Signed-off-by:" in text
    assert "+            cs->exception_index = -1;" in text
    vmexit = spec.patches[1].path.read_text()
    assert vmexit.startswith("From ") and "Subject: [PATCH] target/i386:" in vmexit
    assert "xen-locore.S" in vmexit and "Signed-off-by:" in vmexit
    assert "+    cpu_load_efer(env, env->efer & ~(MSR_EFER_LME | MSR_EFER_LMA));" in vmexit


@pytest.mark.parametrize(
    "choice",
    ["", "debian", "qemu-system-x86_64", "/nonexistent/qemu", "./relative-missing"],
)
def test_bad_qemu_choice_is_blocked(choice: str) -> None:
    with pytest.raises(BlockedError, match="--qemu"):
        check_choice(choice)


def test_non_executable_qemu_path_is_blocked(tmp_path: Path) -> None:
    f = tmp_path / "qemu"
    f.write_text("not a program")
    with pytest.raises(BlockedError, match="executable"):
        check_choice(str(f))
    f.chmod(0o755)
    assert check_choice(str(f)) == str(f)


def test_system_choice_is_debians_binary() -> None:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("Debian's qemu-system-x86_64 is not installed")
    q = resolve_qemu("system")
    assert q.origin == "system" and q.build_key is None
    assert q.version.startswith("QEMU emulator version")
    assert q.describe()["origin"] == "system"


def test_nested_host_describes_its_qemu(tmp_path: Path) -> None:
    q = QemuBinary(Path("/x/qemu"), "patched", "QEMU emulator version 7.2.22 (xenpvh)", "k", ("p",))
    h = NestedHost(accel="tcg", qemu_binary=q, state_file=tmp_path / "s.json")
    d = h.describe()
    assert d["kind"] == "nested" and d["accel"] == "tcg"
    assert d["qemu"] == {
        "origin": "patched",
        "path": "/x/qemu",
        "version": "QEMU emulator version 7.2.22 (xenpvh)",
        "build_key": "k",
        "patches": ["p"],
    }


@pytest.mark.host
def test_patched_qemu_builds_from_debian_source_and_is_cached(tmp_path: Path) -> None:
    """The real build: Debian's qemu source through the private apt, the fix applied as a
    commit, configure + ninja; the second call is a cache hit.  (Warm cache: milliseconds;
    cold: ~2.5 min on 2 cores.)"""
    first = build_qemu()
    assert first.origin == "patched" and first.path.is_file()
    assert os.access(first.path, os.X_OK)
    assert first.version.endswith("(xenpvh)")
    assert first.patches == (FIX, VMEXIT_FIX)
    again = build_qemu()
    assert again.path == first.path and again.build_key == first.build_key
    # The fix is in the built tree's history: the build log names the applied commit.
    log = first.path.parent / "build.log"
    assert "applied" in log.read_text()
    # It runs on its own and finds its firmware in Debian's packages: a PC machine with the
    # BIOS, the option ROMs and the devices the nested host uses starts and quits.
    proc = subprocess.run(
        [
            str(first.path),
            "-nodefaults",
            "-machine",
            "pc",
            "-accel",
            "tcg",
            "-cpu",
            "qemu64,+svm,+npt",
            "-display",
            "none",
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0",
            "-S",
            "-qmp",
            "stdio",
        ],
        input=b'{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n',
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b'"return"' in proc.stdout
