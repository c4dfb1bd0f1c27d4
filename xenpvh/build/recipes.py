"""Build recipes: the exact commands that configure and build Xen, Linux and FreeBSD trees.

A recipe is data plus argv lists; it never runs anything.  The builder (`builder.build_tree`)
runs a recipe's commands in a fetched, patched tree; FreeBSD kernels are built by
`freebsd.py` (natively over ssh or cross on Debian) from `FreeBSDRecipe`'s commands.

Configure protocol: the first of `configure_commands()` writes the base config (a defconfig);
the builder then merges the Kconfig fragment into `config_path` (the fragment wins) and runs
the rest (olddefconfig) to settle dependencies, then checks that every option of the
fragment survived (`unapplied`): an option Kconfig dropped is named, never silently lost.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from xenpvh.errors import BlockedError

# Bump a recipe's version when its commands or artifacts change in a way the cache key would
# not otherwise see (the key covers the tree, patches, config, toolchain and options).
XEN_RECIPE_VERSION = 1
LINUX_RECIPE_VERSION = 1
FREEBSD_RECIPE_VERSION = 2
QEMU_RECIPE_VERSION = 1


class Recipe(Protocol):
    """What `builder.build_tree` needs from a recipe."""

    name: str
    version: int
    config_path: str
    required_tools: tuple[str, ...]

    def options(self) -> dict[str, Any]:
        """Choices that change the output (part of the cache key); never -j."""
        ...

    def configure_commands(self, *, fragment: bool) -> list[list[str]]: ...

    def build_commands(self) -> list[list[str]]: ...

    def version_command(self) -> list[str]:
        """Prints the built tree's version (last output line)."""
        ...

    def artifacts(self) -> dict[str, str]:
        """Artifact name -> path relative to the tree; "image" is the bootable one."""
        ...

    def stored_name(self, artifact: str, version: str, key: str) -> str:
        """The artifact's file name in the cache entry."""
        ...


# --------------------------------------------------------------------------- Kconfig

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_NOT_SET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


def _parse_line(line: str) -> tuple[str, str] | None:
    line = line.strip()
    if m := _SET.match(line):
        return m.group(1), m.group(2)
    if m := _NOT_SET.match(line):
        return m.group(1), "n"
    return None


def parse_kconfig(text: str) -> dict[str, str]:
    """Option -> value of a .config or fragment; `# CONFIG_X is not set` reads as "n".

    Values keep their .config spelling (strings with their quotes); a later line wins, as in
    Kconfig itself.
    """
    values: dict[str, str] = {}
    for line in text.splitlines():
        parsed = _parse_line(line)
        if parsed is not None:
            values[parsed[0]] = parsed[1]
    return values


def _render(option: str, value: str) -> str:
    # Kconfig's own spelling of "n": olddefconfig reads both, but this one diffs cleanly.
    return f"# {option} is not set" if value == "n" else f"{option}={value}"


def merge_kconfig(base: str, fragment: str) -> str:
    """`base` with `fragment` merged in: the fragment wins.

    An option of the fragment replaces the base's line in place (each option appears once);
    options new to the base are appended in the fragment's order.  Comments stay.
    """
    wanted = parse_kconfig(fragment)
    out: list[str] = []
    seen: set[str] = set()
    for line in base.splitlines():
        parsed = _parse_line(line)
        if parsed is None:
            out.append(line)
            continue
        option = parsed[0]
        if option in seen:
            continue  # a duplicate in base: the merged value is already written
        seen.add(option)
        out.append(_render(option, wanted[option]) if option in wanted else line)
    out.extend(_render(opt, val) for opt, val in wanted.items() if opt not in seen)
    return "\n".join(out) + "\n"


def unapplied(fragment: str, final: str) -> dict[str, tuple[str, str]]:
    """Options of `fragment` whose value in the final .config differs: option -> (want, got).

    An option absent from the final config is "n" (Kconfig drops options whose dependencies
    are off, and unknown options altogether).
    """
    got = parse_kconfig(final)
    return {
        option: (want, got.get(option, "n"))
        for option, want in parse_kconfig(fragment).items()
        if got.get(option, "n") != want
    }


def describe_unapplied(missing: dict[str, tuple[str, str]]) -> str:
    return ", ".join(f"{opt}={want} (got {got})" for opt, (want, got) in missing.items())


# --------------------------------------------------------------------------- Xen


