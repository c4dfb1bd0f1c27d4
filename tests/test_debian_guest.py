"""The Debian guest offline: its recipe, its two profiles, how a run puts its disk on the host
(a fresh copy per run) and the bridge check that blocks a vif on a bridge the host lacks.
Fakes only at the host boundary (test_toolstack_fakes); the live boots are in
tests/test_debian_guest_live.py."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tarfile
from pathlib import Path

import pytest
from test_run_boot import FakeXenStore
from test_toolstack_fakes import FakeXenHost

from xenpvh.build import debian_guest as dg
from xenpvh.build import debian_guest_recipe as recipe
from xenpvh.build.cache import ArtifactCache, Built
from xenpvh.check.verdict import VerdictValue
from xenpvh.profile import load_profile
from xenpvh.profile.domain import VifSpec
from xenpvh.run.boot import BootRun, RunHooks, RunLimits
from xenpvh.run.guest_disk import UNPACK_SCRIPT, PackedImage
from xenpvh.run.remote import remote_paths

GOOD = (
    b"Booting paravirtualized kernel on Xen PVH\n"
    b"smp: Brought up 1 node, 2 CPUs\n"
    b"blkfront: xvda: flush diskcache: enabled; persistent grants: enabled;\n"
    b"EXT4-fs (xvda): mounted filesystem with ordered data mode. Quota mode: none.\n"
    b"systemd[1]: systemd 252.39-1~deb12u2 running in system mode (+PAM +AUDIT)\n"
    b"debian12-pvh login: "
)


def test_the_two_profiles_judge_alike() -> None:
    """debian-pvh and debian-pvh-grub boot the same disk two ways: one stage model."""
    a, b = load_profile("debian-pvh"), load_profile("debian-pvh-grub")
    order = ["early-init", "ap-launch", "xenbus", "root-mount", "login"]
    assert [s.name for s in a.stages] == order
    assert a.stages == b.stages
    assert [(p.name, p.source, p.stage) for p in a.forbidden] == [
        (p.name, p.source, p.stage) for p in b.forbidden
    ]
    pa, pb = a.point(), b.point()
    assert pa.disks == pb.disks and pa.vifs == pb.vifs
    assert (pa.kernel, pa.ramdisk) == ("@debian-guest:vmlinuz", "@debian-guest:initrd")
    assert (pb.kernel, pb.ramdisk, pb.cmdline) == ("@debian-guest:grub", None, "")
    assert pa.cmdline == recipe.CMDLINE


@pytest.mark.parametrize(
    ("line", "name", "stage"),
    [
        ("Gave up waiting for root file system device.  Common problems:",
         "initramfs-root-device-missing", "root-mount"),
        ("ALERT!  /dev/xvdz does not exist.  Dropping to a shell!", "initramfs-dropped-to-shell",
         "root-mount"),
        ("[\x1b[0;1;31m TIME \x1b[0m] Timed out waiting for device \x1b[0;1;39mdev-hvc0.device"
         "\x1b[0m - /dev/hvc0.", "console-device-timeout", "login"),
    ],
)  # fmt: skip
def test_initramfs_and_systemd_failures_name_their_stage(line: str, name: str, stage: str) -> None:
    hits = [p for p in load_profile("debian-pvh").forbidden if p.regex.search(line)]
    assert [(p.name, p.stage) for p in hits] == [(name, stage)]


def test_recipe_key_follows_versions_and_files() -> None:
    r = recipe.GuestRecipe()
    v = {"linux-image-6.1.0-50-amd64": "6.1.176-1", "systemd": "252.39-1~deb12u2"}
    assert r.key(v) == recipe.GuestRecipe().key(dict(v))
    assert r.key(v) != r.key({**v, "systemd": "252.40-1~deb12u1"})
    assert r.key(v) != dataclasses.replace(r, disk_size="2G").key(v)


def test_a_second_ensure_is_a_cache_hit_and_new_versions_a_miss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache is the unit: versions from a fake index, a build step writing small files.
    A new point release is a new entry, and the old one is removed (~250 MB each)."""
    versions = {"linux-image-6.1.0-50-amd64": "6.1.176-1", "systemd": "252.39-1~deb12u2"}
    builds: list[dict[str, str]] = []

    def build(self: dg.DebianGuestBuilder, work: Path, resolved: dict[str, str]) -> Built:
        builds.append(dict(resolved))
        names = ("vmlinuz", "initrd.img", "grub-pvh.elf", "disk.img", "disk.tar.gz")
        for name in names:
            (work / name).write_bytes(name.encode())
        files = dict(zip(("kernel", "ramdisk", "grub", "disk", "disk_pack"), names, strict=True))
        manifest = {"recipe": dg.CACHE_RECIPE, "kernel_release": "6.1.0-50-amd64",
                    "versions": resolved}  # fmt: skip
        return Built({k: (work / n, n) for k, n in files.items()}, manifest)

    monkeypatch.setattr(dg, "resolve_versions", lambda r: dict(versions))
    monkeypatch.setattr(dg.DebianGuestBuilder, "_build", build)
    cache = ArtifactCache(tmp_path / "cache")
    first = dg.DebianGuestBuilder(cache=cache).ensure()
    assert not first.cache_hit and len(builds) == 1
    assert first.guest.disk.read_bytes() == b"disk.img"
    assert first.guest.disk_sha256 == hashlib.sha256(b"disk.img").hexdigest()
    again = dg.DebianGuestBuilder(cache=cache).ensure()
    assert again.cache_hit and again.guest == first.guest and len(builds) == 1
    # A point release: the versions memo is an hour old, the index names new versions.
    versions["systemd"] = "252.40-1~deb12u1"
    memo = cache.root / ".versions.json"
    data = json.loads(memo.read_text())
    memo.write_text(json.dumps({**data, "at": data["at"] - dg.VERSIONS_MAX_AGE - 1}))
    second = dg.DebianGuestBuilder(cache=cache).ensure()
    assert not second.cache_hit and len(builds) == 2
    assert second.guest.key != first.guest.key
    assert second.guest.versions["systemd"] == "252.40-1~deb12u1"
    assert not first.guest.dir.exists()  # the older entry is pruned
    # A recipe change (another disk size) is a new key too.
    bigger = dg.DebianGuestBuilder(dataclasses.replace(recipe.GuestRecipe(), disk_size="2G"),
                                   cache=cache).ensure()  # fmt: skip
    assert not bigger.cache_hit and len(builds) == 3


