"""The libvirt driver against libvirt's own `test://` driver, with fakes only at boundaries.

`FakeLibxl` stands in for libvirtd's libxl driver: every domain operation is performed by a
real, private `test://<node.xml>` libvirt driver (define, start, suspend/resume, destroy,
undefine, lookups and their real libvirtError codes); what the test driver cannot know is
added at the boundary: Xen's version and capabilities, starting paused (the test driver
refuses VIR_DOMAIN_START_PAUSED, so the fake starts and suspends), and the mirroring of a
started domain into the fake dom0's `xl` view (FakeXenHost), as libxl does on a real dom0.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import libvirt
import pytest
from test_run_boot import FakeXenStore
from test_toolstack_fakes import XL_INFO, FakeXenHost

from xenpvh.check.verdict import VerdictValue
from xenpvh.errors import BlockedError, BrokenError, RenderError
from xenpvh.host.base import CommandResult
from xenpvh.profile import load_profile
from xenpvh.profile.domain import DomainSpec
from xenpvh.run.boot import BootRun, RunHooks, RunLimits, RunOptions
from xenpvh.toolstack.libvirt import (
    Libvirt,
    LibvirtCallError,
    LibvirtInputError,
    SocketRelay,
    caps_os_types,
    os_machine,
    version_string,
    xml_name,
)
from xenpvh.toolstack.registry import get_toolstack
from xenpvh.toolstack.xenstore import relay_argv

NODE = (
    "<node><cpu><mhz>2000</mhz><model>i686</model><active>2</active><nodes>1</nodes>"
    "<sockets>1</sockets><cores>2</cores><threads>1</threads></cpu>"
    "<memory>8000000</memory></node>"
)
# Abridged from libvirt 9.0's libxl driver on Xen 4.17 (virsh capabilities).
CAPS = """<capabilities>
  <host><cpu><arch>x86_64</arch></cpu></host>
  <guest><os_type>xen</os_type><arch name='x86_64'><machine>xenpv</machine>
    <domain type='xen'/></arch></guest>
  <guest><os_type>hvm</os_type><arch name='x86_64'><machine>xenfv</machine>
    <domain type='xen'/></arch></guest>
  <guest><os_type>xenpvh</os_type><arch name='x86_64'><machine>xenpvh</machine>
    <domain type='xen'/></arch></guest>