@dataclass(frozen=True)
class XenRecipe:
    """The hypervisor (always) and the tools (only on request: they take far longer).

    `make -C xen` produces `xen/xen` (the multiboot image, an ELF32 that QEMU's -kernel and
    GRUB's multiboot2 boot) and `xen/xen.gz` (what distributions install to /boot).
    """

    jobs: int = 2
    with_tools: bool = False
    name: str = "xen"
    version: int = XEN_RECIPE_VERSION
    config_path: str = "xen/.config"

    @property
    def required_tools(self) -> tuple[str, ...]:
        # The hypervisor's Kconfig ships its generated parser: flex/bison only for the tools.
        base = ("make", "gcc", "ld", "python3", "gzip")
        return (*base, "flex", "bison", "pkg-config", "iasl") if self.with_tools else base

    def options(self) -> dict[str, Any]:
        return {"with_tools": self.with_tools}

    def configure_commands(self, *, fragment: bool) -> list[list[str]]:
        commands = [["make", "-C", "xen", "defconfig"]]
        if fragment:
            commands.append(["make", "-C", "xen", "olddefconfig"])
        return commands

    def build_commands(self) -> list[list[str]]:
        commands = [["make", "-C", "xen", f"-j{self.jobs}"]]
        if self.with_tools:
            commands += [
                # No stubdoms, docs or bundled QEMU/firmware: those download sources at build
                # time; the system's QEMU serves device models.
                [
                    "./configure",
                    "--disable-stubdom",
                    "--disable-docs",
                    "--disable-qemu-traditional",
                    "--with-system-qemu=/usr/bin/qemu-system-i386",
                    "--disable-seabios",
                    "--disable-ipxe",
                    "--disable-rombios",
                ],
                ["make", f"-j{self.jobs}", "-C", "tools"],
                # Xen's own install-to-dist/install target (DESTDIR set by its Makefile).
                ["make", "dist-tools"],
            ]
        return commands

    def version_command(self) -> list[str]:
        return ["make", "-s", "-C", "xen", "xenversion"]

    def artifacts(self) -> dict[str, str]:
        artifacts = {"image": "xen/xen", "xen_gz": "xen/xen.gz", "config": "xen/.config"}
        if self.with_tools:
            artifacts["tools"] = "dist/install"
        return artifacts

    def stored_name(self, artifact: str, version: str, key: str) -> str:
        # xen-<version>-<key12>[.gz]: provisioning accepts this name and it becomes a GRUB
        # menu title, so the build is identifiable on a lab box.
        stem = f"xen-{version}-{key[:12]}"
        suffix = {"image": "", "xen_gz": ".gz", "config": ".config", "tools": ".tools"}
        return stem + suffix.get(artifact, f".{artifact}")


# --------------------------------------------------------------------------- QEMU

# Where Debian's packages (qemu-system-data, seabios, ipxe-qemu) install the firmware a PC
# machine loads: the BIOS, the multiboot/linuxboot option ROMs, virtio-net's boot ROM.  Our
# build reads them from there instead of building its own (the dfsg tree has no blobs).
DEBIAN_QEMU_FIRMWARE = ("/usr/share/qemu", "/usr/share/seabios", "/usr/lib/ipxe/qemu")

# Only what the nested host uses: TCG (and KVM where usable), user networking (slirp) for
# the ssh port forward.  Block formats, QMP, savevm/loadvm, multiboot and virtio are core.
QEMU_FEATURES = ("--enable-tcg", "--enable-kvm", "--enable-slirp")


@dataclass(frozen=True)
class QemuRecipe:
    """`qemu-system-x86_64` alone, from a QEMU tree (Debian's `qemu` source package).

    `--without-default-features` turns off every optional library (display, audio, USB,
    network storage), so the build needs only glib, pixman, zlib, libfdt and libslirp and
    takes ~2,000 compile steps instead of Debian's ~10,000.
    """

    jobs: int = 2
    name: str = "qemu"
    version: int = QEMU_RECIPE_VERSION
    config_path: str = "build/config-host.mak"
    pkgversion: str = "xenpvh"
    required_tools: tuple[str, ...] = ("cc", "python3", "meson", "ninja", "pkg-config")

    def options(self) -> dict[str, Any]:
        return {"configure": self.configure_argv()}

    def configure_argv(self) -> list[str]:
        return [
            "./configure",
            "--target-list=x86_64-softmmu",
            "--without-default-features",
            *QEMU_FEATURES,
            "--disable-docs",
            # A newer compiler's new warnings must not fail a build of an old release.
            "--disable-werror",
            f"--with-pkgversion={self.pkgversion}",
            f"--firmwarepath={':'.join(DEBIAN_QEMU_FIRMWARE)}",
        ]

    def configure_commands(self, *, fragment: bool) -> list[list[str]]:
        if fragment:
            # QEMU's configure takes flags, not a Kconfig fragment; a silent ignore would
            # build something other than what was asked.
            raise BlockedError("a QEMU build takes no config fragment (its features are flags)")
        return [self.configure_argv()]

    def build_commands(self) -> list[list[str]]:
        return [["ninja", "-C", "build", f"-j{self.jobs}", "qemu-system-x86_64"]]

    def version_command(self) -> list[str]:
        return ["cat", "VERSION"]

    def artifacts(self) -> dict[str, str]:
        return {"image": "build/qemu-system-x86_64"}

    def stored_name(self, artifact: str, version: str, key: str) -> str:
        return f"qemu-system-x86_64-{version}-{key[:12]}"


