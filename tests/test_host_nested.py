"""NestedHost: pure tests of the QEMU command line, accelerator detection, state file and
image recipe; host tests of failure paths with real QEMU; a live test booting real Xen."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from xenpvh.build.apt import debian_mirror
from xenpvh.build.cache import ArtifactCache
from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.base import Host
from xenpvh.host.image import ImageBuilder
from xenpvh.host.image_recipe import ImageRecipe, role_packages, roles_digest
from xenpvh.host.nested import (
    DEFAULT_XEN_CMDLINE,
    TCG_FAULTS,
    NestedHost,
    NestedRecord,
    NestedState,
    QemuConfig,
    detect_accel,
    prune_warm,
    reap_stale_run_dirs,
)
from xenpvh.host.qmp import Qmp


def _cfg(tmp_path: Path, **kw: object) -> QemuConfig:
    base: dict[str, object] = dict(
        xen=tmp_path / "xen.elf",
        vmlinuz=tmp_path / "vmlinuz",
        initrd=tmp_path / "initrd.img",
        disk=tmp_path / "dom0.img",
        dom0_cmdline="root=/dev/vda rw console=hvc0",
        ssh_port=40022,
        serial_log=tmp_path / "host-serial.log",
        monitor=tmp_path / "qmp.sock",
    )
    base.update(kw)
    return QemuConfig(**base)  # type: ignore[arg-type]


def _opt(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


# -- QEMU argv -----------------------------------------------------------------------------


def test_argv_tcg(tmp_path: Path) -> None:
    argv = _cfg(tmp_path, tcg_thread="single").argv()
    assert argv[0] == "qemu-system-x86_64"
    assert _opt(argv, "-accel") == ["tcg,thread=single"]
    assert _opt(argv, "-cpu") == ["qemu64,+svm,+npt"]
    assert _opt(argv, "-m") == ["3G"]
    assert _opt(argv, "-smp") == ["2"]
    assert _opt(argv, "-kernel") == [str(tmp_path / "xen.elf")]
    assert _opt(argv, "-append") == [DEFAULT_XEN_CMDLINE]
    assert _opt(argv, "-initrd") == [
        f"{tmp_path}/vmlinuz root=/dev/vda rw console=hvc0,{tmp_path}/initrd.img"
    ]
    assert _opt(argv, "-drive") == [f"file={tmp_path}/dom0.img,if=virtio,format=raw,snapshot=on"]
    assert _opt(argv, "-netdev") == ["user,id=n0,hostfwd=tcp:127.0.0.1:40022-:22"]
    assert _opt(argv, "-device") == ["virtio-net-pci,netdev=n0"]
    assert _opt(argv, "-serial") == [f"file:{tmp_path}/host-serial.log"]
    assert _opt(argv, "-qmp") == [f"unix:{tmp_path}/qmp.sock,server=on,wait=off"]
    assert "-no-reboot" in argv
    assert _opt(argv, "-display") == ["none"]


def test_argv_kvm_and_overrides(tmp_path: Path) -> None:
    argv = _cfg(
        tmp_path, accel="kvm", memory="4G", cpus=4, xen_cmdline="console=com1", snapshot=False
    ).argv()
    assert _opt(argv, "-accel") == ["kvm"]
    assert "+svm" not in " ".join(argv)
    assert _opt(argv, "-append") == ["console=com1"]
    assert _opt(argv, "-m") == ["4G"] and _opt(argv, "-smp") == ["4"]
    assert "snapshot=on" not in _opt(argv, "-drive")[0]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"dom0_cmdline": "root=/dev/vda,console=hvc0"}, "must not contain ','"),
        ({"vmlinuz": Path("/a,b/vmlinuz")}, "must not contain ','"),
        ({"xen_cmdline": "console=com1\n-hda /etc/shadow"}, "one line"),
        ({"accel": "hax"}, "accel"),
        ({"ssh_port": 0}, "port"),
    ],
)
def test_argv_rejects_bad_input(tmp_path: Path, kw: dict[str, object], message: str) -> None:
    with pytest.raises(BlockedError, match=message):
        _cfg(tmp_path, **kw).argv()


def test_argv_loadvm(tmp_path: Path) -> None:
    argv = _cfg(
        tmp_path, disk=tmp_path / "warm.qcow2", disk_format="qcow2", snapshot=False, loadvm="s"
    ).argv()
    assert _opt(argv, "-loadvm") == ["s"]
    assert _opt(argv, "-drive") == [f"file={tmp_path}/warm.qcow2,if=virtio,format=qcow2"]
    with pytest.raises(BlockedError, match="loadvm needs a qcow2"):
        _cfg(tmp_path, loadvm="s").argv()  # raw + snapshot=on


def test_argv_qemu_debug_log(tmp_path: Path) -> None:
    """XENPVH_QEMU_DEBUG's items become `-d ITEMS -D FILE`; anything but a plain item list
    (an argv injection) is blocked."""
    log = tmp_path / "qemu-debug.log"
    argv = _cfg(tmp_path, debug="int,cpu_reset", debug_log=log).argv()
    assert _opt(argv, "-d") == ["int,cpu_reset"] and _opt(argv, "-D") == [str(log)]
    assert "-d" not in _cfg(tmp_path).argv()
    for bad in ("int -hda /etc/shadow", "int,", ""):
        with pytest.raises(BlockedError, match="QEMU debug items"):
            _cfg(tmp_path, debug=bad, debug_log=log).argv()


def test_prune_warm_keeps_most_recent(tmp_path: Path) -> None:
    for i in range(5):
        f = tmp_path / f"warm-{i}.qcow2"
        f.write_bytes(b"")
        os.utime(f, (1000 + i, 1000 + i))
    prune_warm(tmp_path, keep=3)
    assert sorted(p.name for p in tmp_path.glob("warm-*")) == [
        "warm-2.qcow2",
        "warm-3.qcow2",
        "warm-4.qcow2",
    ]


def test_qmp_client_against_a_scripted_peer(tmp_path: Path) -> None:
    path = tmp_path / "qmp.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(1)
    got: list[dict[str, object]] = []

    def peer() -> None:
        c, _ = srv.accept()
        f = c.makefile("rwb")
        f.write(b'{"QMP": {"version": {}, "capabilities": []}}\n')
        f.flush()
        for reply in (
            b'{"return": {}}\n',
            b'{"event": "RESUME"}\n{"return": "done"}\n',
            b'{"error": {"class": "GenericError", "desc": "no such snapshot"}}\n',
        ):
            got.append(json.loads(f.readline()))
            f.write(reply)
            f.flush()
        c.close()

    t = threading.Thread(target=peer)
    t.start()
    try:
        with Qmp(path, timeout=5) as q:
            assert q.hmp("savevm x") == "done"  # the event before the reply is skipped
            with pytest.raises(BrokenError, match="no such snapshot"):
                q.execute("loadvm")
    finally:
        t.join(5)
        srv.close()
    assert got[0] == {"execute": "qmp_capabilities"}
    assert got[1] == {
        "execute": "human-monitor-command",
        "arguments": {"command-line": "savevm x"},
    }


# -- accelerator detection -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("modules", "dev", "expected"),
    [
        ((), True, "tcg"),
        (("kvm", "kvm_pvm"), True, "tcg"),
        (("kvm", "kvm_intel"), True, "kvm"),
        (("kvm", "kvm_amd"), True, "kvm"),
        (("kvm", "kvm_amd"), False, "tcg"),
        (("kvm",), True, "tcg"),
    ],
)
def test_detect_accel(tmp_path: Path, modules: tuple[str, ...], dev: bool, expected: str) -> None:
    sysmod = tmp_path / "module"
    for m in modules:
        (sysmod / m).mkdir(parents=True)
    kvm = tmp_path / "kvm"
    if dev:
        kvm.write_bytes(b"")
    assert detect_accel(kvm, sysmod) == expected


def test_detect_accel_this_machine() -> None:
    # This machine's /dev/kvm is kvm_pvm: it must never be picked.
    if Path("/sys/module/kvm_pvm").exists():
        assert detect_accel() == "tcg"


# -- state file ----------------------------------------------------------------------------


def _record(tmp_path: Path, pid: int = 4242) -> NestedRecord:
    return NestedRecord(
        pid=pid,
        ssh_port=40022,
        serial_log=str(tmp_path / "host-serial.log"),
        monitor=str(tmp_path / "qmp.sock"),
        run_dir=str(tmp_path),
        client_key=str(tmp_path / "client_key"),
        known_hosts=str(tmp_path / "known_hosts"),
        started=1.0,
    )


def test_record_round_trip(tmp_path: Path) -> None:
    rec = _record(tmp_path)
    rec.save(tmp_path / "nested" / "state.json")
    assert NestedRecord.load(tmp_path / "nested" / "state.json") == rec
    assert NestedRecord.load(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(BrokenError, match="corrupt"):
        NestedRecord.load(tmp_path / "bad.json")


def test_record_alive_checks_cmdline(tmp_path: Path) -> None:
    rec = _record(tmp_path)
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    cmd = proc / "4242" / "cmdline"
    ours = ["/usr/bin/qemu-system-x86_64", "-qmp", f"unix:{rec.monitor},server=on,wait=off"]
    cmd.write_bytes(b"\0".join(a.encode() for a in ours) + b"\0")
    assert rec.alive(proc)
    # A recycled pid running something else, or another QEMU, is not ours.
    cmd.write_bytes(b"/usr/bin/sleep\x0099\x00")
    assert not rec.alive(proc)
    other = ["/usr/bin/qemu-system-x86_64", "-qmp", "unix:/elsewhere,server=on,wait=off"]
    cmd.write_bytes(b"\0".join(a.encode() for a in other))
    assert not rec.alive(proc)
    assert not _record(tmp_path, pid=1).alive(proc)


def test_record_alive_real_process_not_qemu(tmp_path: Path) -> None:
    p = subprocess.Popen(["sleep", "30"])
    try:
        assert not _record(tmp_path, pid=p.pid).alive()
    finally:
        p.kill()
        p.wait()


def test_nested_host_states_without_qemu(tmp_path: Path) -> None:
    h = NestedHost(state_file=tmp_path / "state.json")
    assert isinstance(h, Host)
    assert h.state is NestedState.ABSENT
    assert h.status().state is NestedState.ABSENT
    with pytest.raises(BrokenError, match="not ready"):
        h.run(["true"])
    with pytest.raises(BrokenError, match="not started"):
        h.ssh_command()
    h.down()  # nothing to stop: a no-op
    assert h.state is NestedState.ABSENT
    with pytest.raises(BrokenError, match="no running nested host"):
        NestedHost.attach(state_file=tmp_path / "state.json")


def test_stale_state_file_is_cleared(tmp_path: Path) -> None:
    sf = tmp_path / "state.json"
    p = subprocess.Popen(["true"])
    p.wait()
    _record(tmp_path, pid=p.pid).save(sf)  # that pid is gone (or not a qemu)
    h = NestedHost(state_file=sf)
    assert h.status().state is NestedState.STOPPED
    assert not sf.exists()


# -- image recipe and mirror ---------------------------------------------------------------


def test_recipe_key_tracks_inputs() -> None:
    a = ImageRecipe()
    assert a.key() == ImageRecipe().key()
    assert ImageRecipe(packages=(*a.packages, "vim")).key() != a.key()
    assert ImageRecipe(hostname="other").key() != a.key()
    assert ImageRecipe(extra_files={"etc/motd": b"hi"}).key() != a.key()
    # The package tarball only depends on suite and packages.
    assert ImageRecipe(hostname="other").packages_key() == a.packages_key()
    # The roles configure Xen, the bridge and the backends: a change in them rebuilds.
    assert ImageRecipe(roles="0" * 64).key() != a.key()
    assert ImageRecipe(role_vars={"xen_host_libvirt": False}).key() != a.key()
    assert a.roles == roles_digest()
    # The package list is the xen_host role's, not a copy of it.
    assert set(role_packages()) <= set(a.packages)
    assert {"xen-system-amd64", "libvirt-daemon-driver-xen", "python3"} <= set(a.packages)


def test_roles_digest_sees_every_role_file(tmp_path: Path) -> None:
    d = tmp_path / "ansible"
    (d / "roles/x/tasks").mkdir(parents=True)
    (d / "roles/x/tasks/main.yml").write_text("- name: a\n")
    first = roles_digest(d)
    (d / "roles/x/tasks/main.yml").write_text("- name: b\n")
    assert roles_digest(d) != first


def test_role_packages_refuses_what_is_not_a_package_name(tmp_path: Path) -> None:
    defaults = tmp_path / "roles/xen_host/defaults/main.yml"
    defaults.parent.mkdir(parents=True)
    defaults.write_text("xen_host_packages: [xen-system-amd64, 'a b; rm -rf /']\n")
    with pytest.raises(BlockedError, match="not Debian package names"):
        role_packages(tmp_path)


# The image builder's modules, imported and used where libvirt-python (the optional `libvirt`
# extra) cannot be imported: a `None` entry in sys.modules makes `import libvirt` fail.
_WITHOUT_LIBVIRT = """
import sys
sys.modules["libvirt"] = None
from pathlib import Path
import xenpvh.host.image as image
import xenpvh.provision
tree = Path(sys.argv[1])
cpu_map = tree / "usr/share/libvirt/cpu_map"
cpu_map.mkdir(parents=True)
features = "    <include filename='x86_features.xml'/>"
(cpu_map / "index.xml").write_text(f"<cpus>\\n{features}\\n</cpus>\\n")
image.install_tcg_cpu_model(tree)
print((cpu_map / "index.xml").read_text())
assert "xenpvh.toolstack.libvirt" not in sys.modules
"""


def test_image_build_needs_no_libvirt_python(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-c", _WITHOUT_LIBVIRT, str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "<include filename='x86_xenpvh-tcg.xml'/>" in r.stdout


def test_image_cache_honours_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert ImageBuilder(ImageRecipe(packages=("a",), roles="r")).cache.root == (
        tmp_path / "xenpvh" / "nested"
    )


def test_debian_mirror_from_apt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XENPVH_DEBIAN_MIRROR", raising=False)
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert debian_mirror("bookworm", tmp_path) == "http://mirror.example/debian"
    (d / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://list.example/debian bookworm main\n"
    )
    assert debian_mirror("bookworm", tmp_path) == "http://list.example/debian"
    monkeypatch.setenv("XENPVH_DEBIAN_MIRROR", "http://override.example/debian/")
    assert debian_mirror("bookworm", tmp_path) == "http://override.example/debian"
    monkeypatch.delenv("XENPVH_DEBIAN_MIRROR")
    (tmp_path / "sources.list").write_text("")
    with pytest.raises(BlockedError, match="XENPVH_DEBIAN_MIRROR"):
        debian_mirror("bookworm", tmp_path)


# -- real QEMU, failure paths --------------------------------------------------------------


def _qemu_pids(marker: Path) -> set[int]:
    """QEMUs whose command line names `marker` (the test's own directory): a QEMU another
    process runs on this machine at the same time is not this test's leak."""
    out = subprocess.run(["pgrep", "-f", "qemu-system-x86_64"], capture_output=True, text=True)
    mine = set()
    for pid in out.stdout.split():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if str(marker).encode() in cmdline:
            mine.add(int(pid))
    return mine


@pytest.mark.host
def test_qemu_refusing_the_xen_image_is_broken(tmp_path: Path) -> None:
    junk = tmp_path / "not-xen.elf"
    junk.write_bytes(b"this is not a multiboot image\n" * 100)
    before = _qemu_pids(tmp_path)
    h = NestedHost(xen_image=junk, artifacts=tmp_path / "art", state_file=tmp_path / "s.json")
    with pytest.raises(BrokenError, match="QEMU exited"):
        h.up()
    assert h.state is NestedState.FAILED
    assert _qemu_pids(tmp_path) <= before


@pytest.mark.host
def test_boot_deadline_is_broken_and_reaps_qemu(tmp_path: Path) -> None:
    before = _qemu_pids(tmp_path)
    h = NestedHost(
        boot_timeout=4, warm=False, artifacts=tmp_path / "art", state_file=tmp_path / "s.json"
    )
    t0 = time.monotonic()
    with pytest.raises(BrokenError, match=r"no ssh within 4s; serial log tail") as ei:
        h.up()
    assert time.monotonic() - t0 < 60
    assert "(XEN)" in str(ei.value)  # the hypervisor console is quoted
    assert h.state is NestedState.FAILED
    assert _qemu_pids(tmp_path) <= before


# -- real Xen ------------------------------------------------------------------------------


PVH_GUEST = """name = "pvh-smoke"
type = "pvh"
kernel = "/boot/vmlinuz-{kver}"
ramdisk = "/boot/initrd.img-{kver}"
memory = 256
vcpus = 2
extra = "console=hvc0"
on_crash = "destroy"
on_reboot = "destroy"
"""


@pytest.mark.xen
@pytest.mark.host
def test_nested_xen_boots_and_runs_a_pvh_guest(tmp_path: Path) -> None:
    before = _qemu_pids(tmp_path)
    # warm: resumes the saved machine state (made by one cold boot on first use).
    with NestedHost(artifacts=tmp_path, warm=True) as h:
        assert h.state is NestedState.READY
        assert h.times.warm
        # The resumed dom0's clock was set to now, not left at the moment of the save.
        dom0_now = int(h.run(["date", "+%s"], check=True).out)
        assert abs(dom0_now - time.time()) < 60
        pid = h.status().pid
        assert pid is not None and pid not in before

        info = dict(
            (k.strip(), v.strip())
            for k, _, v in (
                ln.partition(":") for ln in h.run(["xl", "info"], check=True).out.splitlines()
            )
        )
        assert info["xen_major"] == "4"
        assert "hap" in info["virt_caps"]
        assert "Domain-0" in h.run(["xl", "list"], check=True).out
        assert h.run(["ip", "link", "show", "xenbr0"]).ok
        assert "xenbr0" in h.run(["brctl", "show"], check=True).out

        # A tiny PVH guest: proves this host can run the kind of guest xenpvh exists for.
        kver = h.run(["uname", "-r"], check=True).out.strip()
        h.put_bytes(PVH_GUEST.format(kver=kver).encode(), "/root/pvh-smoke.cfg")
        h.run(["xl", "create", "/root/pvh-smoke.cfg"], check=True, timeout=120)
        try:
            j = json.loads(h.run(["xl", "list", "-l", "pvh-smoke"], check=True).out)
            assert j[0]["config"]["c_info"]["type"] == "pvh"
            con = h.spawn(["xl", "console", "pvh-smoke"], timeout=240)
            try:
                con.expect(b"Booting kernel on Xen PVH")
                con.expect(b"smp: Brought up 1 node, 2 CPUs")
            finally:
                con.close()
            log = h.run(["cat", "/var/log/xen/console/guest-pvh-smoke.log"], check=True)
            assert b"Booting kernel on Xen PVH" in log.stdout  # xenconsoled logs guests
        finally:
            h.run(["xl", "destroy", "pvh-smoke"])
        assert "pvh-smoke" not in h.run(["xl", "list"], check=True).out

    assert h.state is NestedState.STOPPED
    assert not Path(f"/proc/{pid}").exists()
    assert _qemu_pids(tmp_path) <= before


@pytest.mark.xen
@pytest.mark.host
# Nightly tier (tests/conftest.py): every CI run with an empty cache boots cold.
@pytest.mark.slow
def test_nested_cold_boot(tmp_path: Path) -> None:
    before = _qemu_pids(tmp_path)
    h = NestedHost(artifacts=tmp_path, warm=False)
    h.up()
    try:
        assert not h.times.warm
        assert h.times.ssh_ready is not None and h.times.xl_ready is not None
        assert "Domain-0" in h.run(["xl", "list"], check=True).out
        assert h.ssh_command()[-1] == "root@127.0.0.1"
        # The OpenSSH client reaches it too, with the pinned host key.
        r = subprocess.run([*h.ssh_command(), "xl", "info"], capture_output=True, timeout=60)
        assert r.returncode == 0 and b"xen_major" in r.stdout
    finally:
        h.down()
    assert h.state is NestedState.STOPPED
    assert _qemu_pids(tmp_path) <= before
    assert b"Xen version 4." in (tmp_path / "host-serial.log").read_bytes()


@pytest.mark.host
def test_failed_image_build_leaves_nothing(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("debootstrap needs root")
    # A mirror nobody serves: debootstrap fails while downloading.
    cache = tmp_path / "cache"
    b = ImageBuilder(cache=ArtifactCache(cache), mirror="http://127.0.0.1:9/debian")
    killed = cache / "work" / f"{b.recipe.key()[:12]}-killed"
    killed.mkdir(parents=True)  # what a SIGKILLed build leaves
    with pytest.raises(BrokenError, match="downloading Debian packages failed"):
        b.ensure()
    leftovers = [p.name for p in cache.iterdir() if p.name not in (".locks", "work")]
    assert leftovers == []  # no image entry, no package tarball entry
    assert list((cache / "work").iterdir()) == []
    assert b.cached() is None


def test_reap_stale_run_dirs(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "77").mkdir(parents=True)
    tmp = tmp_path / "tmp"
    old, used, fresh = (tmp / f"xenpvh-nested-{n}" for n in ("old", "used", "fresh"))
    for d in (old, used, fresh):
        d.mkdir(parents=True)
        (d / "warm.qcow2").write_bytes(b"x")
    for d in (old, used):
        os.utime(d, (time.time() - 3600, time.time() - 3600))
    (proc / "77" / "cmdline").write_bytes(f"qemu\0-qmp\0unix:{used}/qmp.sock".encode())
    removed = reap_stale_run_dirs(tmp, proc=proc)
    assert removed == [old]
    assert not old.exists() and used.exists() and fresh.exists()


def test_a_killed_owners_run_dir_is_reaped_at_once_and_a_live_owners_kept(tmp_path: Path) -> None:
    """A process SIGKILLed while its nested host booted leaves its run dir (a copy of the
    saved machine state, hundreds of MB): the next start removes it at once, whatever its
    age, since its owner no longer runs; a running owner's dir stays."""
    from xenpvh.host.nested.reap import make_run_dir

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    script = (
        "import sys, time; from xenpvh.host.nested.reap import make_run_dir; "
        "from pathlib import Path; print(make_run_dir(Path(sys.argv[1])), flush=True); "
        "time.sleep(60)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp)], stdout=subprocess.PIPE, text=True
    )
    killed = Path(child.stdout.readline().strip())
    (killed / "warm.qcow2").write_bytes(b"x" * 4096)
    assert reap_stale_run_dirs(tmp) == []  # its owner still runs
    child.kill()
    child.wait()
    child.stdout.close()
    mine = make_run_dir(tmp)
    assert reap_stale_run_dirs(tmp) == [killed]
    assert not killed.exists() and mine.exists()


def _debugfs_cat(disk: Path, path: str) -> str:
    r = subprocess.run(
        ["debugfs", "-R", f"cat {path}", str(disk)], capture_output=True, text=True, check=True
    )
    return r.stdout


@pytest.mark.host
@pytest.mark.skipif(os.geteuid() != 0, reason="building the nested image needs root")
def test_nested_image_is_configured_by_the_ansible_roles() -> None:
    """What the roles write on a lab box is in the nested image (read from the ext4 image
    without mounting it): one provisioning definition for both worlds."""
    img = ImageBuilder().ensure().image
    assert (img.dir / "ansible.log").is_file()
    recap = (img.dir / "ansible.log").read_text()
    assert re.search(r"ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=0", recap), recap[-2000:]
    uplink = _debugfs_cat(img.disk, "/etc/systemd/network/20-xenpvh-uplink.network")
    assert "Bridge=xenbr0" in uplink and "Name=eth0 en*" in uplink
    default_xen = _debugfs_cat(img.disk, "/etc/default/xen")
    assert "--log=guest" in default_xen
    assert "xen-netback" in _debugfs_cat(img.disk, "/etc/modules-load.d/xen.conf")
    grub = _debugfs_cat(img.disk, "/etc/default/grub.d/xenpvh.cfg")
    assert "dom0_mem=1024M,max:1024M" in grub
    # The TCG-only libvirt CPU model is the image's own addition.
    assert "x86_xenpvh-tcg.xml" in _debugfs_cat(img.disk, "/usr/share/libvirt/cpu_map/index.xml")
    # Services are enabled in the image, not started while it was built.
    wants = subprocess.run(
        ["debugfs", "-R", "ls -l /etc/systemd/system/multi-user.target.wants", str(img.disk)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "systemd-networkd.service" in wants and "ssh.service" in wants
    assert (
        "policy-rc.d"
        not in subprocess.run(
            ["debugfs", "-R", "ls /usr/sbin", str(img.disk)], capture_output=True, text=True
        ).stdout
    )


def test_boot_reuses_only_an_up_host_running_the_asked_xen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`xenpvh boot` uses the host `xenpvh host nested up` left running (a real process
    standing in for QEMU: alive() checks the pid's command line), unless it runs another Xen
    or XENPVH_NESTED_FRESH=1 asks for a fresh one."""
    from xenpvh.host.open import running_nested_host as _running_nested_host

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.delenv("XENPVH_NESTED_FRESH", raising=False)
    assert _running_nested_host(None, "system", None) is None  # no state file: boot our own
    rec = _record(tmp_path)
    (tmp_path / "client_key").write_text("")
    (tmp_path / "known_hosts").write_text("")
    monitor = tmp_path / "qmp.sock"
    qmp = f"unix:{monitor},server=on,wait=off"
    # /bin/sh under QEMU's name: its command line then reads like a QEMU of ours.
    shell = tmp_path / "qemu-system-x86_64"
    shell.symlink_to("/bin/sh")
    fake = subprocess.Popen([str(shell), "-c", "sleep 60; true", "-qmp", qmp])
    system_qemu = shutil.which("qemu-system-x86_64")
    if system_qemu is None:
        pytest.skip("Debian's qemu-system-x86_64 is not installed")
    try:
        rec = dataclasses.replace(rec, pid=fake.pid, monitor=str(monitor), qemu=system_qemu)
        rec.save(tmp_path / "xenpvh" / "nested" / "state.json")
        # Popen returns before the child has exec'd: its command line is Python's until then.
        deadline = time.monotonic() + 5
        while not rec.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not rec.alive():
            pytest.skip("cannot fake a live QEMU command line here")
        reused = _running_nested_host(None, "system", None)
        assert reused is not None and reused.booted_qemu == system_qemu
        assert reused.emulation_faults == TCG_FAULTS or reused.accel == "kvm"
        assert _running_nested_host(tmp_path / "xen-built", "system", None) is None
        # Another QEMU asked for (here any other executable): boot a fresh host.
        assert _running_nested_host(None, "/bin/true", None) is None
        monkeypatch.setenv("XENPVH_NESTED_FRESH", "1")
        assert _running_nested_host(None, "system", None) is None
    finally:
        fake.kill()
        fake.wait()


def test_an_attached_host_is_described_by_its_running_qemu(tmp_path: Path) -> None:
    """`xenpvh boot` on a host another process started reports what that QEMU runs with
    (it once said `single` for a host started with thread=multi)."""
    from xenpvh.host.nested.process import running_qemu_settings

    (tmp_path / "77").mkdir()
    argv = ["qemu", "-accel", "tcg,thread=multi", "-smp", "2", "-m", "3G", "-cpu", "qemu64"]
    (tmp_path / "77" / "cmdline").write_bytes("\0".join(argv).encode() + b"\0")
    got = running_qemu_settings(77, proc=tmp_path)
    assert got == {"accel": "tcg", "tcg_thread": "multi", "cpus": 2, "memory": "3G"}
    assert running_qemu_settings(78, proc=tmp_path) == {}