@pytest.mark.parametrize("profile", ["debian-pvh", "debian-pvh-grub"])
def test_the_console_device_waits_as_long_as_the_login_deadline(profile: str) -> None:
    """udev on a TCG nested host may announce hvc0 after systemd's 90 s: the image's
    drop-in lets dev-hvc0.device wait for as long as the profile waits for a login."""
    text = recipe.FILES["etc/systemd/system/dev-hvc0.device.d/xenpvh-console-timeout.conf"]
    m = re.fullmatch(r"\[Unit\]\nJobRunningTimeoutSec=(\d+)min\n", text)
    assert m is not None, text
    login = next(s for s in load_profile(profile).stages if s.name == "login")
    assert int(m[1]) * 60 >= login.deadline


def test_dpkg_keeps_only_the_modules_a_pvh_guest_uses() -> None:
    text = recipe.PRE_FILES["etc/dpkg/dpkg.cfg.d/xenpvh-guest"]
    assert "path-exclude=/lib/modules/*/kernel/*" in text
    for keep in ("drivers/block/xen-blkfront.ko*", "drivers/net/xen-netfront.ko*", "fs/ext4/*"):
        assert f"path-include=/lib/modules/*/kernel/{keep}" in text


def test_grub_cfg_boots_the_installed_kernel_on_the_console() -> None:
    cfg = recipe.grub_cfg("6.1.0-50-amd64")
    assert f"linux /boot/vmlinuz-6.1.0-50-amd64 {recipe.CMDLINE}" in cfg
    assert recipe.CMDLINE == "root=/dev/xvda rw console=hvc0"
    assert "initrd /boot/initrd.img-6.1.0-50-amd64" in cfg
    with pytest.raises(Exception, match="not a kernel release"):
        recipe.grub_cfg("6.1; reboot")