# --------------------------------------------------------------------------- Linux

# What a Linux guest needs to boot as PVH and reach its disks, vifs and console.  Merged into
# every Linux build (the user's fragment wins), so a defconfig tree boots on Xen.
LINUX_PVH_FRAGMENT = """\
CONFIG_HYPERVISOR_GUEST=y
CONFIG_PARAVIRT=y
CONFIG_XEN=y
CONFIG_PVH=y
CONFIG_XEN_PVH=y
CONFIG_HVC_XEN=y
CONFIG_HVC_XEN_FRONTEND=y
CONFIG_XEN_BLKDEV_FRONTEND=y
CONFIG_XEN_NETDEV_FRONTEND=y
CONFIG_BLK_DEV_INITRD=y
CONFIG_DEVTMPFS=y
CONFIG_DEVTMPFS_MOUNT=y
CONFIG_SMP=y
"""


@dataclass(frozen=True)
class LinuxRecipe:
    """A bzImage from x86_64_defconfig plus the PVH fragment (plus the user's fragment)."""

    jobs: int = 2
    name: str = "linux"
    version: int = LINUX_RECIPE_VERSION
    config_path: str = ".config"
    base_fragment: str = LINUX_PVH_FRAGMENT
    required_tools: tuple[str, ...] = ("make", "gcc", "ld", "flex", "bison", "bc", "perl")

    def options(self) -> dict[str, Any]:
        return {"base_fragment": self.base_fragment}

    def configure_commands(self, *, fragment: bool) -> list[list[str]]:
        # The PVH fragment is always merged, so olddefconfig always runs.
        return [["make", "x86_64_defconfig"], ["make", "olddefconfig"]]

    def build_commands(self) -> list[list[str]]:
        return [["make", f"-j{self.jobs}", "bzImage"]]

    def version_command(self) -> list[str]:
        return ["make", "-s", "kernelversion"]

    def artifacts(self) -> dict[str, str]:
        return {"image": "arch/x86/boot/bzImage", "config": ".config"}

    def stored_name(self, artifact: str, version: str, key: str) -> str:
        stem = f"vmlinuz-{version}-{key[:12]}"
        return stem if artifact == "image" else f"{stem}.{artifact}"


# --------------------------------------------------------------------------- FreeBSD

FREEBSD_FRAGMENT_KERNCONF = "XENPVH"
DEFAULT_FREEBSD_OBJDIR = "/tmp/xenpvh-freebsd-obj"
# Debian 12's LLVM: clang-14 and lld-14 install their unversioned names here.
DEBIAN_LLVM_BINDIR = "/usr/lib/llvm-14/bin"
# The cross build compiles with Debian's clang/lld: FreeBSD's own llvm is not built.
FREEBSD_CROSS_WITHOUT = (
    "-DWITHOUT_CLANG",
    "-DWITHOUT_LLD",
    "-DWITHOUT_LLDB",
    "-DWITHOUT_LLVM_BINUTILS",
)
# bmake bootstrap unit tests that fail on Debian for reasons of the host, not bmake's:
# opt-debug-x-trace under dash; cmd-interrupt and deptgt-interrupt send themselves SIGINT and
# fail when the build inherits an ignored SIGINT (nohup, `cmd &` in a script, CI runners).
BMAKE_BROKEN_TESTS = ("opt-debug-x-trace", "cmd-interrupt", "deptgt-interrupt")


