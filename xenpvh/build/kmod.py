"""Kernel module dependencies without the kernel's tools: modules.dep when a tree has one, the
modules' own ELF `.modinfo` sections when it does not (Debian's linux-image packages ship no
modules.dep; depmod writes it at install time).

Names are folded as the kernel folds them: `xen-blkfront.ko.xz` is module `xen_blkfront`.
"""

from __future__ import annotations

import gzip
import lzma
import shutil
import struct
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from xenpvh.errors import BlockedError, BrokenError, XenpvhError

# Compressed forms of a module file, longest first so that ".ko.xz" wins over ".ko".
MODULE_SUFFIXES = (".ko.xz", ".ko.zst", ".ko.gz", ".ko")


def module_name(path: str) -> str:
    """`kernel/drivers/block/xen-blkfront.ko.xz` -> `xen_blkfront`."""
    base = path.rsplit("/", 1)[-1]
    for suffix in MODULE_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def plain_module_path(path: str) -> str:
    """The path a module has once decompressed (`x.ko.xz` -> `x.ko`)."""
    for suffix in MODULE_SUFFIXES[:-1]:
        if path.endswith(suffix):
            return path[: -len(suffix)] + ".ko"
    return path


def read_module(path: Path) -> bytes:
    """A module file's ELF bytes, decompressed: busybox insmod hands them to init_module(2),
    which takes plain ELF only."""
    data = path.read_bytes()
    name = path.name
    if name.endswith(".xz"):
        return lzma.decompress(data)
    if name.endswith(".gz"):
        return gzip.decompress(data)
    if name.endswith(".zst"):
        return unzstd(data, str(path))
    return data


def unzstd(data: bytes, what: str, *, invalid: type[XenpvhError] = BlockedError) -> bytes:
    """zstd-decompress `data` (named `what` in errors).  Corrupt data raises `invalid`:
    BlockedError for a tree we were given, BrokenError for a package we downloaded."""
    # Python 3.11 has no zstd; the zstd tool is in every distribution that compresses so.
    tool = shutil.which("zstd")
    if tool is None:
        raise BrokenError(f"{what} is zstd-compressed and the zstd tool is not installed")
    proc = subprocess.run([tool, "-d", "-c", "-q"], input=data, capture_output=True)
    if proc.returncode != 0:
        raise invalid(f"{what}: not valid zstd data: {proc.stderr.decode().strip()}")
    return proc.stdout


def modinfo(elf: bytes) -> dict[str, list[str]]:
    """The `key=value` strings of an ELF object's `.modinfo` section (keys may repeat:
    `alias`, `firmware`, ...)."""
    info: dict[str, list[str]] = {}
    for item in _section(elf, ".modinfo").split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            info.setdefault(key, []).append(value)
    return info


def _section(elf: bytes, wanted: str) -> bytes:
    """The contents of section `wanted` (empty if absent) of a 32/64-bit ELF of any
    endianness."""
    if elf[:4] != b"\x7fELF" or elf[4] not in (1, 2) or elf[5] not in (1, 2):
        raise BlockedError("not an ELF object (a kernel module must be one)")
    wide = elf[4] == 2
    order = "<" if elf[5] == 1 else ">"
    try:
        if wide:
            (shoff,) = struct.unpack_from(order + "Q", elf, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", elf, 0x3A)
            entry = order + "IIQQQQIIQQ"
        else:
            (shoff,) = struct.unpack_from(order + "I", elf, 0x20)
            shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", elf, 0x2E)
            entry = order + "IIIIIIIIII"
        headers = [struct.unpack_from(entry, elf, shoff + i * shentsize) for i in range(shnum)]
        names_at, names_len = headers[shstrndx][4], headers[shstrndx][5]
        names = elf[names_at : names_at + names_len]
        for sh_name, sh_type, _flags, _addr, offset, size, *_ in headers:
            end = names.index(b"\0", sh_name)
            if names[sh_name:end].decode(errors="replace") == wanted:
                # SHT_NOBITS occupies no file bytes.
                return b"" if sh_type == 8 else elf[offset : offset + size]
    except (struct.error, IndexError, ValueError) as e:
        raise BlockedError(f"truncated or malformed ELF object: {e}") from e
    return b""


@dataclass
class ModuleDb:
    """Where each module of one kernel lives (relative to /lib/modules/RELEASE), what it
    depends on, and which modules are built in (nothing to load)."""

    paths: dict[str, str]
    builtin: frozenset[str] = frozenset()
    deps: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Set for a tree without modules.dep: dependencies are read from the modules on demand.
    root: Path | None = None

    @classmethod
    def from_modules_dep(cls, text: str, builtin: Iterable[str] = ()) -> ModuleDb:
        """Parse modules.dep (`path: dep-path dep-path ...` per line)."""
        paths: dict[str, str] = {}
        deps: dict[str, tuple[str, ...]] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            path, sep, rest = line.partition(":")
            if not sep or not path.strip() or " " in path.strip():
                raise BlockedError(f"modules.dep line {number}: expected 'path: deps', {line!r}")
            name = module_name(path.strip())
            paths[name] = path.strip()
            deps[name] = tuple(module_name(d) for d in rest.split())
        return cls(paths, frozenset(module_name(b) for b in builtin), deps)

    @classmethod
    def from_tree(cls, moddir: Path) -> ModuleDb:
        """The modules of /lib/modules/RELEASE as unpacked at `moddir`."""
        builtin_file = moddir / "modules.builtin"
        builtin = builtin_file.read_text().split() if builtin_file.is_file() else []
        dep_file = moddir / "modules.dep"
        if dep_file.is_file():
            return cls.from_modules_dep(dep_file.read_text(), builtin)
        paths: dict[str, str] = {}
        for p in sorted(moddir.rglob("*.ko*")):
            rel = p.relative_to(moddir).as_posix()
            if p.is_file() and rel.endswith(MODULE_SUFFIXES):
                paths.setdefault(module_name(rel), rel)
        return cls(paths, frozenset(module_name(b) for b in builtin), root=moddir)

    def dependencies(self, name: str) -> tuple[str, ...]:
        """The modules `name` needs loaded first (its direct dependencies)."""
        if name not in self.deps and self.root is not None and name in self.paths:
            info = modinfo(read_module(self.root / self.paths[name]))
            listed = ",".join(info.get("depends", []))
            self.deps[name] = tuple(module_name(d) for d in listed.split(",") if d)
        return self.deps.get(name, ())

    def load_order(self, wanted: Iterable[str]) -> list[str]:
        """Module names to insmod, dependencies before their users, in `wanted`'s order
        otherwise; built-in modules are left out."""
        order: list[str] = []
        for name in wanted:
            self._visit(module_name(name), None, [], order)
        return order

    def _visit(self, name: str, user: str | None, stack: list[str], order: list[str]) -> None:
        if name in order or name in self.builtin:
            return
        if name in stack:
            cycle = [*stack[stack.index(name) :], name]
            raise BlockedError(f"module dependency cycle: {' -> '.join(cycle)}")
        if name not in self.paths:
            needed = f"needed by {user}" if user else "asked for"
            raise BlockedError(f"module {name!r} not found ({needed})")
        stack.append(name)
        for dep in self.dependencies(name):
            self._visit(dep, name, stack, order)
        stack.pop()
        order.append(name)
