"""What to build: a source (git, local directory, Debian source package), a patch series and
an optional config fragment (`TreeSpec`), and what that resolved to (`TreeState`).

Pure data plus validation: nothing here touches the network or runs a command.  Every
string that later becomes an argv element (git URL and ref, Debian package and version) is
checked here, so a bad value is `blocked` before anything runs.

Specs come from a TOML file (`guestcfg/patches/xen/sample.toml`)::

    [source]                      # exactly one of git / path / debian
    debian = "xen"                # or: git = "https://..." + ref = "RELEASE-4.17.5"
    version = "4.17.5+72-g01140da4e8-1"   # optional: the newest version otherwise
    [patches]
    series = "series"             # a quilt series file, relative to the TOML file
    files = ["0001-x.patch"]      # or a list of patches (applied after the series)
    [config]
    fragment = "xen.config"       # a Kconfig fragment merged over defconfig

or from command-line strings (`TreeSpec.from_cli`): `debian:xen[=VERSION]`,
`git:URL[@REF]`, `URL[#REF]`, a directory, or a TOML file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from xenpvh.errors import BlockedError
from xenpvh.util.fs import sha256_file

PatchMethod = Literal["git-am", "patch"]

# Debian policy 5.6.1: lower case, digits, + - . ; at least two characters, alnum first.
DEBIAN_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
# Debian policy 5.6.12: [epoch:]upstream[-revision], upstream starts with a digit.
DEBIAN_VERSION = re.compile(r"(?:[0-9]+:)?[0-9][A-Za-z0-9.+~:-]*")
# URL schemes git may fetch from.  Anything else (ext::, fd::, a leading '-') could run a
# command or be read as an option, so it is refused before git sees it.
GIT_SCHEMES = ("https://", "http://", "git://", "ssh://", "file://")
SCP_LIKE = re.compile(r"[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+")
# A conservative subset of git-check-ref-format(1), plus full/short commit ids.
GIT_REF = re.compile(r"(?!-)(?!.*\.\.)(?!.*@\{)[A-Za-z0-9._/+-]+(?<![./])")
PATCH_SUFFIXES = (".patch", ".diff", ".mbox")
# `git format-patch` starts each mail with "From <sha> Mon Sep 17 00:00:00 2001"; any mbox
# starts with "From " (no colon).  DEP-3 headers start with "From:" and are plain diffs.
MBOX_FIRST_LINE = re.compile(r"From \S+ ")


@dataclass(frozen=True)
class GitSource:
    """A git repository and an optional ref (branch, tag or commit); HEAD when None."""

    url: str
    ref: str | None = None
    kind: ClassVar[str] = "git"

    def __post_init__(self) -> None:
        check_git_url(self.url)
        if self.ref is not None:
            check_git_ref(self.ref)

    def describe(self) -> str:
        return f"git {self.url}" + (f" @ {self.ref}" if self.ref else "")


@dataclass(frozen=True)
class LocalSource:
    """A directory on this machine (a git work tree or a plain unpacked tree)."""

    path: Path
    kind: ClassVar[str] = "local"

    def describe(self) -> str:
        return f"local {self.path}"


@dataclass(frozen=True)
class DebianSource:
    """A Debian source package, fetched with `apt-get source` through a private apt
    configuration; the newest version the release's mirrors offer when `version` is None."""

    package: str
    version: str | None = None
    kind: ClassVar[str] = "debian"

    def __post_init__(self) -> None:
        check_debian_package(self.package)
        if self.version is not None:
            check_debian_version(self.version)

    def describe(self) -> str:
        return f"debian {self.package}" + (f" {self.version}" if self.version else "")


Source = GitSource | LocalSource | DebianSource


@dataclass(frozen=True)
class Patch:
    """One patch file.  `strip` is the -pN level (quilt series `-p0` lines)."""

    path: Path
    strip: int = 1

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def method(self) -> PatchMethod:
        """`git-am` for mbox/format-patch mails (keeps author and message), `patch` for
        plain and DEP-3 diffs (applied with patch(1), then committed under their name)."""
        try:
            with self.path.open("rb") as f:
                first = f.readline().decode("utf-8", "replace")
        except OSError as exc:
            raise BlockedError(f"patch {self.path} cannot be read: {exc}") from exc
        return "git-am" if MBOX_FIRST_LINE.match(first) else "patch"

    def sha256(self) -> str:
        try:
            return sha256_file(self.path)
        except OSError as exc:
            raise BlockedError(f"patch {self.path} cannot be read: {exc}") from exc

    def record(self) -> dict[str, Any]:
        """What a resolved state (and so the cache key) records about this patch: the
        content, strip level and name; not the path, so a moved series still hits."""
        return {
            "name": self.name,
            "sha256": self.sha256(),
            "strip": self.strip,
            "method": self.method,
        }


