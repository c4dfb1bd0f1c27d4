"""apt with a tree of its own: source packages (`apt-get source`) and binary packages
(`apt-get download`) without touching the system's apt.

A build tool has no business editing /etc/apt or the system's lists.  Every apt call here
points at a private root: its own source list (written from the mirrors it is given), parts,
lists, cache, state, preferences and an empty dpkg status (what this machine has installed
must not matter).  Only apt.conf.d (proxies) and the trusted keyrings are shared with the
system, as they should be.

Two roots are in use: `for_sources()` (deb-src twins of the system's release entries, under
`~/.cache/xenpvh/apt`) and `for_packages(release)` (a Debian release's binary packages
whatever the machine runs, under `~/.cache/xenpvh/debpkg`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, TextIO

from xenpvh.build.apt.package import DebianVersion, DebPackage
from xenpvh.build.apt.run import capture, run_apt, run_captured, say, tail
from xenpvh.build.apt.sources import (
    DEBIAN_KEYRING,
    DEFAULT_MIRROR,
    ETC_APT,
    Mirror,
    deb822_paragraphs,
    os_codename,
    release_mirrors,
    release_update_mirrors,
    system_mirrors,
)
from xenpvh.build.tree import check_debian_package, check_debian_version
from xenpvh.errors import BlockedError, BrokenError
from xenpvh.util.fs import atomic_write_text, cache_root, flock, sha256_file

ARCH = "amd64"
# Lists older than this are refreshed before a version is chosen.
LISTS_MAX_AGE = 24 * 3600.0

Kind = Literal["deb", "deb-src"]
# The index files a successful `apt-get update` leaves, per kind of entry.
_INDEX_GLOB: dict[str, str] = {"deb": "*_Packages*", "deb-src": "*Sources*"}


class PrivateApt:
    """apt with its own `kind` entries (deb or deb-src) of `mirrors`, lists, cache and state
    under `root`."""

    def __init__(
        self,
        root: Path,
        mirrors: Sequence[Mirror],
        *,
        kind: Kind = "deb",
        comment: str | None = None,
    ) -> None:
        if not mirrors:
            raise BlockedError("no Debian mirror to fetch packages from")
        if kind not in _INDEX_GLOB:
            raise ValueError(f"kind must be deb or deb-src, not {kind!r}")
        self.root = Path(root).absolute()
        self.mirrors = tuple(mirrors)
        self.kind = kind
        # The source list's first line.  Part of what `write()` compares: a new text would
        # refresh the lists, so each tree keeps the words it was first written with.
        self.comment = comment or f"the {kind} entries this private apt reads."

    @classmethod
    def for_sources(cls, root: Path | None = None, etc: Path = ETC_APT) -> PrivateApt:
        """deb-src twins of the system's release mirrors (Debian's own when it has none),
        under `root` (default `${XDG_CACHE_HOME:-~/.cache}/xenpvh/apt`)."""
        codename = os_codename()
        mirrors = release_mirrors(system_mirrors(etc), codename)
        if not mirrors and codename:
            keyring = DEBIAN_KEYRING if Path(DEBIAN_KEYRING).is_file() else None
            mirrors = (Mirror(DEFAULT_MIRROR, codename, ("main",), keyring),)
        comment = "deb-src twins of the system's release entries."
        return cls(root or cache_root("apt"), mirrors, kind="deb-src", comment=comment)

    @classmethod
    def for_packages(
        cls,
        release: str,
        root: Path | None = None,
        etc: Path = ETC_APT,
        *,
        comment: str | None = None,
    ) -> PrivateApt:
        """`release`'s binary packages (release, -updates, -security) from the system's
        mirrors of them, or Debian's, under `root` (default `~/.cache/xenpvh/debpkg`)."""
        mirrors = release_update_mirrors(release, etc)
        return cls(root or cache_root("debpkg"), mirrors, comment=comment)

    # -- paths and argv ----------------------------------------------------------------------

    @property
    def sources_list(self) -> Path:
        return self.root / "sources.list"

    @property
    def lists(self) -> Path:
        return self.root / "lists"

    @property
    def source_downloads(self) -> Path:
        """Downloaded source packages, one directory per package and version."""
        return self.root / "sources"

    @property
    def archive(self) -> Path:
        """Downloaded .deb files, the newest version of each package."""
        return self.root / "debs"

    @property
    def _stamp(self) -> Path:
        return self.root / "lists.updated"

    def where(self) -> str:
        """The mirrors, for messages."""
        return ", ".join(f"{m.uri} {m.suite}" for m in self.mirrors)

    def options(self) -> list[str]:
        """`-o` options that keep apt entirely inside `root`."""
        settings = [
            f"Dir::Etc::SourceList={self.root}/sources.list",
            f"Dir::Etc::SourceParts={self.root}/sources.list.d",
            f"Dir::Etc::Preferences={self.root}/preferences",
            f"Dir::Etc::PreferencesParts={self.root}/preferences.d",
            f"Dir::State={self.root}/state",
            f"Dir::State::Lists={self.root}/lists",
            f"Dir::State::status={self.root}/status",
            f"Dir::Cache={self.root}/cache",
            f"Dir::Cache::Archives={self.root}/cache/archives",
            "Dir::Cache::pkgcache=pkgcache.bin",
            "Dir::Cache::srcpkgcache=srcpkgcache.bin",
            "Acquire::Languages=none",
            "APT::Get::List-Cleanup=true",
            f"APT::Architecture={ARCH}",
            f"APT::Architectures={ARCH}",
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

    def update_argv(self) -> list[str]:
        return ["apt-get", *self.options(), "-q", "update"]

    def cache_argv(self, *args: str) -> list[str]:
        return ["apt-cache", *self.options(), *args]

    def showsrc_argv(self, package: str) -> list[str]:
        check_debian_package(package)
        return self.cache_argv("-o", "APT::Cache::Only-Source=true", "showsrc", package)

    def source_argv(self, package: str, version: str) -> list[str]:
        check_debian_package(package)
        check_debian_version(version)
        return ["apt-get", *self.options(), "-q", "-o", "APT::Get::Only-Source=true",
                "source", "--download-only", f"{package}={version}"]  # fmt: skip

    def download_argv(self, pkg: DebPackage) -> list[str]:
        return ["apt-get", *self.options(), "-q", "download", pkg.spec]

    # -- the tree and its lists --------------------------------------------------------------

    def write(self) -> bool:
        """Create the private tree and its source list; True when the list changed."""
        for sub in ("sources.list.d", "preferences.d", "state", "lists/partial",
                    "cache/archives/partial", "keys"):  # fmt: skip
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "status").touch()
        lines = [f"# Written by xenpvh: {self.comment}"]
        for n, mirror in enumerate(self.mirrors):
            key = mirror.signed_by
            if key and "\n" in key:
                # An inline deb822 key: the one-line format wants a file.
                key_file = self.root / "keys" / f"inline-{n}.asc"
                key_file.write_text(key.strip() + "\n")
                key = str(key_file)
            lines.append(mirror.entry(self.kind, key))
        text = "\n".join(lines) + "\n"
        if self.sources_list.is_file() and self.sources_list.read_text() == text:
            return False
        atomic_write_text(self.sources_list, text)
        return True

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One xenpvh process at a time updates or downloads into this tree."""
        self.root.mkdir(parents=True, exist_ok=True)
        with flock(self.root / ".lock"):
            yield

    def has_lists(self) -> bool:
        return any(self.lists.glob(_INDEX_GLOB[self.kind]))

    def _lists_age(self) -> float:
        # Our own stamp: apt dates the Release files by the server's Last-Modified, which
        # says nothing about when we last asked.
        try:
            return time.time() - self._stamp.stat().st_mtime
        except OSError:
            return float("inf")

    def update(self, *, max_age: float = LISTS_MAX_AGE, force: bool = False) -> None:
        """`apt-get update` of the private lists when they are missing, older than `max_age`,
        the source list changed, or `force`.  A failed routine refresh of lists that exist
        only warns: yesterday's lists still name real packages."""
        with self.locked():
            changed = self.write()
            if not (force or changed or not self.has_lists() or self._lists_age() > max_age):
                return
            try:
                run_apt(self.update_argv(), f"updating the private apt lists ({self.kind})")
            except BrokenError as e:
                if force or changed or not self.has_lists():
                    raise
                say(f"keeping the old apt lists: {e}")
                return
            if not self.has_lists():
                raise BrokenError(
                    f"apt-get update fetched no {self.kind} index from {self.where()}"
                )
            atomic_write_text(self._stamp, time.strftime("%Y-%m-%dT%H:%M:%S%z\n"))

    # -- source packages (kind deb-src) ------------------------------------------------------

    def source_versions(self, package: str) -> list[str]:
        """Every version of source package `package` the private lists know, oldest first."""
        out = capture(self.showsrc_argv(package), f"apt-cache showsrc {package}")
        found = {
            p["version"]
            for p in deb822_paragraphs(out)
            if p.get("package") == package and p.get("version")
        }
        return sorted(found, key=DebianVersion)

    def resolve_source_version(self, package: str, version: str | None) -> str:
        """The exact version to fetch: `version` if the mirrors have it, else the newest."""
        check_debian_package(package)
        if version is not None:
            check_debian_version(version)
        self.update()
        available = self.source_versions(package)
        if version is not None and version not in available:
            # The lists may predate the upload: refresh once before calling it missing.
            self.update(force=True)
            available = self.source_versions(package)
        if not available:
            raise BlockedError(f"no Debian source package {package!r} on {self.where()}")
        if version is None:
            return available[-1]
        if version not in available:
            raise BlockedError(
                f"Debian source package {package} has no version {version} on the mirrors "
                f"(available: {', '.join(available)})"
            )
        return version

    def download_source(self, package: str, version: str) -> Path:
        """Download `package`=`version` (.dsc and its files, checked by apt against the
        signed Sources index) once into the private tree; return the .dsc path."""
        check_debian_package(package)
        check_debian_version(version)
        upstream = version.split(":", 1)[-1]
        final = self.source_downloads / f"{package}_{upstream}"
        dsc = final / f"{package}_{upstream}.dsc"
        if dsc.is_file():
            return dsc
        self.update()
        with self.locked():
            if dsc.is_file():
                return dsc
            self.source_downloads.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=self.source_downloads))
            try:
                what = f"apt-get source {package}={version}"
                run_apt(self.source_argv(package, version), what, cwd=tmp)
                if not (tmp / dsc.name).is_file():
                    raise BrokenError(f"{what} left no {dsc.name}")
                if final.exists():
                    shutil.rmtree(final)
                tmp.rename(final)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        return dsc

    # -- binary packages (kind deb) ----------------------------------------------------------

    def candidates(self, *names: str) -> dict[str, DebPackage]:
        """The version apt would pick for each of `names` from the current lists."""
        for name in names:
            DebPackage(name, "0")  # validates the name
        self.update()
        out = capture(self.cache_argv("policy", *names), "apt-cache policy")
        found: dict[str, DebPackage] = {}
        current: str | None = None
        for line in out.splitlines():
            if line and not line[0].isspace() and line.endswith(":"):
                current = line[:-1].split(":")[0]  # "name:amd64:" on multi-arch systems
            elif current and line.strip().startswith("Candidate:"):
                version = line.split(":", 1)[1].strip()
                if version != "(none)":
                    found[current] = DebPackage(current, version)
        missing = [n for n in names if n not in found]
        if missing:
            raise BlockedError(f"no installable package {', '.join(missing)} on {self.where()}")
        return found

    def record(self, pkg: DebPackage) -> dict[str, str]:
        """The Packages stanza of `pkg` (lower-cased field names)."""
        self.update()
        out = capture(self.cache_argv("show", "--no-all-versions", pkg.spec), "apt-cache show")
        stanzas = deb822_paragraphs(out)
        if not stanzas or stanzas[0].get("version") != pkg.version:
            raise BlockedError(f"{pkg} is not in the lists of {self.where()}")
        return stanzas[0]

    def download_package(self, pkg: DebPackage, dest: Path) -> Path:
        """`pkg`'s .deb in `dest` (created), fetched once into the private archive and checked
        against the SHA256 of the signed index."""
        fields = self.record(pkg)
        filename = fields.get("filename", "").rsplit("/", 1)[-1]
        sha256 = fields.get("sha256", "")
        if not filename.endswith(".deb") or not sha256:
            raise BrokenError(f"the index entry of {pkg} has no Filename/SHA256")
        cached = self.archive / filename
        with self.locked():
            if not (cached.is_file() and sha256_file(cached) == sha256):
                self._fetch_package(pkg, fields, cached)
        dest.mkdir(parents=True, exist_ok=True)
        out = dest / filename
        with contextlib.suppress(FileExistsError):
            try:
                os.link(cached, out)
            except OSError:
                shutil.copyfile(cached, out)
        return out

    def _fetch_package(self, pkg: DebPackage, fields: dict[str, str], cached: Path) -> None:
        self.archive.mkdir(parents=True, exist_ok=True)
        size = int(fields.get("size", "0") or 0)
        tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=self.archive))
        try:
            run_apt(self.download_argv(pkg), f"downloading {pkg} ({size / 1e6:.1f} MB)", cwd=tmp)
            debs = list(tmp.glob("*.deb"))
            if len(debs) != 1:
                raise BrokenError(f"apt-get download {pkg.spec} left {len(debs)} .deb files")
            if sha256_file(debs[0]) != fields["sha256"]:
                raise BrokenError(f"{debs[0].name}: SHA256 differs from the signed index")
            # Older versions of the same package are of no further use.
            for old in self.archive.glob(f"{pkg.name}_*.deb"):
                old.unlink()
            os.replace(debs[0], cached)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def unpack_source(dsc: Path, dest: Path, *, log: TextIO | None = None) -> None:
    """Unpack a downloaded source package with Debian's patches applied (dpkg-source -x)."""
    if dest.exists():
        raise BrokenError(f"cannot unpack {dsc.name}: {dest} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    proc = run_captured(["dpkg-source", "--no-copy", "-x", str(dsc), str(dest)], cwd=dest.parent)
    if log is not None:
        log.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise BrokenError(f"dpkg-source -x {dsc.name} failed: {tail(proc.stdout + proc.stderr)}")


__all__ = ["ARCH", "LISTS_MAX_AGE", "PrivateApt", "unpack_source"]