@dataclass(frozen=True)
class FreeBSDRecipe:
    """`make buildkernel` natively on FreeBSD, or cross on Debian via tools/build/make.py.

    A config fragment becomes a kernel config `XENPVH` that includes GENERIC and adds the
    fragment's lines (FreeBSD's way of extending a kernel config).

    The cross build is two make.py runs: `kernel-toolchain` (bmake, config(8), the build
    tools), then `buildkernel`.  What a real 13.x tree needed on Debian 12:
    - make.py asks on stdin whether to clean unless told: `--no-clean` (the kernel's own
      object directory is still cleaned by buildkernel; the bootstrap tools are reused);
    - `-DWITHOUT_CLANG -DWITHOUT_LLD -DWITHOUT_LLDB -DWITHOUT_LLVM_BINUTILS`: Debian's
      clang/lld compile the kernel, so the toolchain stage must not build llvm-tblgen;
    - bmake's bootstrap runs its unit tests and `opt-debug-x-trace` fails when bmake's shell
      is dash (bmake's unit-tests/Makefile knows this of Ubuntu only, by /etc/os-release's
      NAME).  boot-strap unsets MAKEFLAGS, so no command-line variable gets through, but the
      environment does, and `BROKEN_TESTS+=` there appends to an environment BROKEN_TESTS.
      (With bash as bmake's shell instead, `job-output-null` fails.);
    - `NO_MODULES=yes` unless modules are asked for: a PVH boot needs the kernel alone.
    """

    mode: Literal["native", "cross"] = "native"
    objdir: str = DEFAULT_FREEBSD_OBJDIR
    kernconf: str = "GENERIC"
    jobs: int = 2
    target: str = "amd64"
    llvm_bindir: str = DEBIAN_LLVM_BINDIR
    modules: bool = False
    name: str = "freebsd"
    version: int = FREEBSD_RECIPE_VERSION
    extra_env: dict[str, str] = field(default_factory=dict)

    def conf_name(self, fragment: bool = False) -> str:
        return FREEBSD_FRAGMENT_KERNCONF if fragment else self.kernconf

    def build_commands(self, src: str, *, fragment: bool = False) -> list[list[str]]:
        env = ["env", f"MAKEOBJDIRPREFIX={self.objdir}"]
        env += [f"{k}={v}" for k, v in sorted(self.extra_env.items())]
        kernel = [f"KERNCONF={self.conf_name(fragment)}"]
        if not self.modules:
            kernel.append("NO_MODULES=yes")
        target = [f"TARGET={self.target}", f"TARGET_ARCH={self.target}", f"-j{self.jobs}"]
        if self.mode == "native":
            return [[*env, "make", "-C", src, *target, "buildkernel", *kernel]]
        make = [
            "python3",
            posixpath.join(src, "tools/build/make.py"),
            f"--cross-bindir={self.llvm_bindir}",
            "--no-clean",
            *target,
            *FREEBSD_CROSS_WITHOUT,
        ]
        bootstrap_env = [*env, f"BROKEN_TESTS={' '.join(BMAKE_BROKEN_TESTS)}"]
        return [
            [*bootstrap_env, *make, "kernel-toolchain"],
            [*env, *make, "buildkernel", *kernel],
        ]

    def kernel_path(self, src: str, *, fragment: bool = False) -> str:
        """Where buildkernel leaves the kernel: $MAKEOBJDIRPREFIX/<src>/<target>.<arch>/sys/."""
        obj = posixpath.join(self.objdir, posixpath.normpath(src).lstrip("/"))
        return posixpath.join(
            obj, f"{self.target}.{self.target}", "sys", self.conf_name(fragment), "kernel"
        )

    def fragment_config(self, fragment: str) -> tuple[str, str]:
        """(path relative to the tree, text) of the kernel config made from a fragment."""
        body = fragment if fragment.endswith("\n") or not fragment else fragment + "\n"
        name = FREEBSD_FRAGMENT_KERNCONF
        text = f"include {self.kernconf}\nident {name}\n{body}"
        return f"sys/{self.target}/conf/{name}", text


__all__ = [
    "DEBIAN_LLVM_BINDIR",
    "DEFAULT_FREEBSD_OBJDIR",
    "LINUX_PVH_FRAGMENT",
    "FreeBSDRecipe",
    "LinuxRecipe",
    "QemuRecipe",
    "Recipe",
    "XenRecipe",
    "describe_unapplied",
    "merge_kconfig",
    "parse_kconfig",
    "unapplied",
]