def test_an_image_disk_gets_a_path_in_the_run_directory() -> None:
    point = load_profile("debian-pvh").point()
    spec = remote_paths(point, run_id="r1", kernel=None, ramdisk=None, kernel_id=lambda p: "x" * 16)
    assert spec.disks[0].target == "/var/lib/xenpvh/runs/r1/xvda.img"
    assert spec.disks[0].format == "raw"


# --------------------------------------------------------------------------- runs (fake host)


@pytest.fixture
def guest(tmp_path: Path) -> dg.DebianGuest:
    """A stand-in cache entry: tiny files in the real layout (the run only moves them)."""
    d = tmp_path / "guest"
    d.mkdir()
    for name in ("vmlinuz", "initrd.img", "grub-pvh.elf"):
        (d / name).write_bytes(name.encode())
    (d / "disk.img").write_bytes(b"ext4")
    with tarfile.open(d / "disk.tar.gz", "w:gz") as tar:
        tar.add(d / "disk.img", arcname="disk.img")
    return dg.DebianGuest(
        dir=d,
        kernel=d / "vmlinuz",
        ramdisk=d / "initrd.img",
        grub=d / "grub-pvh.elf",
        disk=d / "disk.img",
        disk_pack=d / "disk.tar.gz",
        disk_sha256="ab" * 32,
        kernel_release="6.1.0-50-amd64",
        key="k",
        versions={},
    )


class ImageHost(FakeXenHost):
    """FakeXenHost that also unpacks and copies images as the run's commands would."""

    def _answer(self, argv):
        if argv[:2] == ("sh", "-c") and argv[2] == UNPACK_SCRIPT:
            pack, _member, final = argv[4:7]
            self.files[final] = b"ext4"
            self.files.pop(pack, None)
            return super()._answer(("mkdir", final))
        if argv[0] == "cp":
            self.files[argv[-1]] = self.files[argv[-2]]
            return super()._answer(("mkdir", argv[-1]))
        return super()._answer(argv)


def _boot(host, guest, tmp_path, point, profile="debian-pvh"):
    run = BootRun(
        host,
        load_profile(profile),
        point,
        artifacts=tmp_path / "art",
        hooks=RunHooks(xenstore_factory=lambda h: FakeXenStore({"vbd": 4, "vif": 4})),
        limits=RunLimits(xenbus_grace=2.0, timeout=30),
    )
    run.inputs.debian_guest = guest  # the cache entry above instead of a build
    return run, run.run()


@pytest.fixture
def fake_host_class() -> type[ImageHost]:
    """conftest's `host` fixture makes this subclass here."""
    return ImageHost


def test_each_run_boots_its_own_copy_and_leaves_none(host, guest, tmp_path) -> None:
    host.console = GOOD
    point = load_profile("debian-pvh").point()
    base = PackedImage(guest.disk_pack, "disk.img", guest.disk_sha256).remote_path(
        "/var/lib/xenpvh"
    )
    run, v = _boot(host, guest, tmp_path, point)
    assert v.verdict == VerdictValue.PASS, v.reason
    copies = [c for c in host.calls if c[0] == "cp"]
    assert copies == [("cp", "--sparse=always", "--", base, f"{run.run_dir}/xvda.img")]
    assert base in host.files  # sent once, kept for the next run
    assert not [p for p in host.files if p.startswith(run.run_dir)]
    assert v.meta["disk_copies"]["xvda"]["send_s"] >= 0
    # The second run is sent nothing: only its copy is made.
    sent = sum(1 for c in host.calls if c[0] == "<put>")
    run2, v2 = _boot(host, guest, tmp_path / "2", point)
    assert v2.verdict == VerdictValue.PASS, v2.reason
    assert sum(1 for c in host.calls if c[0] == "<put>") == sent
    assert v2.meta["disk_copies"]["xvda"]["send_s"] == 0.0
    assert not [p for p in host.files if p.startswith(run2.run_dir)]


