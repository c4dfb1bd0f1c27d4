"""Debian 12 binary packages through a private apt configuration.

The guest kit is made of Debian 12 packages whatever the build machine runs, and a build
tool has no business editing /etc/apt or the system's lists.  So every apt call here points
at a tree of its own (`${XDG_CACHE_HOME:-~/.cache}/xenpvh/debpkg`): its own source list
(the system's bookworm entries, Debian's mirrors when it has none), lists, cache, state and
preferences.  Only apt.conf.d (proxies) and the trusted keyrings are shared with the system.

Packages are downloaded by `apt-get download` (which checks them against the signed index)
into a small archive beside the lists, so a kit rebuilt for another reason does not download
them again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from rich.progress import Progress, TaskID

from xenpvh.build.aptsrc import DEBIAN_KEYRING, Mirror, private_apt_options, system_mirrors
from xenpvh.build.kmod import unzstd
from xenpvh.errors import BlockedError, BrokenError

ETC_APT = Path("/etc/apt")
RELEASE = "bookworm"  # Debian 12: the kit's packages come from it whatever the host runs
SUITES = (RELEASE, f"{RELEASE}-updates", f"{RELEASE}-security")
DEFAULT_MIRRORS = (
    Mirror("http://deb.debian.org/debian", RELEASE, ("main",), DEBIAN_KEYRING),
    Mirror("http://deb.debian.org/debian", f"{RELEASE}-updates", ("main",), DEBIAN_KEYRING),
    Mirror("http://deb.debian.org/debian-security", f"{RELEASE}-security", ("main",),
           DEBIAN_KEYRING),
)  # fmt: skip
ARCH = "amd64"
# Lists older than this are refreshed before a candidate version is chosen.
LISTS_MAX_AGE = 24 * 3600.0

_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_VERSION = re.compile(r"(?:[0-9]+:)?[0-9][A-Za-z0-9.+~:-]*")
# "name[:arch] [(rel version)]", one alternative of a Depends field.
_DEPENDENCY = re.compile(
    r"^(?P<name>[a-z0-9][a-z0-9+.-]+)(?::\w+)?\s*(?:\((?P<rel>[<>=]+)\s*(?P<ver>[^)\s]+)\))?"
)

# The rich Progress that long apt steps report to (set by `reporting`).  A context variable,
# not a parameter: the functions keep the small signatures callers (and tests) rely on.
_PROGRESS: ContextVar[Progress | None] = ContextVar("xenpvh_debpkg_progress", default=None)


@dataclass(frozen=True)
class DebPackage:
    """One exact binary package version, e.g. DebPackage("busybox-static", "1:1.35.0-4")."""

    name: str
    version: str

    def __post_init__(self) -> None:
        # Both end up in apt's argv: refuse anything apt could read as an option.
        if not _NAME.fullmatch(self.name):
            raise BlockedError(f"{self.name!r} is not a Debian package name")
        if not _VERSION.fullmatch(self.version):
            raise BlockedError(f"{self.version!r} is not a Debian version (of {self.name})")

    @property
    def spec(self) -> str:
        return f"{self.name}={self.version}"

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


@contextlib.contextmanager
def reporting(progress: Progress | None) -> Iterator[None]:
    """Report apt's downloads (update, packages) as tasks of `progress` meanwhile."""
    token = _PROGRESS.set(progress)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


# --------------------------------------------------------------------------- private apt


def default_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xenpvh" / "debpkg"


def release_mirrors(etc: Path = ETC_APT) -> tuple[Mirror, ...]:
    """The system's `deb` entries for Debian 12 (release, updates, security), or Debian's
    own mirrors when it has none (another release, another distribution)."""
    found = tuple(m for m in system_mirrors(etc) if m.suite in SUITES and "main" in m.components)
    return found or DEFAULT_MIRRORS


