"""Debian 12 binary packages for the guest kit, whatever the build machine runs.

Queries and downloads go through a private apt tree (`PrivateApt.for_packages(RELEASE)`,
under `${XDG_CACHE_HOME:-~/.cache}/xenpvh/debpkg`): the system's bookworm entries, Debian's
mirrors when it has none.  Packages are downloaded by `apt-get download` (which checks them
against the signed index) into a small archive beside the lists, so a kit rebuilt for
another reason does not download them again.  `extract` unpacks a .deb in pure Python.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from collections.abc import Callable
from pathlib import Path

from xenpvh.build.apt import DebPackage, PrivateApt, reporting
from xenpvh.build.kmod import unzstd
from xenpvh.errors import BlockedError, BrokenError

RELEASE = "bookworm"  # Debian 12: the kit's packages come from it whatever the host runs

# "name[:arch] [(rel version)]", one alternative of a Depends field.
_DEPENDENCY = re.compile(
    r"^(?P<name>[a-z0-9][a-z0-9+.-]+)(?::\w+)?\s*(?:\((?P<rel>[<>=]+)\s*(?P<ver>[^)\s]+)\))?"
)


def private_apt() -> PrivateApt:
    """The private apt tree of Debian 12's binary packages."""
    return PrivateApt.for_packages(
        RELEASE, comment="the Debian 12 entries the guest kit is built from."
    )


def lists_dir() -> Path:
    """Where the private apt lists live (what package resolution depends on)."""
    return private_apt().lists


# --------------------------------------------------------------------------- queries


def candidates(*names: str) -> dict[str, DebPackage]:
    """The version apt would pick for each of `names` from Debian 12's current lists."""
    return private_apt().candidates(*names)


def record(pkg: DebPackage) -> dict[str, str]:
    """The Packages stanza of `pkg` (lower-cased field names)."""
    return private_apt().record(pkg)


def pinned_dependency(meta: DebPackage, prefix: str) -> DebPackage:
    """The dependency of metapackage `meta` whose name starts with `prefix`, at the version
    `meta` pins (linux-image-amd64 -> linux-image-6.1.0-N-amd64 (= V))."""
    for alternatives in record(meta).get("depends", "").split(","):
        for alternative in alternatives.split("|"):
            m = _DEPENDENCY.match(alternative.strip())
            if not m or not m.group("name").startswith(prefix):
                continue
            name = m.group("name")
            if m.group("rel") == "=":
                return DebPackage(name, m.group("ver"))
            return candidates(name)[name]
    raise BlockedError(f"{meta} depends on no package named {prefix}*")


# --------------------------------------------------------------------------- download


def download(pkg: DebPackage, dest: Path) -> Path:
    """`pkg`'s .deb in `dest` (created), fetched once into the private archive and checked
    against the SHA256 of the signed index."""
    return private_apt().download_package(pkg, dest)


# --------------------------------------------------------------------------- unpacking


def extract(deb: Path, dest: Path, keep: Callable[[str], bool]) -> list[str]:
    """Unpack the members of `deb`'s data archive whose path (without "./") `keep` accepts
    into `dest`; return those paths.  Pure Python: an ar archive holding a tar."""
    data, name = _data_member(deb)
    if name.endswith(".zst"):
        data = unzstd(data, deb.name, invalid=BrokenError)
    kept: list[str] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|*") as tar:
            for member in tar:
                path = member.name.removeprefix("./")
                if path and keep(path):
                    # "data" refuses absolute paths, "..", devices and escaping links.
                    tar.extract(member, dest, filter="data")
                    kept.append(path)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise BrokenError(f"cannot unpack {deb.name}: {e}") from e
    return kept


def _data_member(deb: Path) -> tuple[bytes, str]:
    """The bytes and name of the data.tar.* member of a .deb (an ar archive)."""
    with deb.open("rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise BrokenError(f"{deb.name} is not a Debian package (no ar header)")
        while header := f.read(60):
            if len(header) < 60 or header[58:60] != b"`\n":
                break
            name = header[:16].decode(errors="replace").strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            if name.startswith("data.tar"):
                return f.read(size), name
            f.seek(size + size % 2, os.SEEK_CUR)  # members are 2-byte aligned
    raise BrokenError(f"{deb.name} has no data.tar member")


__all__ = [
    "RELEASE",
    "DebPackage",
    "candidates",
    "download",
    "extract",
    "lists_dir",
    "pinned_dependency",
    "private_apt",
    "record",
    "reporting",
]
