"""BootRun's state machine with fakes only at its boundaries: a Host answering like xl 4.17
(test_toolstack_fakes, `xl console` is a real pty child) and an in-memory XenStore.  The real
linux-pvh profile, StageChecker, xl renderer and report writers are used."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_toolstack_fakes import FakeXenHost

from xenpvh.check.checker import StageEvent
from xenpvh.check.verdict import StageStatus, VerdictValue
from xenpvh.profile import load_profile
from xenpvh.profile.domain import DomainSpec
from xenpvh.run import BootRun, RunState, RunStateEvent
from xenpvh.run.events import VerdictEvent
from xenpvh.run.request import BootRequest
from xenpvh.run.session import Session
from xenpvh.toolstack.xenstore import DeviceState

STAGES = ["early-init", "ap-launch", "root-mount", "xenbus", "login"]
# What Debian's 6.1 kernel prints (abridged), on a 2-vCPU guest.  netfront prints no line
# per vif: XenStore proves it (the run feeds the checker from its device check).
GOOD = (
    b"Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)\n"
    b"Booting paravirtualized kernel on Xen PVH\n"
    b"smp: Brought up 1 node, 2 CPUs\n"
    b"Run /init as init process\n"
    b"blkfront: xvda: flush diskcache: enabled; persistent grants: enabled;\n"
    b"xenpvh-guest login: "
)


class FakeXenStore:
    def __init__(self, states: dict[str, int]) -> None:
        self.states = states
        self.opened = 0

    def __enter__(self):
        self.opened += 1
        return self

    def __exit__(self, *exc) -> None:
        pass

    def device_states(self, domid: int) -> list[DeviceState]:
        be = f"/local/domain/0/backend/{{}}/{domid}"
        return [
            DeviceState(
                k,
                d,
                f"/local/domain/{domid}/device/{k}/{d}",
                self.states[k],
                be.format(k) + f"/{d}",
                4,
            )
            for k, d in (("vbd", "51712"), ("vif", "0"))
        ]

    def console_tty(self, domid: int) -> str:
        return "/dev/pts/4"

    def domain_dump(self, domid: int) -> str:
        return f'/local/domain/{domid} = ""\n'


@pytest.fixture
def host():
    h = FakeXenHost()
    h.console_delay = 0.01
    yield h
    h.close()


@pytest.fixture
def kit(tmp_path: Path) -> tuple[Path, Path]:
    k, r = tmp_path / "vmlinuz", tmp_path / "initrd"
    k.write_bytes(b"kernel")
    r.write_bytes(b"initrd")
    return k, r


PROFILE = load_profile("linux-pvh")


def _point(kernel: str, ramdisk: str | None) -> DomainSpec:
    return PROFILE.point(kernel=kernel, ramdisk=ramdisk)


def _run(host, point, tmp_path, *, states=None, on_event=None, grace=2.0, kit=None, timeout=30):
    xs = FakeXenStore(states or {"vbd": 4, "vif": 4})
    events: list[object] = []
    run = BootRun(
        host,
        PROFILE,
        point,
        artifacts=tmp_path / "art",
        on_event=on_event or events.append,
        guest_kit=kit,
        xenstore_factory=lambda h: xs,
        xenbus_grace=grace,
        timeout=timeout,
    )
    return run, events


def _no_guest_left(host: FakeXenHost, run: BootRun | None = None) -> None:
    assert list(host.domains) == ["Domain-0"]
    prefix = run.run_dir if run is not None else "/var/lib/xenpvh/runs/"
    assert not [p for p in host.files if p.startswith(prefix)]


def _session(host, kit, tmp_path, *, on_event=None, kernel=None, attempts=1):
    """The same boot through the Session, which writes the reports (the one writer)."""
    xs = FakeXenStore({"vbd": 4, "vif": 4})
    request = BootRequest(
        profile="linux-pvh",
        kernel=str(kernel or kit[0]),
        ramdisk=str(kit[1]),
        attempts=attempts,
        artifacts=tmp_path / "art",
    )
    return Session(request, host=host, on_event=on_event, xenstore_factory=lambda h: xs)


def test_pass_collects_everything_and_destroys(host, kit, tmp_path) -> None:
    host.console = GOOD
    run, events = _run(host, _point(str(kit[0]), str(kit[1])), tmp_path)
    v = run.run()
    assert v.verdict == VerdictValue.PASS, v.reason
    _session(host, kit, tmp_path / "s").run()
    art = tmp_path / "s" / "art"
    for name in (
        "console.log",
        "xl-dmesg.txt",
        "xl-info.txt",
        "domain.cfg",
        "xenstore.txt",
        "verdict.json",
        "junit.xml",
        "report.html",
        "timing.json",
    ):
        assert (art / name).is_file(), name
    assert json.loads((art / "verdict.json").read_text())["verdict"] == "pass"
    assert 'type = "pvh"' in (tmp_path / "art" / "domain.cfg").read_text()
    assert v.meta["xenstore_check"] == "connected"
    assert v.meta["create_to_verdict_s"] is not None and v.meta["harness_overhead_s"] >= 0
    # Order on the host: create paused, attach console, then unpause.
    order = [c for c in host.calls if c[:2] in {("xl", "create"), ("xl", "unpause")}]
    spawn = next(i for i, c in enumerate(host.calls) if c[0] == "<spawn>")
    assert host.calls.index(order[0]) < spawn < host.calls.index(order[1])
    assert order[0][2] == "-p"
    # Kernel and ramdisk went to the hash-named cache, the disk was made in the run dir.
    puts = [c for c in host.calls if c[0] == "<put>"]
    assert all(c[2].startswith("/var/lib/xenpvh/kernels/") for c in puts) and len(puts) == 2
    assert ("mkfs.ext4", "-q", "-F", f"{run.run_dir}/xvda.img") in host.calls
    states = [e.state for e in events if isinstance(e, RunStateEvent)]
    assert states == [
        RunState.PREPARE,
        RunState.CREATE,
        RunState.WATCH,
        RunState.DECIDE,
        RunState.COLLECT,
        RunState.REPORT,
        RunState.DESTROY,
        RunState.DONE,
    ]
    # The verdict is announced (reports written) before the destroy starts.
    kinds = [type(e).__name__ for e in events if isinstance(e, RunStateEvent | VerdictEvent)]
    assert kinds.index("VerdictEvent") == len(kinds) - 3
    (announced,) = [e for e in events if isinstance(e, VerdictEvent)]
    assert announced.verdict == "pass" and announced.failed_stage is None
    passed = [e.stage for e in events if isinstance(e, StageEvent) and e.kind == "passed"]
    assert passed == STAGES
    _no_guest_left(host, run)


def test_guestkit_placeholders_resolve(host, kit, tmp_path) -> None:
    host.console = GOOD
    gk = SimpleNamespace(kernel=kit[0], ramdisk=kit[1], kernel_release="6.1.0-56-amd64")
    run, _ = _run(host, PROFILE.point(), tmp_path, kit=gk)
    assert run.run().verdict == VerdictValue.PASS
    puts = {c[1] for c in host.calls if c[0] == "<put>"}
    assert puts == {str(kit[0]), str(kit[1])}


def test_unknown_guestkit_item_is_blocked(host, kit, tmp_path) -> None:
    gk = SimpleNamespace(kernel=kit[0], ramdisk=kit[1], kernel_release="x")
    run, _ = _run(host, PROFILE.point(kernel="@guestkit:bzImage"), tmp_path, kit=gk)
    v = run.run()
    assert v.verdict == VerdictValue.BLOCKED and "bzImage" in v.reason
    assert host.calls == []


def test_missing_kernel_is_blocked_before_anything(host, kit, tmp_path) -> None:
    v = _session(host, kit, tmp_path, kernel=tmp_path / "nope").run().verdict
    assert v.verdict == VerdictValue.BLOCKED
    assert "nope does not exist" in v.reason
    assert host.calls == []
    assert json.loads((tmp_path / "art" / "verdict.json").read_text())["verdict"] == "blocked"


def test_panic_fails_fast_and_destroys(host, kit, tmp_path) -> None:
    host.console = GOOD[:120] + b"Kernel panic - not syncing: No working init found.\n"
    run, _ = _run(host, _point(str(kit[0]), str(kit[1])), tmp_path)
    v = run.run()
    assert v.verdict == VerdictValue.FAIL
    assert "forbidden pattern" in v.reason and "deadline" not in v.reason, v.reason
    assert v.failed_stage == "root-mount"  # indicted by the pattern, not by position
    assert v.meta["harness_overhead_s"] is not None and v.meta["harness_overhead_s"] < 1
    _no_guest_left(host, run)


def test_stuck_device_fails_xenbus_naming_it(host, kit, tmp_path) -> None:
    host.console = GOOD
    run, _ = _run(host, _point(str(kit[0]), str(kit[1])), tmp_path, states={"vbd": 4, "vif": 3})
    v = run.run()
    assert v.verdict == VerdictValue.FAIL and v.failed_stage == "xenbus"
    assert "/local/domain/1/device/vif/0/state=3 (Initialised)" in v.reason
    by = {s.name: s.status for s in v.stages}
    assert by["xenbus"] == StageStatus.FAILED
    assert by["login"] == StageStatus.NOT_REACHED
    assert by["early-init"] == by["root-mount"] == StageStatus.PASSED  # before xenbus in Linux
    _no_guest_left(host, run)


def test_vif_without_a_console_line_is_proven_by_xenstore(host, kit, tmp_path) -> None:
    """Linux prints no line per vif: the run's XenStore check completes the xenbus stage.
    The poll starts once xenbus is in progress (after Run /init), not after it passed."""
    host.console = GOOD
    run, events = _run(host, _point(str(kit[0]), str(kit[1])), tmp_path)
    v = run.run()
    assert v.verdict == VerdictValue.PASS, v.reason
    xenbus = next(s for s in v.stages if s.name == "xenbus")
    assert xenbus.evidence.startswith("blkfront: xvda:")
    assert "vifs: 1 Connected in XenStore (vif/0)" in xenbus.detail
    assert v.meta["xenstore_check"] == "connected"
    kinds = [
        (type(e).__name__, getattr(e, "stage", None), getattr(e, "kind", None)) for e in events
    ]
    first_poll = kinds.index(("DeviceCheckEvent", None, "connected"))
    assert first_poll < kinds.index(("StageEvent", "xenbus", "passed"))


def test_pv_domain_is_blocked_and_destroyed(host, kit, tmp_path, monkeypatch) -> None:
    # As xl 4.17 does with `pvh = 1`: the domain comes up as PV.
    orig = host._answer

    def answer(argv):
        res = orig(argv)
        if argv[:2] == ("xl", "create"):
            for d in host.domains.values():
                d["type"] = "pv"
        return res

    monkeypatch.setattr(host, "_answer", answer)
    run, _ = _run(host, _point(str(kit[0]), str(kit[1])), tmp_path)
    v = run.run()
    assert v.verdict == VerdictValue.BLOCKED and "not 'pvh'" in v.reason
    assert ("xl", "unpause", run.domain_name) not in host.calls
    _no_guest_left(host, run)


def test_ctrl_c_still_destroys(host, kit, tmp_path) -> None:
    host.console = GOOD

    def interrupt(ev: object) -> None:
        if isinstance(ev, StageEvent) and ev.stage == "ap-launch" and ev.kind == "passed":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _session(host, kit, tmp_path, on_event=interrupt).run()
    v = json.loads((tmp_path / "art" / "verdict.json").read_text())
    assert v["verdict"] == "broken" and "interrupted" in v["reason"]
    _no_guest_left(host)


def test_create_failure_is_broken(host, kit, tmp_path) -> None:
    from xenpvh.host.base import CommandResult

    host.fail["xl create"] = CommandResult(("xl", "create"), 1, b"", b"libxl: hotplug failed\n")
    run, _ = _run(host, _point(str(kit[0]), str(kit[1])), tmp_path)
    v = run.run()
    assert v.verdict == VerdictValue.BROKEN and "hotplug failed" in v.reason
    _no_guest_left(host, run)


def test_run_deadline_fails_the_stage_in_progress(host, kit, tmp_path) -> None:
    host.console = b"".join(GOOD.splitlines(keepends=True)[:3])  # hangs after ap-launch
    run, _ = _run(host, _point(str(kit[0]), str(kit[1])), tmp_path, timeout=3)
    t0 = time.monotonic()
    v = run.run()
    assert time.monotonic() - t0 < 10
    assert v.verdict == VerdictValue.FAIL and v.failed_stage == "root-mount"
    assert "run deadline of 3s exceeded" in v.reason
    _no_guest_left(host, run)


def test_sweep_spares_leased_domains_and_clears_expired_runs(host, kit, tmp_path) -> None:
    from xenpvh.toolstack.xl import Xl

    runs = "/var/lib/xenpvh/runs"
    for run_id, expires in (("20260101-000000-aaaaaa", 1.0), ("20260101-000000-bbbbbb", 4e9)):
        host.files[f"{runs}/{run_id}/lease"] = json.dumps(
            {"domain": f"xenpvh-{run_id}", "expires": expires}
        ).encode()
        host.files[f"{runs}/{run_id}/domain.cfg"] = (
            f'name = "xenpvh-{run_id}"\ntype = "pvh"\n'.encode()
        )
        Xl(host).create(f"{runs}/{run_id}/domain.cfg")
    host.files["/orphan.cfg"] = b'name = "xenpvh-orphan"\ntype = "pvh"\n'
    Xl(host).create("/orphan.cfg")  # no lease at all: a crashed run's leftover
    host.console = GOOD
    run, _ = _run(host, _point(str(kit[0]), str(kit[1])), tmp_path)
    v = run.run()
    assert v.verdict == VerdictValue.PASS, v.reason
    assert sorted(v.meta["swept_stale_domains"]) == [
        "xenpvh-20260101-000000-aaaaaa",
        "xenpvh-orphan",
    ]
    assert sorted(host.domains) == ["Domain-0", "xenpvh-20260101-000000-bbbbbb"]
    assert not any(p.startswith(f"{runs}/20260101-000000-aaaaaa/") for p in host.files)
    assert f"{runs}/20260101-000000-bbbbbb/lease" in host.files


def test_a_lease_cannot_point_the_cleanup_elsewhere(host, kit, tmp_path) -> None:
    host.files["/var/lib/xenpvh/runs/../lease"] = b'{"domain": "xenpvh-..", "expires": 1}\n'
    host.files["/var/lib/xenpvh/keep"] = b"precious"
    host.console = GOOD
    run, _ = _run(host, _point(str(kit[0]), str(kit[1])), tmp_path)
    assert run.run().verdict == VerdictValue.PASS
    assert "/var/lib/xenpvh/keep" in host.files
    assert not [c for c in host.calls if c[0] == "rm" and c[-1].endswith("/runs/..")]


def test_failed_destroy_after_the_verdict_rewrites_the_reports_as_broken(
    host, kit, tmp_path
) -> None:
    """The verdict is written and announced before the destroy; a destroy that then fails
    (xl refuses, the domain stays) makes the run `broken` and every report says so."""
    from xenpvh.host.base import CommandResult

    host.console = GOOD
    seen_at_announce: dict[str, str] = {}

    def on_event(e: object) -> None:
        if isinstance(e, VerdictEvent):
            seen_at_announce["json"] = (tmp_path / "art" / "verdict.json").read_text()
            # From here on, `xl destroy` fails and the domain stays.
            host.fail["xl destroy"] = CommandResult(
                ("xl", "destroy"), 1, b"", b"libxl: error: busy\n"
            )

    v = _session(host, kit, tmp_path, on_event=on_event).run().verdict
    assert json.loads(seen_at_announce["json"])["verdict"] == "pass"
    assert v.verdict == VerdictValue.BROKEN and v.failed_stage is None
    assert "destroying" in v.reason and "guest verdict was pass" in v.reason
    art = tmp_path / "art"
    assert json.loads((art / "verdict.json").read_text())["verdict"] == "broken"
    assert "<error" in (art / "junit.xml").read_text()
    assert "broken" in (art / "report.html").read_text()
    host.fail.clear()


def test_hotplug_scripts_the_host_declares_are_uploaded_once_and_used(kit, tmp_path) -> None:
    """A host that declares lean hotplug scripts (the nested host) gets them uploaded under
    content-addressed names and named in the config; the second run uploads nothing."""
    from xenpvh.host.hotplug import LEAN_SCRIPTS

    class LeanHost(FakeXenHost):
        hotplug_scripts = LEAN_SCRIPTS

    host = LeanHost()
    host.console_delay = 0.01
    host.console = GOOD
    try:
        for n in range(2):
            host.calls.clear()
            run, _ = _run(host, _point(str(kit[0]), str(kit[1])), tmp_path / str(n))
            assert run.run().verdict == VerdictValue.PASS
            cfg = (tmp_path / str(n) / "art" / "domain.cfg").read_text()
            block = next(s for s in LEAN_SCRIPTS if s.kind == "vbd")
            vif = next(s for s in LEAN_SCRIPTS if s.kind == "vif")
            assert f"script={block.remote_path('/var/lib/xenpvh')}, target=" in cfg
            assert f"script={vif.remote_path('/var/lib/xenpvh')}" in cfg
            sent = [c for c in host.calls if c[0] in ("<put>", "<put_bytes>")]
            sent = [c for c in sent if "/kernels/" in c[-1] or "/scripts/" in c[-1]]
            assert len(sent) == (4 if n == 0 else 0), sent  # kernel, ramdisk, two scripts
        assert host.files[block.remote_path("/var/lib/xenpvh")] == block.text.encode()
    finally:
        host.close()


def test_vif_connecting_late_passes_once_xenstore_shows_it(host, kit, tmp_path) -> None:
    """The vif is Initialised on the first readings and Connected later: the xenbus stage
    (and the login after it) wait for XenStore, then pass."""

    class LateVif(FakeXenStore):
        def device_states(self, domid: int) -> list[DeviceState]:
            self.reads = getattr(self, "reads", 0) + 1
            self.states["vif"] = 4 if self.reads >= 3 else 3
            return super().device_states(domid)

    host.console = GOOD
    xs = LateVif({"vbd": 4, "vif": 3})
    run = BootRun(
        host,
        PROFILE,
        _point(str(kit[0]), str(kit[1])),
        artifacts=tmp_path / "art",
        xenstore_factory=lambda h: xs,
        xenbus_grace=20.0,
        timeout=30,
    )
    v = run.run()
    assert v.verdict == VerdictValue.PASS, v.reason
    assert xs.reads >= 3
    assert "vifs: 1 Connected in XenStore (vif/0)" in next(
        s.detail for s in v.stages if s.name == "xenbus"
    )