class PrivateApt:
    """apt with its own sources, lists, cache and state under `root`."""

    def __init__(self, root: Path, mirrors: tuple[Mirror, ...]) -> None:
        self.root = Path(root).absolute()
        self.mirrors = mirrors

    @classmethod
    def default(cls) -> PrivateApt:
        return cls(default_root(), release_mirrors())

    @property
    def lists(self) -> Path:
        return self.root / "lists"

    @property
    def archive(self) -> Path:
        return self.root / "debs"

    def options(self) -> list[str]:
        return private_apt_options(
            self.root,
            # An empty dpkg status: what this machine has installed must not matter.
            f"Dir::State::status={self.root}/status",
            f"APT::Architecture={ARCH}",
            f"APT::Architectures={ARCH}",
        )

    def write(self) -> bool:
        """Create the private tree and its source list; True when the list changed."""
        for sub in ("sources.list.d", "preferences.d", "state", "lists/partial",
                    "cache/archives/partial", "keys", "debs"):  # fmt: skip
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "status").touch()
        lines = ["# Written by xenpvh: the Debian 12 entries the guest kit is built from."]
        for n, mirror in enumerate(self.mirrors):
            key = mirror.signed_by
            if key and "\n" in key:
                # An inline deb822 key: the one-line format wants a file.
                key_file = self.root / "keys" / f"inline-{n}.asc"
                key_file.write_text(key.strip() + "\n")
                key = str(key_file)
            opts = f"[signed-by={key}] " if key else ""
            lines.append(f"deb {opts}{mirror.uri} {mirror.suite} {' '.join(mirror.components)}")
        text = "\n".join(lines) + "\n"
        sources = self.root / "sources.list"
        if sources.is_file() and sources.read_text() == text:
            return False
        sources.write_text(text)
        return True

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One xenpvh process at a time updates or downloads into this tree."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def has_lists(self) -> bool:
        return any(self.lists.glob("*_Packages*"))

    def ensure_lists(self, max_age: float = LISTS_MAX_AGE) -> None:
        """`apt-get update` when the lists are missing, stale or the sources changed.  A failed
        refresh of lists that exist only warns: yesterday's lists still name real packages."""
        with self.locked():
            changed = self.write()
            stamp = self.root / "lists.updated"
            age = time.time() - stamp.stat().st_mtime if stamp.exists() else float("inf")
            if not changed and self.has_lists() and age <= max_age:
                return
            try:
                _run_apt(["apt-get", *self.options(), "-q", "update"], "updating apt lists")
            except BrokenError as e:
                if changed or not self.has_lists():
                    raise
                _log(f"[yellow]warning:[/] keeping the old apt lists: {e}")
                return
            if not self.has_lists():
                raise BrokenError(f"apt-get update fetched no Packages index from {self.mirrors}")
            stamp.touch()

    def cache_argv(self, *args: str) -> list[str]:
        return ["apt-cache", *self.options(), *args]


def lists_dir() -> Path:
    """Where the private apt lists live (what package resolution depends on)."""
    return default_root() / "lists"


# --------------------------------------------------------------------------- queries


def candidates(*names: str) -> dict[str, DebPackage]:
    """The version apt would pick for each of `names` from Debian 12's current lists."""
    for name in names:
        DebPackage(name, "0")  # validates the name
    apt = PrivateApt.default()
    apt.ensure_lists()
    out = _capture(apt.cache_argv("policy", *names), "apt-cache policy")
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
        where = ", ".join(f"{m.uri} {m.suite}" for m in apt.mirrors)
        raise BlockedError(f"no installable package {', '.join(missing)} on {where}")
    return found


def record(pkg: DebPackage) -> dict[str, str]:
    """The Packages stanza of `pkg` (lower-cased field names)."""
    apt = PrivateApt.default()
    apt.ensure_lists()
    out = _capture(apt.cache_argv("show", "--no-all-versions", pkg.spec), "apt-cache show")
    stanza = _first_stanza(out)
    if stanza.get("version") != pkg.version:
        raise BlockedError(f"{pkg} is not in the Debian 12 lists (apt-cache show found nothing)")
    return stanza


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
    apt = PrivateApt.default()
    fields = record(pkg)
    filename = fields.get("filename", "").rsplit("/", 1)[-1]
    sha256 = fields.get("sha256", "")
    if not filename.endswith(".deb") or not sha256:
        raise BrokenError(f"the index entry of {pkg} has no Filename/SHA256")
    cached = apt.archive / filename
    with apt.locked():
        if not (cached.is_file() and _sha256(cached) == sha256):
            _fetch(apt, pkg, fields, cached)
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / filename
    with contextlib.suppress(FileExistsError):
        try:
            os.link(cached, out)
        except OSError:
            shutil.copyfile(cached, out)
    return out


