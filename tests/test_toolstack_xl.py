"""Xl driver against a fake Host answering like xl 4.17 (argv recorded, outputs as xl prints)."""

from __future__ import annotations

import pytest
from test_toolstack_fakes import XL_INFO, FakeXenHost

from xenpvh.errors import BlockedError, BrokenError, CommandFailed
from xenpvh.toolstack.xl import Xl, parse_info, parse_list, version_string


def _cfg(host: FakeXenHost, name: str, typ: str = 'type = "pvh"') -> str:
    path = f"/var/lib/xenpvh/runs/r/{name}.cfg"
    host.files[path] = f'name = "{name}"\n{typ}\nkernel = "/k"\n'.encode()
    return path


def test_info_and_version() -> None:
    info = parse_info(XL_INFO)
    assert info["xen_major"] == "4" and info["virt_caps"] == "pv hvm hap"
    assert info["xen_commandline"].endswith("max:1024M")
    assert version_string(info) == "4.17.5"
    assert version_string({"xen_major": "4", "xen_minor": "8", "xen_extra": "-rc"}) == "4.8"
    with pytest.raises(BrokenError, match="xen_major"):
        parse_info("Linux box 6.1\n")


def test_list_parses_xl_rows(host: FakeXenHost) -> None:
    doms = Xl(host).list()
    assert [(d.name, d.domid, d.state) for d in doms] == [("Domain-0", 0, "-b----")]
    with pytest.raises(BrokenError, match="not understood"):
        parse_list("Name ID Mem VCPUs State Time(s)\ngarbage\n")


def test_create_paused_unpause_type_destroy(host: FakeXenHost) -> None:
    xl = Xl(host)
    dom = xl.create(_cfg(host, "xenpvh-a"), paused=True)
    assert (dom.name, dom.domid) == ("xenpvh-a", 1)
    assert ("xl", "create", "-p", "--", "/var/lib/xenpvh/runs/r/xenpvh-a.cfg") in host.calls
    assert host.domains["xenpvh-a"]["paused"]
    xl.verify_pvh("xenpvh-a")
    xl.unpause("xenpvh-a")
    assert not host.domains["xenpvh-a"]["paused"]
    assert xl.destroy("xenpvh-a") is True
    assert xl.destroy("xenpvh-a") is False  # idempotent
    assert [d.name for d in xl.list()] == ["Domain-0"]


def test_pvhv1_option_yields_pv_and_is_blocked(host: FakeXenHost) -> None:
    xl = Xl(host)
    xl.create(_cfg(host, "xenpvh-v1", "pvh = 1"), name="xenpvh-v1")
    assert xl.domain_type("xenpvh-v1") == "pv"
    with pytest.raises(BlockedError, match="type 'pv', not 'pvh'"):
        xl.verify_pvh("xenpvh-v1")


def test_sweep_only_touches_prefixed_domains(host: FakeXenHost) -> None:
    xl = Xl(host)
    for n in ("xenpvh-old1", "xenpvh-old2", "xenpvh-mine", "other"):
        xl.create(_cfg(host, n))
    assert xl.sweep("xenpvh-", keep=("xenpvh-mine",)) == ["xenpvh-old1", "xenpvh-old2"]
    assert sorted(d.name for d in xl.list()) == ["Domain-0", "other", "xenpvh-mine"]
    with pytest.raises(BlockedError):
        xl.sweep("")


def test_create_failure_names_command(host: FakeXenHost) -> None:
    from xenpvh.host.base import CommandResult

    host.fail["xl create"] = CommandResult(
        ("xl", "create"), 3, b"", b"libxl: error: neither hap nor shadow paging available\n"
    )
    with pytest.raises(CommandFailed, match="neither hap nor shadow"):
        Xl(host).create(_cfg(host, "xenpvh-b"))


def test_names_are_checked_before_reaching_xl(host: FakeXenHost) -> None:
    with pytest.raises(BlockedError, match="not allowed"):
        Xl(host).destroy("--help")
    with pytest.raises(BlockedError):
        Xl(host).unpause("a b")
    assert host.calls == []
