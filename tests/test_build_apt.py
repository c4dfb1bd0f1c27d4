"""xenpvh.build.apt: apt source lists, and the private apt tree for source and binary packages."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from xenpvh.build import debpkg
from xenpvh.build.apt import (
    DebPackage,
    Mirror,
    PrivateApt,
    release_mirrors,
    release_update_mirrors,
    system_mirrors,
)
from xenpvh.build.apt.private import Kind
from xenpvh.errors import BlockedError, BrokenError

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


# -- source lists and mirrors --------------------------------------------------------------


def test_release_update_mirrors_from_system_or_debian(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "deb http://m.example/debian bookworm main\n"
        "deb http://m.example/debian bookworm-updates contrib\n"  # no main: not used
        "deb http://m.example/debian trixie main\n"
    )
    assert release_update_mirrors("bookworm", tmp_path) == (
        Mirror("http://m.example/debian", "bookworm", ("main",)),
    )
    defaults = release_update_mirrors("bullseye", tmp_path)
    assert [(m.uri, m.suite) for m in defaults] == [
        ("http://deb.debian.org/debian", "bullseye"),
        ("http://deb.debian.org/debian", "bullseye-updates"),
        ("http://deb.debian.org/debian-security", "bullseye-security"),
    ]


def test_source_list_per_kind_and_inline_key(tmp_path: Path) -> None:
    inline = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nabc\n-----END PGP PUBLIC KEY BLOCK-----"
    mirrors = (Mirror("http://m/debian", "bookworm", ("main",), inline),)
    src = PrivateApt(tmp_path / "src", mirrors, kind="deb-src")
    assert src.write() is True
    assert src.write() is False  # unchanged: no refresh needed
    key = tmp_path / "src/keys/inline-0.asc"
    assert key.read_text() == inline + "\n"
    assert (
        f"deb-src [signed-by={key}] http://m/debian bookworm main" in src.sources_list.read_text()
    )
    binary = PrivateApt(tmp_path / "bin", mirrors[:1])
    binary.write()
    assert "\ndeb [signed-by=" in binary.sources_list.read_text()
    assert (tmp_path / "bin/status").read_text() == ""
    with pytest.raises(BlockedError, match="no Debian mirror"):
        PrivateApt(tmp_path, ())


# -- the private apt against fake apt tools ------------------------------------------------

DEB = b"!<arch>\nnot really a deb"
FAKE_APT_GET = r"""
import os, pathlib, sys
args = sys.argv[1:]
opts = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "-o")
calls = pathlib.Path(os.environ["FAKE_APT_CALLS"])
with calls.open("a") as f:
    f.write(" ".join(a for a in args if a in ("update", "download", "source")) + "\n")
spec = args[-1]
name, _, version = spec.partition("=")
if "update" in args:
    if os.environ.get("FAKE_APT_UPDATE") == "fail":
        print("Err:1 http://m/debian bookworm InRelease\nE: Failed to fetch")
        sys.exit(100)
    lists = pathlib.Path(opts["Dir::State::Lists"])
    (lists / "m_debian_dists_bookworm_main_binary-amd64_Packages").write_text("x")
    (lists / "m_debian_dists_bookworm_main_source_Sources").write_text("x")
elif "download" in args:
    if name == "missing":
        print(f"E: Can't find a source to download version '{version}' of '{name}:amd64'")
        sys.exit(100)
    pathlib.Path(f"{name}_{version.split(':')[-1]}_amd64.deb").write_bytes(DEB)
elif "source" in args:
    if name == "missing":
        print(f"E: Unable to find a source package for {name}")
        sys.exit(100)
    pathlib.Path(f"{name}_{version.split(':')[-1]}.dsc").write_text("Format: 3.0 (quilt)\n")
"""
FAKE_APT_CACHE = r"""
import sys
args = sys.argv[1:]
if "policy" in args:
    for name in args[args.index("policy") + 1:]:
        candidate = "(none)" if name == "missing" else "1:1.35.0-4+b1"
        print(f"{name}:\n  Installed: (none)\n  Candidate: {candidate}\n  Version table:")
elif "show" in args:
    print("Package: busybox-static\nVersion: 1:1.35.0-4+b1\n"
          "Filename: pool/main/b/busybox/busybox-static_1.35.0-4+b1_amd64.deb\n"
          f"Size: {len(DEB)}\nSHA256: {SHA}\nDescription: busybox\n more\n .\n end\n")
elif "showsrc" in args:
    for version in ("4.17.5+23-ga4e5191dc0-1", "4.17.3+10-g091466ba55-1~deb12u1", "4.17.5+~1"):
        print(f"Package: xen\nBinary: xen-utils\nVersion: {version}\n")