@dataclass(frozen=True)
class TreeSpec:
    """A source plus the patches to apply in order and an optional config fragment."""

    source: Source
    patches: tuple[Patch, ...] = ()
    config_fragment: Path | None = None

    def describe(self) -> str:
        text = self.source.describe()
        if self.patches:
            text += f" + {len(self.patches)} patch" + ("es" if len(self.patches) > 1 else "")
        if self.config_fragment:
            text += f" + config {self.config_fragment.name}"
        return text

    @classmethod
    def from_toml(cls, path: Path | str) -> TreeSpec:
        """Load a spec file; relative paths in it are relative to the file."""
        path = Path(path).absolute()
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise BlockedError(f"{path}: cannot read tree spec: {exc}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise BlockedError(f"{path}: not valid TOML: {exc}") from exc
        return _spec_from_mapping(data, path)

    @classmethod
    def from_cli(
        cls,
        tree: str,
        patches: Sequence[str | Path] | None = None,
        config: str | Path | None = None,
    ) -> TreeSpec:
        """A spec from command-line strings.

        `tree`: `debian:PKG[=VERSION]`, `git:URL[@REF]`, `URL[#REF]` (https, git, ssh ...),
        a TOML spec file, or a local directory.  `patches`: series files, patch
        directories (their `series`, else their *.patch/*.diff in name order) or single
        patch files, applied after any patches of a TOML spec.  `config`: a fragment that
        replaces the TOML spec's.
        """
        base_patches: tuple[Patch, ...] = ()
        fragment: Path | None = None
        candidate = Path(tree)
        if tree.endswith(".toml") and candidate.is_file():
            loaded = cls.from_toml(candidate)
            source: Source = loaded.source
            base_patches, fragment = loaded.patches, loaded.config_fragment
        else:
            source = parse_source(tree)
        extra: list[Patch] = []
        for arg in patches or ():
            extra.extend(patches_from_path(Path(arg)))
        if config is not None:
            fragment = _existing(Path(config), "config fragment")
        return cls(source, (*base_patches, *extra), fragment)


@dataclass(frozen=True)
class TreeState:
    """What a spec resolved to, exactly: the cache key and the manifest are built from it.

    `identity`: git `{"url", "ref", "commit"}`; local `{"path", "content"}` (plus `commit`
    for a git work tree); debian `{"package", "version"}`.  `patches`: each patch's
    `Patch.record()`.  `config`: the fragment's text.
    """

    kind: str
    identity: dict[str, str]
    patches: tuple[dict[str, Any], ...] = ()
    config: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "identity": dict(self.identity),
            "patches": [dict(p) for p in self.patches],
            "config": self.config,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TreeState:
        return cls(
            str(data["kind"]),
            {str(k): str(v) for k, v in data["identity"].items()},
            tuple(dict(p) for p in data.get("patches", ())),
            data.get("config"),
        )

    def describe(self) -> str:
        ident = self.identity
        if self.kind == "debian":
            text = f"debian {ident.get('package')} {ident.get('version')}"
        elif self.kind == "git":
            text = f"git {ident.get('url')} {ident.get('commit', '')[:12]}"
        else:
            text = f"local {ident.get('path')} {ident.get('content', '')[:12]}"
        if self.patches:
            text += " + " + ", ".join(str(p.get("name")) for p in self.patches)
        return text


# -- validation ------------------------------------------------------------------------------


def check_debian_package(name: str) -> str:
    if not isinstance(name, str) or not DEBIAN_PACKAGE.fullmatch(name):
        raise BlockedError(f"{name!r} is not a Debian source package name")
    return name


def check_debian_version(version: str) -> str:
    if not isinstance(version, str) or not DEBIAN_VERSION.fullmatch(version):
        raise BlockedError(f"{version!r} is not a Debian version")
    return version


def check_git_url(url: str) -> str:
    """A URL git will fetch from without reading it as an option or a helper command."""
    ok = (
        isinstance(url, str)
        and bool(url)
        and not url.startswith("-")
        and not any(c.isspace() or ord(c) < 32 for c in url)
        and (
            url.startswith(GIT_SCHEMES)
            or bool(SCP_LIKE.fullmatch(url))
            or url.startswith(("/", "./", "../"))
        )
    )
    if not ok:
        raise BlockedError(
            f"git URL {url!r} is not usable (want https://, http://, git://, ssh://, "
            "file://, user@host:path or an absolute path)"
        )
    return url


def check_git_ref(ref: str) -> str:
    if not isinstance(ref, str) or not GIT_REF.fullmatch(ref) or ref.endswith(".lock"):
        raise BlockedError(f"git ref {ref!r} is not usable")
    return ref


# -- parsing ---------------------------------------------------------------------------------


def parse_source(text: str) -> Source:
    """`debian:PKG[=VERSION]`, `git:URL[@REF]`, `URL[#REF]`, or a local directory."""
    if text.startswith("debian:"):
        package, _, version = text.removeprefix("debian:").partition("=")
        return DebianSource(package, version or None)
    if text.startswith("git:"):
        url, ref = _split_git_at(text.removeprefix("git:"))
        if "#" in url:
            url, _, hash_ref = url.partition("#")
            ref = ref or hash_ref or None
        return GitSource(url, ref)
    if text.startswith(GIT_SCHEMES) or SCP_LIKE.fullmatch(text.partition("#")[0]):
        url, _, ref = text.partition("#")
        return GitSource(url, ref or None)
    path = Path(text)
    if not path.exists():
        raise BlockedError(f"source tree {path} does not exist")
    if not path.is_dir():
        raise BlockedError(f"source tree {path} is not a directory")
    return LocalSource(path.resolve())


def _split_git_at(text: str) -> tuple[str, str | None]:
    """Split `URL@REF` at the last '@' unless that '@' belongs to the URL (`git@host:p`,
    `ssh://user@host/p`): a ref has no ':' and the URL part must have a path."""
    url, sep, ref = text.rpartition("@")
    if not sep or not ref or ":" in ref:
        return text, None
    after_scheme = url.split("://", 1)[1] if "://" in url else url
    if "/" not in after_scheme and ":" not in after_scheme:
        return text, None
    return url, ref


def read_series(series: Path | str) -> tuple[Patch, ...]:
    """A quilt series file: one patch per line, optional `-pN`, `#` comments, blank lines.
    Patch names are relative to the series file's directory."""
    series = Path(series).absolute()
    try:
        lines = series.read_text().splitlines()
    except OSError as exc:
        raise BlockedError(f"series file {series} cannot be read: {exc}") from exc
    patches: list[Patch] = []
    for lineno, raw in enumerate(lines, 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        name, options = words[0], words[1:]
        strip = 1
        where = f"{series}:{lineno}"
        it = iter(options)
        for opt in it:
            if re.fullmatch(r"-p[0-9]+", opt):
                strip = int(opt[2:])
            elif opt == "-p":
                level = next(it, "")
                if not level.isdigit():
                    raise BlockedError(f"{where}: -p needs a number")
                strip = int(level)
            else:
                raise BlockedError(f"{where}: unsupported option {opt!r}")
        path = series.parent / name
        if not path.is_file():
            raise BlockedError(f"{where}: patch {path} does not exist")
        patches.append(Patch(path, strip))
    return tuple(patches)


def patches_from_path(path: Path) -> tuple[Patch, ...]:
    """A patch argument: a directory (its `series`, else its patches in name order), a
    series file, or one patch file."""
    path = path.absolute()
    if not path.exists():
        raise BlockedError(f"patch series {path} does not exist")
    if path.is_dir():
        if (path / "series").is_file():
            return read_series(path / "series")
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in PATCH_SUFFIXES)
        if not found:
            raise BlockedError(f"patch directory {path} has no series file and no patches")
        return tuple(Patch(p) for p in found)
    if path.name == "series" or path.suffix == ".series":
        return read_series(path)
    if path.suffix in PATCH_SUFFIXES or _looks_like_diff(path):
        return (Patch(path),)
    return read_series(path)


def _looks_like_diff(path: Path) -> bool:
    try:
        head = path.read_bytes()[:65536].decode("utf-8", "replace")
    except OSError:
        return False
    return bool(MBOX_FIRST_LINE.match(head)) or bool(
        re.search(r"^(diff --git |--- \S)", head, re.MULTILINE)
    )


def _existing(path: Path, what: str) -> Path:
    path = path.absolute()
    if not path.is_file():
        raise BlockedError(f"{what} {path} does not exist")
    return path


# -- TOML ------------------------------------------------------------------------------------

_SOURCE_KEYS = ("git", "ref", "path", "debian", "version")
_TABLES: dict[str, tuple[str, ...]] = {
    "source": _SOURCE_KEYS,
    "patches": ("series", "files"),
    "config": ("fragment",),
}


def _spec_from_mapping(data: Mapping[str, Any], path: Path) -> TreeSpec:
    base = path.parent

    def bad(key: str, message: str) -> BlockedError:
        return BlockedError(f"{path}: {key}: {message}")

    for table, value in data.items():
        if table not in _TABLES:
            raise bad(table, f"unknown table (known: {', '.join(_TABLES)})")
        if not isinstance(value, dict):
            raise bad(table, "must be a table")
        for key in value:
            if key not in _TABLES[table]:
                raise bad(f"{table}.{key}", f"unknown key (known: {', '.join(_TABLES[table])})")
    src = data.get("source")
    if src is None:
        raise BlockedError(f"{path}: missing [source] table")
    for key, value in src.items():
        if not isinstance(value, str):
            raise bad(f"source.{key}", f"must be a string, got {value!r}")
    kinds = [k for k in ("git", "path", "debian") if k in src]
    if len(kinds) != 1:
        raise bad("source", "needs exactly one of git, path, debian")
    kind = kinds[0]
    _only(src, kind, path)
    try:
        source: Source
        if kind == "git":
            source = GitSource(src["git"], src.get("ref"))
        elif kind == "debian":
            source = DebianSource(src["debian"], src.get("version"))
        else:
            local = base / src["path"]
            if not local.is_dir():
                raise bad("source.path", f"{local} does not exist or is not a directory")
            source = LocalSource(local.resolve())
    except BlockedError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise bad(f"source.{kind}", str(exc)) from exc

    patches: list[Patch] = []
    ptable = data.get("patches", {})
    if "series" in ptable:
        if not isinstance(ptable["series"], str):
            raise bad("patches.series", "must be a string")
        series = base / ptable["series"]
        if not series.is_file():
            raise bad("patches.series", f"{series} does not exist")
        patches.extend(read_series(series))
    files = ptable.get("files", [])
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise bad("patches.files", "must be a list of strings")
    for name in files:
        file = base / name
        if not file.is_file():
            raise bad("patches.files", f"{file} does not exist")
        patches.append(Patch(file))

    fragment: Path | None = None
    if "fragment" in data.get("config", {}):
        value = data["config"]["fragment"]
        if not isinstance(value, str):
            raise bad("config.fragment", "must be a string")
        fragment = base / value
        if not fragment.is_file():
            raise bad("config.fragment", f"{fragment} does not exist")
    return TreeSpec(source, tuple(patches), fragment)


def _only(src: Mapping[str, Any], kind: str, path: Path) -> None:
    """Refuse keys that belong to another kind (`version` with `git`, `ref` with `debian`)."""
    allowed = {"git": {"git", "ref"}, "debian": {"debian", "version"}, "path": {"path"}}[kind]
    for key in src:
        if key not in allowed:
            raise BlockedError(f"{path}: source.{key}: not valid with source.{kind}")


def patch_records(patches: Iterable[Patch]) -> tuple[dict[str, Any], ...]:
    return tuple(p.record() for p in patches)


__all__ = [
    "DebianSource",
    "GitSource",
    "LocalSource",
    "Patch",
    "PatchMethod",
    "Source",
    "TreeSpec",
    "TreeState",
    "check_debian_package",
    "check_debian_version",
    "check_git_ref",
    "check_git_url",
    "parse_source",
    "patch_records",
    "patches_from_path",
    "read_series",
]