</capabilities>
"""
CAPS_NO_PVH = CAPS.replace("xenpvh", "xenfv")


def _to_test_xml(xml: str) -> str:
    """The libxl-driver XML as the test driver accepts it (domain type test, os hvm)."""
    root = ET.fromstring(xml)
    root.set("type", "test")
    t = root.find("os/type")
    assert t is not None
    t.text = "hvm"
    t.attrib.pop("machine", None)
    return ET.tostring(root, encoding="unicode")


class FakeDom:
    def __init__(self, fake: FakeLibxl, real: Any) -> None:
        self.fake = fake
        self.real = real

    def name(self) -> str:
        return self.real.name()

    def ID(self) -> int:
        return self.real.ID()

    def isActive(self) -> int:
        return self.real.isActive()

    def isPersistent(self) -> int:
        return self.real.isPersistent()

    def state(self) -> list[int]:
        return self.real.state()

    def createWithFlags(self, flags: int) -> int:
        self.fake.calls.append(("createWithFlags", self.name(), flags))
        if self.fake.fail_start:
            # The test driver's own refusal: a genuine libvirtError with a real code.
            return self.real.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        self.real.create()
        if flags & libvirt.VIR_DOMAIN_START_PAUSED:
            self.real.suspend()
        _os_type, machine = os_machine(self.fake.defined[self.name()])
        self.fake.host.domains[self.name()] = {
            "domid": self.real.ID(),
            "type": self.fake.libxl_type or ("pvh" if machine == "xenpvh" else "pv"),
            "paused": bool(flags & libvirt.VIR_DOMAIN_START_PAUSED),
            "mem": 256,
            "vcpus": 2,
        }
        return 0

    def resume(self) -> int:
        self.fake.calls.append(("resume", self.name()))
        self.real.resume()
        self.fake.host.domains[self.name()]["paused"] = False
        return 0

    def destroy(self) -> int:
        self.fake.calls.append(("destroy", self.name()))
        self.real.destroy()
        dom = self.fake.host.domains.pop(self.name(), None)
        if dom is not None and dom.get("console") is not None:
            dom["console"].close(force=True)
        return 0

    def undefine(self) -> int:
        self.fake.calls.append(("undefine", self.name()))
        return self.real.undefine()

    def XMLDesc(self, flags: int = 0) -> str:
        # libvirt reports the os type it was given; the test driver only knows hvm.
        root = ET.fromstring(self.real.XMLDesc(flags))
        root.set("type", "xen")
        orig = ET.fromstring(self.fake.defined[self.name()]).find("os/type")
        t = root.find("os/type")
        assert t is not None and orig is not None
        t.text, t.attrib = orig.text, dict(orig.attrib)
        return ET.tostring(root, encoding="unicode")


class FakeLibxl:
    """A libvirt connection to a 'libxl driver' (see the module docstring)."""

    def __init__(self, host: FakeXenHost, node: Path) -> None:
        self.host = host
        self.conn = libvirt.open(f"test://{node}")
        # libvirt's libxl driver drops Xen's release: 4.17.5 is reported as 4.17.0.
        self.version = 4_017_000
        self.lib_version = 9_000_000
        self.caps = CAPS
        self.libxl_type: str | None = None  # what libxl "builds" (None: follow the XML)
        self.fail_start = False
        self.defined: dict[str, str] = {}
        self.calls: list[tuple[object, ...]] = []
        self.closed = False

    def getType(self) -> str:
        return "Xen"

    def getVersion(self) -> int:
        return self.version

    def getLibVersion(self) -> int:
        return self.lib_version

    def getCapabilities(self) -> str:
        return self.caps

    def defineXML(self, xml: str) -> FakeDom:
        self.calls.append(("defineXML", xml_name(xml)))
        real = self.conn.defineXML(_to_test_xml(xml))
        self.defined[real.name()] = xml
        return FakeDom(self, real)

    def lookupByName(self, name: str) -> FakeDom:
        return FakeDom(self, self.conn.lookupByName(name))

    def listAllDomains(self, flags: int = 0) -> list[FakeDom]:
        return [FakeDom(self, d) for d in self.conn.listAllDomains(flags)]

    def close(self) -> int:
        self.closed = True
        return self.conn.close()


class LibvirtDom0(FakeXenHost):
    """FakeXenHost plus `tail -c N` (the last N bytes), which the libvirt driver uses."""

    def _answer(self, argv: tuple[str, ...]) -> CommandResult:
        if argv[:2] == ("tail", "-c") and not argv[2].startswith("+"):
            data = self.files.get(argv[-1])
            if data is None:
                return CommandResult(argv, 1, b"", b"tail: No such file or directory")
            return CommandResult(argv, 0, data[-int(argv[2]) :], b"")
        return super()._answer(argv)


@pytest.fixture
def fake_host_class() -> type[LibvirtDom0]:
    """conftest's `host` fixture makes this subclass here."""
    return LibvirtDom0


@pytest.fixture
def fake(host: FakeXenHost, tmp_path: Path) -> FakeLibxl:
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    return FakeLibxl(host, node)


@pytest.fixture
def lv(host: FakeXenHost, fake: FakeLibxl):
    t = Libvirt(host, connect=lambda: fake, timeout=10)
    yield t
    t.close()


def _spec(name: str = "xenpvh-t1", **kw: Any) -> DomainSpec:
    base = {"name": name, "kernel": "/var/lib/xenpvh/kernels/k", "memory_mb": 256, "vcpus": 2}
    return DomainSpec(**{**base, **kw})


def _upload(host: FakeXenHost, lv: Libvirt, spec: DomainSpec) -> str:
    prepared = lv.prepare(spec)
    path = f"/var/lib/xenpvh/runs/r/{prepared.filename}"
    host.files[path] = prepared.config.encode()
    return path


# -- pure helpers --------------------------------------------------------------------------


def test_version_string_decodes_libvirt_numbers() -> None:
    assert version_string(4_017_005) == "4.17.5"
    assert version_string(9_000_000) == "9.0.0"
    with pytest.raises(BrokenError):
        version_string(0)


