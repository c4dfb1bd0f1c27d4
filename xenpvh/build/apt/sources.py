"""apt's source lists: one-line (`*.list`) and deb822 (`*.sources`) entries, and the mirrors
xenpvh picks from them.

Reading the machine's own apt configuration keeps mirror hosts out of the source tree: a lab
with a local mirror just works.  Only `deb` entries that are enabled count; deb-src-only
entries are skipped (xenpvh writes its own deb-src twins, see `private.py`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from xenpvh.errors import BlockedError

ETC_APT = Path("/etc/apt")
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
# Overrides the main archive the nested image is debootstrapped from.
MIRROR_ENV = "XENPVH_DEBIAN_MIRROR"
# Suites that are not the release itself: updates, security, backports, proposed ...
_NOT_RELEASE = re.compile(r"[-/]")
_DISABLED = ("no", "false", "0")


@dataclass(frozen=True)
class Mirror:
    """One archive suite: URI, suite, components and the keyring that signs it."""

    uri: str
    suite: str
    components: tuple[str, ...] = ("main",)
    signed_by: str | None = None

    def entry(self, kind: str = "deb", signed_by: str | None = None) -> str:
        """The one-line `kind` (deb or deb-src) entry; `signed_by` overrides the keyring (an
        inline deb822 key saved to a file)."""
        key = signed_by if signed_by is not None else self.signed_by
        opts = f"[signed-by={key}] " if key else ""
        return " ".join([kind, f"{opts}{self.uri}", self.suite, *self.components]).strip()


def system_mirrors(etc: Path = ETC_APT) -> tuple[Mirror, ...]:
    """The enabled `deb` entries of `etc`/sources.list and sources.list.d (*.list one-line,
    *.sources deb822), in apt's order, without repeats."""
    mirrors: list[Mirror] = []
    main = etc / "sources.list"
    if main.is_file():
        mirrors.extend(one_line_mirrors(main.read_text(errors="replace")))
    parts = etc / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".list" and path.is_file():
                mirrors.extend(one_line_mirrors(path.read_text(errors="replace")))
            elif path.suffix == ".sources" and path.is_file():
                mirrors.extend(deb822_mirrors(path.read_text(errors="replace")))
    return tuple(dict.fromkeys(mirrors))


def release_mirrors(mirrors: Iterable[Mirror], codename: str | None = None) -> tuple[Mirror, ...]:
    """The release suites only (not -updates, -security, -backports): a pinned version of a
    stable release's package stays there, and the default version is the release's own.
    With `codename`, only that release (third-party repositories have other suites)."""
    return tuple(
        m
        for m in mirrors
        if not _NOT_RELEASE.search(m.suite) and (codename is None or m.suite == codename)
    )


def release_update_mirrors(release: str, etc: Path = ETC_APT) -> tuple[Mirror, ...]:
    """The system's `main` entries for `release`, its -updates and -security, or Debian's own
    mirrors of them when it has none (another release, another distribution)."""
    suites = (release, f"{release}-updates", f"{release}-security")
    found = tuple(m for m in system_mirrors(etc) if m.suite in suites and "main" in m.components)
    return found or (
        Mirror(DEFAULT_MIRROR, release, ("main",), DEBIAN_KEYRING),
        Mirror(DEFAULT_MIRROR, f"{release}-updates", ("main",), DEBIAN_KEYRING),
        Mirror(DEFAULT_SECURITY_MIRROR, f"{release}-security", ("main",), DEBIAN_KEYRING),
    )


def debian_mirror(suite: str, etc: Path = ETC_APT) -> str:
    """The URI of the main archive this machine's apt uses for `suite` (security and updates
    are other trees); `XENPVH_DEBIAN_MIRROR` overrides it."""
    env = os.environ.get(MIRROR_ENV)
    if env:
        return env.rstrip("/")
    for m in system_mirrors(etc):
        if m.suite == suite and "security" not in m.uri:
            return m.uri.rstrip("/")
    raise BlockedError(
        f"no Debian mirror serving {suite!r} found in {etc}/sources.list(.d); set {MIRROR_ENV}"
    )


def os_codename(os_release: Path = Path("/etc/os-release")) -> str | None:
    """This machine's release codename (VERSION_CODENAME), if it says."""
    try:
        text = os_release.read_text()
    except OSError:
        return None
    m = re.search(r'^VERSION_CODENAME="?([a-z0-9]+)"?$', text, re.MULTILINE)
    return m.group(1) if m else None


def one_line_mirrors(text: str) -> list[Mirror]:
    """The `deb` entries of a one-line sources.list: `deb [opt=value ...] URI SUITE COMP...`."""
    found: list[Mirror] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
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


def deb822_mirrors(text: str) -> list[Mirror]:
    """The enabled `deb` entries of a deb822 `.sources` file, one per URI and suite."""
    found: list[Mirror] = []
    for stanza in deb822_paragraphs(text):
        if stanza.get("enabled", "yes").strip().lower() in _DISABLED:
            continue
        if "deb" not in stanza.get("types", "").split():
            continue
        signed = stanza.get("signed-by", "").strip() or None
        components = tuple(stanza.get("components", "").split())
        for uri in stanza.get("uris", "").split():
            for suite in stanza.get("suites", "").split():
                found.append(Mirror(uri, suite, components, signed))
    return found


def deb822_paragraphs(text: str) -> list[dict[str, str]]:
    """deb822 paragraphs (also apt-cache's output): `Field: value`, continuation lines start
    with white space, `#` lines are comments, blank lines separate paragraphs.  Field names
    are lower-cased."""
    paragraphs: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in [*text.splitlines(), ""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                paragraphs.append(current)
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
    return paragraphs


__all__ = [
    "DEBIAN_KEYRING",
    "DEFAULT_MIRROR",
    "ETC_APT",
    "Mirror",
    "deb822_mirrors",
    "deb822_paragraphs",
    "debian_mirror",
    "one_line_mirrors",
    "os_codename",
    "release_mirrors",
    "release_update_mirrors",
    "system_mirrors",
]
