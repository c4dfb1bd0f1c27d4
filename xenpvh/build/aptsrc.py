"""Debian source packages through a private apt configuration.

`apt-get source` needs deb-src entries, and a build machine usually has only `deb` ones.
Instead of editing /etc/apt (which a build tool has no business doing), xenpvh mirrors the
system's release entries as deb-src lines in a directory of its own and points every apt
call at it: its own source list and parts, lists, cache, state and preferences.  The system's
sources, lists and cache are never read for packages nor written; only apt.conf.d (proxies)
and the trusted keyrings are shared, as they should be.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from xenpvh.build.tree import check_debian_package, check_debian_version
from xenpvh.errors import BlockedError, BrokenError

ETC_APT = Path("/etc/apt")
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Source lists older than this are refreshed before a version is chosen.
LIST_MAX_AGE = 24 * 3600.0
# Suites that are not the release itself: updates, security, backports, proposed ...
_NOT_RELEASE = re.compile(r"[-/]")


@dataclass(frozen=True)
class Mirror:
    """One archive suite: URI, suite, components and the keyring that signs it."""

    uri: str
    suite: str
    components: tuple[str, ...] = ("main",)
    signed_by: str | None = None

    def deb_src_line(self, signed_by: str | None = None) -> str:
        """The one-line deb-src entry; `signed_by` overrides (an inline key saved to a file)."""
        key = signed_by if signed_by is not None else self.signed_by
        opts = f"[signed-by={key}] " if key else ""
        return " ".join(["deb-src", f"{opts}{self.uri}", self.suite, *self.components]).strip()


def system_mirrors(etc: Path = ETC_APT) -> tuple[Mirror, ...]:
    """The enabled `deb` entries of `etc`/sources.list and sources.list.d (*.list one-line,
    *.sources deb822), in apt's order.  deb-src-only and disabled entries are skipped."""
    mirrors: list[Mirror] = []
    main = etc / "sources.list"
    if main.is_file():
        mirrors.extend(_one_line(main.read_text()))
    parts = etc / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".list" and path.is_file():
                mirrors.extend(_one_line(path.read_text()))
            elif path.suffix == ".sources" and path.is_file():
                mirrors.extend(_deb822(path.read_text()))
    return tuple(_dedupe(mirrors))


def release_mirrors(mirrors: Iterable[Mirror], codename: str | None = None) -> tuple[Mirror, ...]:
    """The release suites only (not -updates, -security, -backports): a pinned version of a
    stable release's package stays there, and the default version is the release's own.
    With `codename`, only that release (third-party repositories have other suites)."""
    return tuple(
        m
        for m in mirrors
        if not _NOT_RELEASE.search(m.suite) and (codename is None or m.suite == codename)
    )


def _one_line(text: str) -> list[Mirror]:
    found: list[Mirror] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        kind, _, rest = line.partition(" ")
        if kind != "deb":
            continue
        options: dict[str, str] = {}
        rest = rest.strip()
        if rest.startswith("["):
            inside, _, rest = rest[1:].partition("]")
            for word in inside.split():
                key, _, value = word.partition("=")
                options[key.lower()] = value
        words = rest.split()
        if len(words) < 2:
            continue
        found.append(Mirror(words[0], words[1], tuple(words[2:]), options.get("signed-by")))
    return found


def _deb822(text: str) -> list[Mirror]:
    found: list[Mirror] = []
    for stanza in _stanzas(text):
        if stanza.get("enabled", "yes").strip().lower() in ("no", "false", "0"):
            continue
        if "deb" not in stanza.get("types", "").split():
            continue
        signed = stanza.get("signed-by", "").strip() or None
        components = tuple(stanza.get("components", "").split())
        for uri in stanza.get("uris", "").split():
            for suite in stanza.get("suites", "").split():
                found.append(Mirror(uri, suite, components, signed))
    return found