"""


@dataclass
class FakeApt:
    apt: PrivateApt
    calls: Path

    def commands(self) -> list[str]:
        return self.calls.read_text().split("\n")[:-1] if self.calls.exists() else []


def _tool(path: Path, body: str) -> None:
    header = f"#!{sys.executable}\nDEB = {DEB!r}\nSHA = {hashlib.sha256(DEB).hexdigest()!r}\n"
    path.write_text(header + body)
    path.chmod(0o755)


@pytest.fixture
def fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fake apt-get and apt-cache first on PATH; returns the file they log their calls to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _tool(bin_dir / "apt-get", FAKE_APT_GET)
    _tool(bin_dir / "apt-cache", FAKE_APT_CACHE)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_APT_CALLS", str(tmp_path / "calls"))
    return tmp_path / "calls"


def _fake_apt(calls: Path, kind: Kind) -> FakeApt:
    mirrors = (Mirror("http://m/debian", "bookworm", ("main",)),)
    return FakeApt(PrivateApt(calls.parent / "apt", mirrors, kind=kind), calls)


@pytest.fixture(params=["deb", "deb-src"])
def fake_apt(request: pytest.FixtureRequest, fake_tools: Path) -> FakeApt:
    """A private apt of either kind over the fake tools."""
    return _fake_apt(fake_tools, request.param)


def test_update_only_when_needed(fake_apt: FakeApt) -> None:
    fake_apt.apt.update()
    fake_apt.apt.update()  # fresh lists, same sources
    assert fake_apt.commands() == ["update"]
    fake_apt.apt.update(max_age=0)
    fake_apt.apt.update(force=True)
    assert fake_apt.commands() == ["update"] * 3


def test_failed_refresh_keeps_old_lists_but_a_forced_one_fails(
    fake_apt: FakeApt, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_apt.apt.update()
    monkeypatch.setenv("FAKE_APT_UPDATE", "fail")
    fake_apt.apt.update(max_age=0)  # stale lists, mirror down: yesterday's lists still do
    assert "keeping the old apt lists" in caplog.text
    with pytest.raises(BrokenError, match="Failed to fetch"):
        fake_apt.apt.update(force=True)


def test_failed_first_update_is_broken(fake_apt: FakeApt, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_APT_UPDATE", "fail")
    with pytest.raises(BrokenError, match="updating the private apt lists"):
        fake_apt.apt.update()


def test_binary_packages(fake_tools: Path, tmp_path: Path) -> None:
    fake_apt = _fake_apt(fake_tools, "deb")
    apt = fake_apt.apt
    pkg = DebPackage("busybox-static", "1:1.35.0-4+b1")
    assert apt.candidates("busybox-static") == {"busybox-static": pkg}
    with pytest.raises(BlockedError, match="no installable package missing"):
        apt.candidates("missing")
    assert apt.record(pkg)["description"] == "busybox\nmore\n\nend"
    deb = apt.download_package(pkg, tmp_path / "out")
    assert deb == tmp_path / "out/busybox-static_1.35.0-4+b1_amd64.deb"
    assert deb.read_bytes() == DEB
    apt.download_package(pkg, tmp_path / "again")  # from the private archive
    assert fake_apt.commands().count("download") == 1
    with pytest.raises(BlockedError, match="not on the mirrors"):
        apt._fetch_package(DebPackage("missing", "1"), {"sha256": "0"}, tmp_path / "x.deb")


def test_source_packages(fake_tools: Path) -> None:
    fake_apt = _fake_apt(fake_tools, "deb-src")
    apt = fake_apt.apt
    assert apt.source_versions("xen") == [
        "4.17.3+10-g091466ba55-1~deb12u1",
        "4.17.5+~1",
        "4.17.5+23-ga4e5191dc0-1",
    ]
    assert apt.resolve_source_version("xen", None) == "4.17.5+23-ga4e5191dc0-1"
    with pytest.raises(BlockedError, match=r"no version 9\.9-1"):
        apt.resolve_source_version("xen", "9.9-1")
    assert fake_apt.commands() == ["update", "update"]  # a missing version refreshes once
    dsc = apt.download_source("xen", "1:4.17.5-1")
    assert dsc == apt.root / "sources/xen_4.17.5-1/xen_4.17.5-1.dsc"
    assert apt.download_source("xen", "1:4.17.5-1") == dsc
    assert fake_apt.commands().count("source") == 1
    with pytest.raises(BlockedError, match="not on the mirrors"):
        apt.download_source("missing", "1-1")
    assert not list(apt.source_downloads.glob(".download-*"))


def test_source_lists_keep_the_words_they_were_first_written_with(tmp_path: Path) -> None:
    """The trees in users' caches predate the one PrivateApt: the same first line means no
    refresh of their lists just because the code moved."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/sources.list").write_text("deb http://m/debian bookworm main\n")
    src = PrivateApt.for_sources(tmp_path / "src", etc=tmp_path / "etc")
    src.write()
    assert src.sources_list.read_text().splitlines()[0] == (
        "# Written by xenpvh: deb-src twins of the system's release entries."
    )
    assert debpkg.private_apt().comment == "the Debian 12 entries the guest kit is built from."