def test_xml_helpers() -> None:
    xml = "<domain type='xen'><name>a</name><os><type machine='xenpvh'>xenpvh</type></os></domain>"
    assert xml_name(xml) == "a"
    assert os_machine(xml) == ("xenpvh", "xenpvh")
    assert caps_os_types(CAPS) == {"xen", "hvm", "xenpvh"}
    with pytest.raises(BlockedError, match="not well-formed"):
        xml_name("<domain")
    with pytest.raises(BlockedError, match="no <domain><name>"):
        xml_name("<domain/>")


def test_get_toolstack_returns_the_libvirt_driver(host: FakeXenHost) -> None:
    t = get_toolstack("libvirt", host)
    assert isinstance(t, Libvirt) and t.name == "libvirt" and t.host is host
    t.close()


# -- prepare -------------------------------------------------------------------------------


def test_prepare_renders_pvh_xml_and_reads_xen_version(lv: Libvirt) -> None:
    p = lv.prepare(_spec())
    assert p.filename == "domain.xml" and p.xen_version == "4.17.5"
    assert os_machine(p.config) == ("xenpvh", "xenpvh")
    assert "libvirt 9.0.0, driver Xen, Xen 4.17.0" in p.host_info
    assert "xen_extra              : .5" in p.host_info  # the exact version: `xl info`


def test_prepare_refuses_libvirt_and_xl_disagreeing(lv: Libvirt, fake: FakeLibxl) -> None:
    fake.version = 4_016_000
    with pytest.raises(BrokenError, match=r"reports Xen 4\.16\.0 but `xl info` says 4\.17\.5"):
        lv.prepare(_spec())


def test_prepare_blocks_without_pvh_capability(lv: Libvirt, fake: FakeLibxl) -> None:
    fake.caps = CAPS_NO_PVH
    with pytest.raises(BlockedError, match="no 'xenpvh' guest type"):
        lv.prepare(_spec())


def test_prepare_blocks_old_xen_and_old_libvirt(
    host: FakeXenHost, lv: Libvirt, fake: FakeLibxl
) -> None:
    host.fail["xl info"] = CommandResult(
        ("xl", "info"), 0, XL_INFO.replace(": 17", ": 9").replace(".5", ".0").encode(), b""
    )
    fake.version = 4_009_000
    with pytest.raises(BlockedError, match=r"Xen 4\.9\.0: PVHv2 needs Xen >= 4\.10"):
        lv.prepare(_spec())
    del host.fail["xl info"]
    fake.version, fake.lib_version = 4_017_000, 4_005_000
    with pytest.raises(BlockedError, match=r"libvirt >= 4\.10"):
        lv.prepare(_spec())


def test_unrenderable_spec_is_blocked_before_connecting(host: FakeXenHost) -> None:
    def connect() -> Any:
        raise AssertionError("must not connect")

    t = Libvirt(host, connect=connect)
    with pytest.raises(RenderError, match="PVHv2"):
        t.prepare(_spec(mode="pv"))


# -- create / verify / unpause / destroy ---------------------------------------------------


def test_lifecycle_define_start_paused_resume_destroy_undefine(
    host: FakeXenHost, lv: Libvirt, fake: FakeLibxl
) -> None:
    path = _upload(host, lv, _spec())
    dom = lv.create(path, True, name="xenpvh-t1")
    real = fake.conn.lookupByName("xenpvh-t1")
    assert dom.domid == real.ID() > 0
    assert real.state()[0] == libvirt.VIR_DOMAIN_PAUSED and real.isPersistent()
    assert host.domains["xenpvh-t1"]["paused"] is True
    assert ("createWithFlags", "xenpvh-t1", libvirt.VIR_DOMAIN_START_PAUSED) in fake.calls

    lv.verify_pvh("xenpvh-t1")
    assert ("xl", "list", "-l", "xenpvh-t1") in host.calls  # libxl's word, not only libvirt's

    lv.unpause("xenpvh-t1")
    assert real.state()[0] == libvirt.VIR_DOMAIN_RUNNING

    assert lv.destroy("xenpvh-t1") is True
    assert lv.lookup("xenpvh-t1") is None  # undefined, not just stopped
    assert "xenpvh-t1" not in host.domains
    assert lv.destroy("xenpvh-t1") is False  # idempotent