def _stanzas(text: str) -> list[dict[str, str]]:
    """deb822 paragraphs: `Field: value`, continuation lines start with white space, `#`
    lines are comments, blank lines separate paragraphs.  Field names are lower-cased."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in [*text.splitlines(), ""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                stanzas.append(current)
            current, last = {}, None
            continue
        if line[0].isspace() and last is not None:
            # An inline key keeps its lines; " ." stands for an empty line in deb822.
            value = line.strip()
            current[last] += "\n" + ("" if value == "." else value)
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        last = key.strip().lower()
        current[last] = value.strip()
    return stanzas


def _dedupe(mirrors: Iterable[Mirror]) -> list[Mirror]:
    seen: set[Mirror] = set()
    out: list[Mirror] = []
    for m in mirrors:
        if m not in seen:
            seen.add(m)
            out.append(m)
    return out


def os_codename(os_release: Path = Path("/etc/os-release")) -> str | None:
    try:
        text = os_release.read_text()
    except OSError:
        return None
    m = re.search(r'^VERSION_CODENAME="?([a-z0-9]+)"?$', text, re.MULTILINE)
    return m.group(1) if m else None


def default_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xenpvh" / "apt"


def private_apt_options(root: Path, *extra: str) -> list[str]:
    """`-o` options that keep apt's sources, preferences, state, lists and cache inside
    `root` (shared by the source-package and the binary-package private apt)."""
    settings = [
        f"Dir::Etc::SourceList={root}/sources.list",
        f"Dir::Etc::SourceParts={root}/sources.list.d",
        f"Dir::Etc::Preferences={root}/preferences",
        f"Dir::Etc::PreferencesParts={root}/preferences.d",
        f"Dir::State={root}/state",
        f"Dir::State::Lists={root}/lists",
        f"Dir::Cache={root}/cache",
        "Dir::Cache::pkgcache=pkgcache.bin",
        "Dir::Cache::srcpkgcache=srcpkgcache.bin",
        "Acquire::Languages=none",
        "APT::Get::List-Cleanup=true",
        *extra,
    ]
    if os.geteuid() == 0:
        # apt downloads as _apt when root, and _apt cannot enter a private directory
        # under root's 0700 home or pytest's tmp; it would warn and download as root
        # anyway, so say so and keep the logs clean.
        settings.append("APT::Sandbox::User=root")
    argv: list[str] = []
    for setting in settings:
        argv += ["-o", setting]
    return argv


class PrivateApt:
    """apt with its own sources (deb-src of `mirrors`), lists, cache and state under `root`."""

    def __init__(self, root: Path, mirrors: Sequence[Mirror]) -> None:
        if not mirrors:
            raise BlockedError("no Debian mirror to fetch source packages from")
        self.root = Path(root).absolute()
        self.mirrors = tuple(mirrors)

    @classmethod
    def default(cls, root: Path | None = None, etc: Path = ETC_APT) -> PrivateApt:
        """The system's release mirrors (Debian's own when it has none), under `root`
        (default `${XDG_CACHE_HOME:-~/.cache}/xenpvh/apt`)."""
        codename = os_codename()
        mirrors = release_mirrors(system_mirrors(etc), codename)
        if not mirrors and codename:
            keyring = DEBIAN_KEYRING if Path(DEBIAN_KEYRING).is_file() else None
            mirrors = (Mirror(DEFAULT_MIRROR, codename, ("main",), keyring),)
        return cls(root or default_root(), mirrors)

    # -- paths and argv ----------------------------------------------------------------------

    @property
    def sources_list(self) -> Path:
        return self.root / "sources.list"

    @property
    def lists(self) -> Path:
        return self.root / "lists"

    @property
    def downloads(self) -> Path:
        return self.root / "sources"

    def options(self) -> list[str]:
        """`-o` options that keep apt entirely inside `root` for sources, lists and cache."""
        return private_apt_options(self.root, f"Dir::Cache::Archives={self.root}/cache/archives")

    def update_argv(self) -> list[str]:
        return ["apt-get", *self.options(), "-q", "update"]

    def showsrc_argv(self, package: str) -> list[str]:
        check_debian_package(package)
        return ["apt-cache", *self.options(), "-o", "APT::Cache::Only-Source=true", "showsrc",
                package]  # fmt: skip

    def source_argv(self, package: str, version: str) -> list[str]:
        check_debian_package(package)
        check_debian_version(version)
        return ["apt-get", *self.options(), "-q", "-o", "APT::Get::Only-Source=true",
                "source", "--download-only", f"{package}={version}"]  # fmt: skip

    # -- operations --------------------------------------------------------------------------

    def write(self) -> bool:
        """Create the private tree and its source list; True when the list changed."""
        for sub in ("sources.list.d", "preferences.d", "state", "lists/partial",
                    "cache/archives/partial", "keys", "sources"):  # fmt: skip
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        lines = ["# Written by xenpvh: deb-src twins of the system's release entries."]
        for n, mirror in enumerate(self.mirrors):
            key = mirror.signed_by
            if key and "\n" in key:
                # An inline (deb822) key: apt's one-line format wants a file.
                key_file = self.root / "keys" / f"inline-{n}.asc"
                key_file.write_text(key.strip() + "\n")
                key = str(key_file)
            lines.append(mirror.deb_src_line(key))
        text = "\n".join(lines) + "\n"
        if self.sources_list.is_file() and self.sources_list.read_text() == text:
            return False
        self.sources_list.write_text(text)
        return True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One xenpvh process at a time updates or downloads into this root."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _has_lists(self) -> bool:
        return any(self.lists.glob("*Sources*"))

    @property
    def _stamp(self) -> Path:
        return self.root / "updated"

    def _lists_age(self) -> float:
        # Our own stamp: apt dates the Release files by the server's Last-Modified, which
        # says nothing about when we last asked.
        try:
            return time.time() - self._stamp.stat().st_mtime
        except OSError:
            return float("inf")

    def update(self, *, max_age: float = LIST_MAX_AGE, force: bool = False) -> None:
        """`apt-get update` of the private lists when they are missing, stale or the
        source list changed."""
        with self._locked():
            changed = self.write()
            if not (force or changed or not self._has_lists() or self._lists_age() > max_age):
                return
            proc = _run(self.update_argv())
            if proc.returncode != 0 or re.search(r"^(E|Err):", proc.stdout + proc.stderr,
                                                 re.MULTILINE):  # fmt: skip
                raise BrokenError(
                    "apt-get update of the private deb-src lists failed: "
                    + _tail(proc.stdout + proc.stderr)
                )
            if not self._has_lists():
                raise BrokenError(
                    f"apt-get update fetched no Sources index for {self.sources_list}"
                )
            self._stamp.write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z\n"))

    def versions(self, package: str) -> list[str]:
        """Every version of source package `package` the private lists know."""
        proc = _run(self.showsrc_argv(package))
        if proc.returncode != 0:
            raise BrokenError(f"apt-cache showsrc {package} failed: {_tail(proc.stderr)}")
        found: list[str] = []
        for stanza in _stanzas(proc.stdout):
            if stanza.get("package") == package and stanza.get("version"):
                found.append(stanza["version"])
        return sorted(set(found), key=DebianVersion)

    def resolve_version(self, package: str, version: str | None) -> str:
        """The exact version to fetch: `version` if the mirrors have it, else the newest."""
        check_debian_package(package)
        if version is not None:
            check_debian_version(version)
        self.update()
        available = self.versions(package)
        if version is not None and version not in available:
            # The lists may predate the upload: refresh once before calling it missing.
            self.update(force=True)
            available = self.versions(package)
        if not available:
            raise BlockedError(
                f"no Debian source package {package!r} on "
                + ", ".join(f"{m.uri} {m.suite}" for m in self.mirrors)
            )
        if version is None:
            return available[-1]
        if version not in available:
            raise BlockedError(
                f"Debian source package {package} has no version {version} on the mirrors "
                f"(available: {', '.join(available)})"
            )
        return version

    def download(self, package: str, version: str) -> Path:
        """Download `package`=`version` (.dsc and its files, checked by apt against the
        signed Sources index) once into the private cache; return the .dsc path."""
        check_debian_package(package)
        check_debian_version(version)
        upstream = version.split(":", 1)[-1]
        final = self.downloads / f"{package}_{upstream}"
        dsc = final / f"{package}_{upstream}.dsc"
        if dsc.is_file():
            return dsc
        self.update()
        with self._locked():
            if dsc.is_file():
                return dsc
            self.downloads.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=self.downloads))
            try:
                proc = _run(self.source_argv(package, version), cwd=tmp)
                if proc.returncode != 0:
                    text = proc.stdout + proc.stderr
                    if "Unable to find a source package" in text or "Can not find version" in (
                        text
                    ):
                        raise BlockedError(
                            f"Debian source package {package}={version} is not on the "
                            f"mirrors: {_tail(text)}"
                        )
                    raise BrokenError(f"apt-get source {package}={version} failed: {_tail(text)}")
                if not (tmp / dsc.name).is_file():
                    raise BrokenError(f"apt-get source {package}={version} left no {dsc.name}")
                if final.exists():
                    shutil.rmtree(final)
                tmp.rename(final)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        return dsc


def extract(dsc: Path, dest: Path, *, log: TextIO | None = None) -> None:
    """Unpack a downloaded source package with Debian's patches applied (dpkg-source -x)."""
    if dest.exists():
        raise BrokenError(f"cannot unpack {dsc.name}: {dest} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    proc = _run(["dpkg-source", "--no-copy", "-x", str(dsc), str(dest)], cwd=dest.parent)
    if log is not None:
        log.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise BrokenError(f"dpkg-source -x {dsc.name} failed: {_tail(proc.stdout + proc.stderr)}")


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv,
            cwd=cwd,
            capture_output=True,
            text=True,
            env={**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"},
        )
    except FileNotFoundError as exc:
        raise BrokenError(f"{argv[0]} is not installed (needs apt and dpkg-dev)") from exc


def _tail(text: str, lines: int = 6) -> str:
    kept = [ln for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return " | ".join(kept)


class DebianVersion:
    """Orders Debian version strings as dpkg does (epoch, upstream, revision; '~' sorts
    before everything, letters before other characters)."""

    def __init__(self, text: str) -> None:
        self.text = text
        epoch, sep, rest = text.partition(":")
        if not sep:
            epoch, rest = "0", text
        upstream, dash, revision = rest.rpartition("-")
        if not dash:
            upstream, revision = rest, "0"
        self.key = (int(epoch) if epoch.isdigit() else 0, upstream, revision)

    @staticmethod
    def _order(c: str) -> int:
        if c == "~":
            return -1
        if c.isdigit():
            return 0
        if c.isalpha():
            return ord(c)
        return ord(c) + 256

    @classmethod
    def _compare_part(cls, a: str, b: str) -> int:
        i = j = 0
        while i < len(a) or j < len(b):
            diff = 0
            while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
                ac = cls._order(a[i]) if i < len(a) and not a[i].isdigit() else 0
                bc = cls._order(b[j]) if j < len(b) and not b[j].isdigit() else 0
                if ac != bc:
                    return -1 if ac < bc else 1
                if i < len(a) and not a[i].isdigit():
                    i += 1
                if j < len(b) and not b[j].isdigit():
                    j += 1
            na = nb = ""
            while i < len(a) and a[i].isdigit():
                na += a[i]
                i += 1
            while j < len(b) and b[j].isdigit():
                nb += b[j]
                j += 1
            diff = int(na or "0") - int(nb or "0")
            if diff:
                return -1 if diff < 0 else 1
        return 0

    def compare(self, other: DebianVersion) -> int:
        if self.key[0] != other.key[0]:
            return -1 if self.key[0] < other.key[0] else 1
        return self._compare_part(self.key[1], other.key[1]) or self._compare_part(
            self.key[2], other.key[2]
        )

    def __lt__(self, other: DebianVersion) -> bool:
        return self.compare(other) < 0


__all__ = [
    "DebianVersion",
    "Mirror",
    "PrivateApt",
    "default_root",
    "extract",
    "os_codename",
    "release_mirrors",
    "system_mirrors",
]
