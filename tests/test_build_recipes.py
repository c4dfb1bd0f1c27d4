"""Recipe commands (xen, linux, freebsd) argv by argv, and Kconfig fragment merging."""

from __future__ import annotations

import pytest

from xenpvh.build.recipes import (
    FreeBSDRecipe,
    LinuxRecipe,
    XenRecipe,
    merge_kconfig,
    parse_kconfig,
    unapplied,
)


def test_xen_default_commands() -> None:
    recipe = XenRecipe()
    assert recipe.configure_commands(fragment=False) == [["make", "-C", "xen", "defconfig"]]
    assert recipe.configure_commands(fragment=True) == [
        ["make", "-C", "xen", "defconfig"],
        ["make", "-C", "xen", "olddefconfig"],
    ]
    assert recipe.build_commands() == [["make", "-C", "xen", "-j2"]]
    assert recipe.artifacts()["image"] == "xen/xen"
    assert recipe.artifacts()["xen_gz"] == "xen/xen.gz"
    assert recipe.version_command() == ["make", "-s", "-C", "xen", "xenversion"]
    key = "0123456789abcdef" * 4
    assert recipe.stored_name("xen_gz", "4.17.5", key) == "xen-4.17.5-0123456789ab.gz"
    assert recipe.stored_name("image", "4.17.5", key) == "xen-4.17.5-0123456789ab"


def test_xen_tools_only_on_request() -> None:
    commands = XenRecipe(jobs=1, with_tools=True).build_commands()
    assert commands[0] == ["make", "-C", "xen", "-j1"]
    assert commands[1][0] == "./configure"
    assert "--disable-stubdom" in commands[1]
    assert commands[2] == ["make", "-j1", "-C", "tools"]
    assert XenRecipe().options() != XenRecipe(with_tools=True).options()


def test_linux_commands_always_merge_the_pvh_fragment() -> None:
    recipe = LinuxRecipe()
    assert recipe.configure_commands(fragment=False) == [
        ["make", "x86_64_defconfig"],
        ["make", "olddefconfig"],
    ]
    assert recipe.build_commands() == [["make", "-j2", "bzImage"]]
    wanted = parse_kconfig(recipe.base_fragment)
    for option in ("CONFIG_PVH", "CONFIG_XEN_PVH", "CONFIG_HVC_XEN"):
        assert wanted[option] == "y"
    assert wanted["CONFIG_XEN_BLKDEV_FRONTEND"] == "y"
    assert wanted["CONFIG_XEN_NETDEV_FRONTEND"] == "y"


def test_freebsd_native_command() -> None:
    recipe = FreeBSDRecipe(mode="native", objdir="/var/obj")
    assert recipe.build_commands("/usr/src") == [
        ["env", "MAKEOBJDIRPREFIX=/var/obj", "make", "-C", "/usr/src", "TARGET=amd64",
         "TARGET_ARCH=amd64", "-j2", "buildkernel", "KERNCONF=GENERIC", "NO_MODULES=yes"]
    ]  # fmt: skip
    assert recipe.kernel_path("/usr/src") == "/var/obj/usr/src/amd64.amd64/sys/GENERIC/kernel"


def test_freebsd_cross_command_uses_make_py_and_debian_llvm() -> None:
    recipe = FreeBSDRecipe(mode="cross", objdir="/tmp/o")
    make = [
        "python3",
        "/src/freebsd/tools/build/make.py",
        "--cross-bindir=/usr/lib/llvm-14/bin",
        "--no-clean",
        "TARGET=amd64",
        "TARGET_ARCH=amd64",
        "-j2",
        "-DWITHOUT_CLANG",
        "-DWITHOUT_LLD",
        "-DWITHOUT_LLDB",
        "-DWITHOUT_LLVM_BINUTILS",
    ]
    assert recipe.build_commands("/src/freebsd", fragment=True) == [
        ["env", "MAKEOBJDIRPREFIX=/tmp/o",
         "BROKEN_TESTS=opt-debug-x-trace cmd-interrupt deptgt-interrupt", *make,
         "kernel-toolchain"],
        ["env", "MAKEOBJDIRPREFIX=/tmp/o", *make, "buildkernel", "KERNCONF=XENPVH",
         "NO_MODULES=yes"],
    ]  # fmt: skip
    path, text = recipe.fragment_config("options XENHVM\n")
    assert path == "sys/amd64/conf/XENPVH"
    assert text == "include GENERIC\nident XENPVH\noptions XENHVM\n"


def test_merge_kconfig_fragment_wins_and_not_set_is_understood() -> None:
    base = "# comment\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\n"
    merged = merge_kconfig(base, "CONFIG_A=n\nCONFIG_B=y\n# CONFIG_C is not set\nCONFIG_D=42\n")
    values = parse_kconfig(merged)
    assert values == {"CONFIG_A": "n", "CONFIG_B": "y", "CONFIG_C": "n", "CONFIG_D": "42"}
    assert merged.count("CONFIG_B") == 1
    assert "# comment" in merged


@pytest.mark.parametrize(
    ("final", "expected"),
    [
        ("CONFIG_A=y\n# CONFIG_B is not set\n", {}),
        ("CONFIG_A=m\n", {"CONFIG_A": ("y", "m")}),
        ("# CONFIG_B is not set\n", {"CONFIG_A": ("y", "n")}),
        ("CONFIG_A=y\nCONFIG_B=y\n", {"CONFIG_B": ("n", "y")}),
    ],
)
def test_unapplied_options_are_detected(final: str, expected: dict[str, tuple[str, str]]) -> None:
    assert unapplied("CONFIG_A=y\n# CONFIG_B is not set\n", final) == expected
