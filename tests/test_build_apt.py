"""xenpvh.build.apt: apt source lists, and the private apt tree for source and binary packages."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from xenpvh.build.apt import DebPackage, Mirror, PrivateApt, release_mirrors, system_mirrors

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://ignored.example/debian
Suites: bookworm
Components: main

Types: deb
Enabled: no
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
"""


def test_mirrors_from_deb822_and_one_line(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d/debian.sources").write_text(DEB822)
    (tmp_path / "sources.list").write_text(
        "# comment\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main contrib\n"
    )
    mirrors = system_mirrors(tmp_path)
    assert Mirror("http://m.example/debian", "bookworm", ("main", "contrib"), "/k.gpg") in mirrors
    assert len(mirrors) == 4  # deb-src and disabled stanzas are skipped
    release = release_mirrors(mirrors)
    assert [m.suite for m in release] == ["bookworm", "bookworm"]
    assert release[1].entry("deb-src") == (
        "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
        "http://deb.debian.org/debian bookworm main"
    )


def test_every_apt_call_uses_private_paths(tmp_path: Path) -> None:
    apt = PrivateApt(tmp_path, (Mirror("http://m/debian", "bookworm", ("main",)),))
    argvs = (
        apt.update_argv(),
        apt.showsrc_argv("xen"),
        apt.source_argv("xen", "1-1"),
        apt.cache_argv("policy", "busybox-static"),
        apt.download_argv(DebPackage("busybox-static", "1:1.35.0-4")),
    )
    for argv in argvs:
        joined = " ".join(argv)
        assert f"Dir::Etc::SourceList={tmp_path}/sources.list" in joined
        assert f"Dir::State::Lists={tmp_path}/lists" in joined
        assert f"Dir::Cache={tmp_path}/cache" in joined
        assert f"Dir::Etc::SourceParts={tmp_path}/sources.list.d" in joined
        # An empty dpkg status: what this machine has installed must not matter.
        assert f"Dir::State::status={tmp_path}/status" in joined
    assert apt.source_argv("xen", "1-1")[-3:] == ["source", "--download-only", "xen=1-1"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


@pytest.mark.host
@pytest.mark.skipif(shutil.which("apt-get") is None, reason="no apt-get")
def test_live_showsrc_through_private_config_leaves_system_alone(tmp_path: Path) -> None:
    etc = Path("/etc/apt/sources.list.d/debian.sources")
    before = _digest(etc)
    apt = PrivateApt.for_sources(tmp_path / "apt")
    version = apt.resolve_source_version("xen", None)
    assert version.startswith("4.17")
    assert "deb-src" in (tmp_path / "apt/sources.list").read_text()
    assert any((tmp_path / "apt/lists").glob("*Sources*"))
    assert _digest(etc) == before
    assert not list(Path("/var/lib/apt/lists").glob("*Sources*"))