def test_create_without_name_takes_it_from_the_xml(host: FakeXenHost, lv: Libvirt) -> None:
    path = _upload(host, lv, _spec("xenpvh-named"))
    assert lv.create(path).name == "xenpvh-named"
    assert lv.destroy("xenpvh-named")


def test_create_refuses_a_name_mismatch(host: FakeXenHost, lv: Libvirt, fake: FakeLibxl) -> None:
    path = _upload(host, lv, _spec("xenpvh-a"))
    with pytest.raises(BlockedError, match="defines domain 'xenpvh-a', expected 'xenpvh-b'"):
        lv.create(path, name="xenpvh-b")
    assert fake.calls == []


def test_failed_start_undefines_again(host: FakeXenHost, lv: Libvirt, fake: FakeLibxl) -> None:
    path = _upload(host, lv, _spec())
    fake.fail_start = True
    with pytest.raises(LibvirtCallError, match="createWithFlags"):
        lv.create(path, name="xenpvh-t1")
    assert lv.lookup("xenpvh-t1") is None
    assert ("undefine", "xenpvh-t1") in fake.calls


def test_libvirt_rejecting_the_xml_is_blocked(host: FakeXenHost, lv: Libvirt) -> None:
    path = _upload(host, lv, _spec())
    bad = host.files[path].decode().replace('<memory unit="MiB">256', '<memory unit="MiB">lots')
    assert "lots" in bad
    host.files[path] = bad.encode()
    with pytest.raises(LibvirtInputError, match="refused the domain XML") as e:
        lv.create(path, name="xenpvh-t1")
    assert e.value.code == libvirt.VIR_ERR_XML_ERROR


def test_verify_pvh_blocks_when_libxl_built_pv(
    host: FakeXenHost, lv: Libvirt, fake: FakeLibxl
) -> None:
    fake.libxl_type = "pv"
    lv.create(_upload(host, lv, _spec()), name="xenpvh-t1")
    with pytest.raises(BlockedError, match="built as type 'pv', not 'pvh'"):
        lv.verify_pvh("xenpvh-t1")
    lv.destroy("xenpvh-t1")


def test_verify_pvh_blocks_when_live_xml_is_not_xenpvh(
    host: FakeXenHost, lv: Libvirt, fake: FakeLibxl
) -> None:
    path = _upload(host, lv, _spec())
    host.files[path] = (
        host.files[path]
        .replace(b"xenpvh<", b"xen<")
        .replace(b'machine="xenpvh"', b'machine="xenpv"')
    )
    lv.create(path, name="xenpvh-t1")
    with pytest.raises(BlockedError, match="not xenpvh"):
        lv.verify_pvh("xenpvh-t1")
    lv.destroy("xenpvh-t1")


def test_destroy_also_removes_a_domain_only_xl_knows(host: FakeXenHost, lv: Libvirt) -> None:
    host.domains["xenpvh-lost"] = {"domid": 7, "type": "pvh", "paused": False, "mem": 1, "vcpus": 1}
    assert lv.destroy("xenpvh-lost") is True
    assert "xenpvh-lost" not in host.domains


def test_sweep_destroys_and_undefines_stale_domains(
    host: FakeXenHost, lv: Libvirt, fake: FakeLibxl
) -> None:
    for n in ("xenpvh-old", "xenpvh-mine", "other"):
        lv.create(_upload(host, lv, _spec(n)), name=n)
    lv.connection().defineXML(lv.prepare(_spec("xenpvh-defined-only")).config)
    host.domains["xenpvh-xl"] = {"domid": 9, "type": "pvh", "paused": False, "mem": 1, "vcpus": 1}
    gone = lv.sweep("xenpvh-", keep=("xenpvh-mine",))
    assert sorted(gone) == ["xenpvh-defined-only", "xenpvh-old", "xenpvh-xl"]
    assert sorted(lv.list_names()) == ["other", "xenpvh-mine"]
    assert sorted(host.domains) == ["Domain-0", "other", "xenpvh-mine"]
    with pytest.raises(BlockedError):
        lv.sweep("")
    lv.destroy("xenpvh-mine")
    lv.destroy("other")