def test_a_vif_on_a_missing_bridge_is_blocked_before_anything_is_made(
    host, guest, tmp_path
) -> None:
    host.console = GOOD
    point = dataclasses.replace(
        load_profile("debian-pvh").point(), vifs=(VifSpec("xenbr0"), VifSpec("nosuchbr7"))
    )
    _, v = _boot(host, guest, tmp_path, point)
    assert v.verdict == VerdictValue.BLOCKED, v.reason
    assert "nosuchbr7" in v.reason and "xenbr0," not in v.reason.split("(")[0]
    made = [c for c in host.calls if c[0] in ("mkdir", "cp", "xl") and c[:2] != ("xl", "info")]
    assert made == [], made
    assert list(host.domains) == ["Domain-0"]


def test_an_unknown_image_is_blocked(host, guest, tmp_path) -> None:
    point = load_profile("debian-pvh").point()
    bad = dataclasses.replace(point.disks[0], target="@debian-guest:floppy")
    _, v = _boot(host, guest, tmp_path, dataclasses.replace(point, disks=(bad,)))
    assert v.verdict == VerdictValue.BLOCKED
    assert "@debian-guest:floppy" in v.reason


# --------------------------------------------------------------------------- real consoles


SAMPLES = Path(__file__).parent / "samples"


@pytest.mark.parametrize(
    ("sample", "profile", "vcpus"),
    [
        ("debian12-systemd-pvh-login.log", "debian-pvh", 1),
        ("debian12-systemd-pvh-grub-login.log", "debian-pvh-grub", 2),
    ],
)
def test_real_debian_consoles_pass_offline(sample: str, profile: str, vcpus: int) -> None:
    """Consoles of the guest on the nested host (kernel from the image; through PVH GRUB)."""
    from xenpvh.check.checker import check_file

    v = check_file(SAMPLES / sample, load_profile(profile), vcpus=vcpus, disks=1, vifs=1)
    assert v.verdict == VerdictValue.PASS, v.reason
    text = (SAMPLES / sample).read_text(errors="replace")
    # What Debian's 6.1 kernel prints per device: blkfront one line per disk; for the vif
    # only the rename udev asks for (net/core), nothing from netfront itself.
    assert "blkfront: xvda: flush diskcache" in text
    assert "vif vif-0 enX0: renamed from eth0" in text
    # A PVH boot that Linux names "Xen HVM" as the hypervisor it detected: that line is not
    # a sign of an HVM guest (the x86 hypervisor entry is the same for both).
    assert "Hypervisor detected: Xen HVM" in text
    assert "kernel on Xen PVH" in text


def test_real_wrong_root_console_fails_at_root_mount_on_initramfs_tools() -> None:
    """root=/dev/xvdz on the nested host: initramfs-tools gives up after its 30 s."""
    from xenpvh.check.checker import check_file

    sample = SAMPLES / "debian12-systemd-pvh-wrong-root.log"
    v = check_file(sample, load_profile("debian-pvh"), vcpus=1, disks=1, vifs=1)
    assert v.verdict == VerdictValue.FAIL
    assert v.failed_stage == "root-mount", v.reason
    assert "initramfs-root-device-missing" in v.reason


def test_debian_keeps_every_linux_signature_of_linux_pvh() -> None:
    """Same kernel, same crash signatures, blame frames and notices as linux-pvh."""
    lin, deb = load_profile("linux-pvh"), load_profile("debian-pvh")

    def key(patterns):
        return [(p.name, p.source, p.stage) for p in patterns]

    assert set(key(lin.forbidden)) <= set(key(deb.forbidden))
    assert key(deb.blame) == key(lin.blame) and deb.blame_lines == lin.blame_lines
    assert key(deb.notices) == key(lin.notices)