def _fetch(apt: PrivateApt, pkg: DebPackage, fields: dict[str, str], cached: Path) -> None:
    apt.archive.mkdir(parents=True, exist_ok=True)
    size = int(fields.get("size", "0") or 0)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=apt.archive))
    try:
        argv = ["apt-get", *apt.options(), "-q", "download", pkg.spec]
        _run_apt(argv, f"downloading {pkg} ({size / 1e6:.1f} MB)", cwd=tmp)
        debs = list(tmp.glob("*.deb"))
        if len(debs) != 1:
            raise BrokenError(f"apt-get download {pkg.spec} left {len(debs)} .deb files")
        if _sha256(debs[0]) != fields["sha256"]:
            raise BrokenError(f"{debs[0].name}: SHA256 differs from the signed index")
        # Older versions of the same package are of no further use.
        for old in apt.archive.glob(f"{pkg.name}_*.deb"):
            old.unlink()
        os.replace(debs[0], cached)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


# --------------------------------------------------------------------------- helpers


def _env() -> dict[str, str]:
    return {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}


def _capture(argv: list[str], what: str) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=_env())
    except FileNotFoundError as e:
        raise BrokenError(f"{argv[0]} is not installed (the guest kit needs apt)") from e
    if proc.returncode != 0:
        raise BrokenError(f"{what} failed (exit {proc.returncode}): {_tail(proc.stderr)}")
    return proc.stdout


def _run_apt(argv: list[str], what: str, cwd: Path | None = None) -> None:
    """Run apt with its download progress (APT::Status-Fd) driving a progress task."""
    progress = _PROGRESS.get()
    task: TaskID | None = progress.add_task(what, total=100.0) if progress else None
    read_fd, write_fd = os.pipe()
    with tempfile.TemporaryFile() as output:
        try:
            proc = subprocess.Popen(
                [argv[0], "-o", f"APT::Status-Fd={write_fd}", *argv[1:]],
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
                env=_env(),
            )
        except FileNotFoundError as e:
            os.close(read_fd)
            raise BrokenError(f"{argv[0]} is not installed (the guest kit needs apt)") from e
        finally:
            os.close(write_fd)
        with os.fdopen(read_fd, errors="replace") as status:
            for line in status:
                # dlstatus:ITEM:PERCENT:MESSAGE
                parts = line.split(":", 3)
                if progress and task is not None and parts[0] == "dlstatus" and len(parts) > 2:
                    with contextlib.suppress(ValueError):
                        progress.update(task, completed=float(parts[2]))
        rc = proc.wait()
        output.seek(0)
        text = output.read().decode(errors="replace")
    failed = rc != 0 or bool(re.search(r"^(E|Err):", text, re.MULTILINE))
    if progress and task is not None:
        # "failed" marks the task for the build room's progress columns.
        progress.update(task, completed=100.0, failed=failed)
    if failed:
        if re.search(r"Can't find a source to download|Unable to locate package", text):
            raise BlockedError(f"{what}: not in the Debian 12 lists: {_tail(text)}")
        raise BrokenError(f"{what} failed (exit {rc}): {_tail(text)}")


def _log(message: str) -> None:
    progress = _PROGRESS.get()
    if progress is not None:
        progress.console.log(message)


def _first_stanza(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        if line[0].isspace() and last:
            fields[last] += "\n" + line.strip()
            continue
        key, sep, value = line.partition(":")
        if sep:
            last = key.strip().lower()
            fields[last] = value.strip()
    return fields


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tail(text: str, lines: int = 6) -> str:
    kept = [ln for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return " | ".join(kept)


__all__ = [
    "DebPackage",
    "PrivateApt",
    "candidates",
    "download",
    "extract",
    "lists_dir",
    "pinned_dependency",
    "record",
    "reporting",
]