def test_collect_writes_host_and_libvirt_evidence(
    host: FakeXenHost, lv: Libvirt, tmp_path: Path
) -> None:
    lv.create(_upload(host, lv, _spec()), name="xenpvh-t1")
    host.files["/var/log/libvirt/libxl/xenpvh-t1.log"] = b"libxl: domain created\n"
    with pytest.raises(BrokenError, match="libvirtd-journal"):  # the fake has no journalctl
        lv.collect(tmp_path)
    assert (tmp_path / "xl-dmesg.txt").read_text().startswith("(XEN)")
    assert "xenpvh" in (tmp_path / "libvirt-capabilities.xml").read_text()
    assert os_machine((tmp_path / "domain-live.xml").read_text()) == ("xenpvh", "xenpvh")
    assert (tmp_path / "libvirt-libxl.log").read_bytes() == b"libxl: domain created\n"
    lv.destroy("xenpvh-t1")


# -- deadlines and stderr ------------------------------------------------------------------


class _Wedged:
    """A connection whose daemon never answers."""

    def __init__(self) -> None:
        self.closed = threading.Event()

    def getType(self) -> str:
        self.closed.wait(30)
        return "Xen"

    def close(self) -> int:
        self.closed.set()
        return 0


def test_every_call_has_a_deadline(host: FakeXenHost) -> None:
    wedged = _Wedged()
    t = Libvirt(host, connect=lambda: wedged, timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(BrokenError, match=r"getType .* did not answer within 0.3s"):
        t.prepare(_spec())
    assert time.monotonic() - t0 < 3
    # The wedged connection was dropped, so the next call reconnects instead of queueing.
    assert wedged.closed.wait(5)
    assert "conn" not in t._held


_STDERR_PROBE = """
import sys, libvirt
from xenpvh.toolstack.libvirt import Libvirt
from test_run_boot import FakeXenStore
from test_toolstack_fakes import XL_INFO, FakeXenHost
conn = libvirt.open("test:///default")
if sys.argv[1] == "driver":
    lv = Libvirt(FakeXenHost(), connect=lambda: conn)
    assert lv.lookup("xenpvh-missing") is None
else:
    try:
        conn.lookupByName("xenpvh-missing")
    except libvirt.libvirtError:
        pass
"""


@pytest.mark.host
@pytest.mark.parametrize("mode", ["driver", "control"])
def test_libvirt_errors_do_not_reach_stderr(mode: str) -> None:
    # A fresh process: libvirt's error handler is process-global state.
    r = subprocess.run(
        [sys.executable, "-c", _STDERR_PROBE, mode],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent,
        env={**os.environ, "PYTHONPATH": f"{Path(__file__).parent}:{Path(__file__).parents[1]}"},
    )
    assert r.returncode == 0, r.stderr
    if mode == "driver":
        assert r.stderr == ""
    else:  # libvirt's default prints, so the assertion above can fail
        assert "Domain not found" in r.stderr


# -- the relay (real processes: python3 relay under LocalHost, a real unix socket) ---------


@pytest.mark.host
def test_socket_relay_splices_to_a_remote_unix_socket(tmp_path: Path) -> None:
    from xenpvh.host.local import LocalHost

    target = tmp_path / "daemon.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(target))
    srv.listen(1)

    def echo_upper() -> None:
        c, _ = srv.accept()
        with c:
            while data := c.recv(4096):
                c.sendall(data.upper())

    threading.Thread(target=echo_upper, daemon=True).start()
    local = LocalHost()
    relay = SocketRelay(lambda: local.open_stream(relay_argv(str(target))))
    path = relay.start()
    try:
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        cli.settimeout(10)
        cli.connect(path)
        payload = b"hello libvirtd " * 10000
        cli.sendall(payload)
        got = b""
        while len(got) < len(payload):
            got += cli.recv(65536)
        assert got == payload.upper()
        cli.close()
    finally:
        relay.close()
        srv.close()
    assert not os.path.exists(os.path.dirname(path))


@pytest.mark.host
def test_socket_relay_ends_the_client_when_the_daemon_is_missing(tmp_path: Path) -> None:
    from xenpvh.host.local import LocalHost

    local = LocalHost()
    relay = SocketRelay(lambda: local.open_stream(relay_argv(str(tmp_path / "absent.sock"))))
    path = relay.start()
    try:
        cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        cli.settimeout(10)
        cli.connect(path)
        t0 = time.monotonic()
        assert cli.recv(10) == b""  # EOF, not a hang
        assert time.monotonic() - t0 < 5
        cli.close()
    finally:
        relay.close()


@pytest.mark.host
def test_unreachable_libvirtd_is_broken_with_a_diagnosis(tmp_path: Path) -> None:
    """The real relay + real libvirt client against a socket path where no daemon listens."""
    from xenpvh.host.local import LocalHost

    t = Libvirt(LocalHost(), socket_path=str(tmp_path / "no-libvirt-sock"), timeout=20)
    with pytest.raises(BrokenError, match=r"no-libvirt-sock does not exist"):
        t.connection()
    assert "relay" not in t._held
    t.close()


# -- the whole run, with the driver in place of xl -----------------------------------------

GOOD = (
    b"Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)\n"
    b"Booting paravirtualized kernel on Xen PVH\n"
    b"smp: Brought up 1 node, 2 CPUs\n"
    b"Run /init as init process\n"
    b"blkfront: xvda: flush diskcache: enabled; persistent grants: enabled;\n"
    b"xenpvh-init: netfront eth0 up\n"
    b"xenpvh-guest login: "
)


def test_boot_run_with_libvirt_creates_paused_and_always_cleans_up(
    host: FakeXenHost, lv: Libvirt, fake: FakeLibxl, tmp_path: Path
) -> None:
    profile = load_profile("linux-pvh")
    k, r = tmp_path / "vmlinuz", tmp_path / "initrd"
    k.write_bytes(b"kernel")
    r.write_bytes(b"initrd")
    host.console = GOOD
    run = BootRun(
        host,
        profile,
        profile.point(kernel=str(k), ramdisk=str(r), vcpus=2),
        options=RunOptions(toolstack=lv),
        artifacts=tmp_path / "art",
        hooks=RunHooks(xenstore_factory=lambda h: FakeXenStore({"vbd": 4, "vif": 4})),
        limits=RunLimits(timeout=30),
    )
    v = run.run()
    assert v.verdict == VerdictValue.PASS, v.reason
    assert v.meta["toolstack"] == "libvirt"
    assert os_machine((tmp_path / "art" / "domain.xml").read_text()) == ("xenpvh", "xenpvh")
    # Start paused, attach the console, then resume: the guest's first byte is not missed.
    name = run.domain_name
    seq = [c[0] for c in fake.calls if c[1] == name]
    assert seq[:3] == ["defineXML", "createWithFlags", "resume"]
    spawn = next(i for i, c in enumerate(host.calls) if c[0] == "<spawn>")
    assert host.calls[spawn][1:] == ("xl", "console", "-t", "pv", name)
    assert seq[-2:] == ["destroy", "undefine"]
    assert lv.list_names() == [] and list(host.domains) == ["Domain-0"]


def test_boot_run_undefines_even_when_pvh_check_blocks(
    host: FakeXenHost, lv: Libvirt, fake: FakeLibxl, tmp_path: Path
) -> None:
    profile = load_profile("linux-pvh")
    k, r = tmp_path / "vmlinuz", tmp_path / "initrd"
    k.write_bytes(b"kernel")
    r.write_bytes(b"initrd")
    fake.libxl_type = "pv"
    run = BootRun(
        host,
        profile,
        profile.point(kernel=str(k), ramdisk=str(r), vcpus=2),
        options=RunOptions(toolstack=lv),
        artifacts=tmp_path / "art",
        hooks=RunHooks(xenstore_factory=lambda h: FakeXenStore({"vbd": 4, "vif": 4})),
        limits=RunLimits(timeout=30),
    )
    v = run.run()
    assert v.verdict == VerdictValue.BLOCKED and "not 'pvh'" in v.reason, v.reason
    assert lv.list_names() == [] and list(host.domains) == ["Domain-0"]
