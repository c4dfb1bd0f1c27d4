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
from xenpvh.errors import BrokenError
from xenpvh.profile import load_profile
from xenpvh.profile.domain import DomainSpec
from xenpvh.run.boot import BootRun, RunHooks, RunLimits
from xenpvh.run.events import RunState, RunStateEvent, VerdictEvent
from xenpvh.run.options import HostClients
from xenpvh.run.request import BootRequest
from xenpvh.run.session import Session
from xenpvh.toolstack.xenstore import DeviceState, RelayClosed, XenStoreTimeout

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
    """XenStore at its protocol boundary, able to report every failure the device check and
    the liveness probe exist to catch: frontend `states` per kind, `backend` states,
    `devices` (how many of each kind XenStore lists), `tty` (None: the node is missing),
    `dead` (every call times out, as the real XenStore's calls do when xenstored stopped
    answering; tests set it mid-run), `slow` (the probe's next N questions time out, then
    it answers: a dom0 too busy to answer within a call's deadline) and `gone` (the relay
    cannot reach xenstored's socket)."""

    def __init__(
        self,
        states: dict[str, int] | None = None,
        *,
        devices: dict[str, int] | None = None,
        backend: dict[str, int] | None = None,
        tty: str | None = "/dev/pts/4",
        dead: bool = False,
        slow: int = 0,
        gone: bool = False,
    ) -> None:
        self.states = states or {"vbd": 4, "vif": 4}
        self.devices = devices or {"vbd": 1, "vif": 1}
        self.backend = backend or {"vbd": 4, "vif": 4}
        self.tty = tty
        self.dead = dead
        self.slow = slow
        self.gone = gone
        self.opened = 0
        self.calls: list[str] = []

    def __enter__(self):
        self.opened += 1
        return self

    def __exit__(self, *exc) -> None:
        pass

    def _call(self, what: str) -> None:
        self.calls.append(what)
        if self.gone:
            raise RelayClosed("xenstore relay on fake-dom0 closed the stream")
        if self.dead or (what == "alive" and self.slow > 0):
            self.slow = max(self.slow - 1, 0) if what == "alive" else self.slow
            time.sleep(0.3)  # the real call waits out its deadline
            raise XenStoreTimeout("xenstore on fake-dom0: no reply within 0.3s")

    def alive(self) -> None:
        self._call("alive")

    def device_states(self, domid: int) -> list[DeviceState]:
        self._call("device_states")
        be = f"/local/domain/0/backend/{{}}/{domid}"
        first = {"vbd": 51712, "vif": 0}
        return [
            DeviceState(
                k,
                str(first[k] + i),
                f"/local/domain/{domid}/device/{k}/{first[k] + i}",
                self.states[k],
                be.format(k) + f"/{first[k] + i}",
                self.backend[k],
            )
            for k in ("vbd", "vif")
            for i in range(self.devices[k])
        ]

    def console_tty(self, domid: int) -> str | None:
        self._call("console_tty")
        return self.tty

    def domain_dump(self, domid: int) -> str:
        self._call("domain_dump")
        return f'/local/domain/{domid} = ""\n'


@pytest.fixture
def kit(tmp_path: Path) -> tuple[Path, Path]:
    k, r = tmp_path / "vmlinuz", tmp_path / "initrd"
    k.write_bytes(b"kernel")
    r.write_bytes(b"initrd")
    return k, r


PROFILE = load_profile("linux-pvh")


def _point(kernel: str, ramdisk: str | None) -> DomainSpec:
    return PROFILE.point(kernel=kernel, ramdisk=ramdisk)


def _run(
    host, point, tmp_path, *, states=None, on_event=None, grace=2.0, kit=None, timeout=30, xs=None
):
    xs = xs or FakeXenStore(states or {"vbd": 4, "vif": 4})
    # A dead fake XenStore is a stopped xenstored, as the live fault tests make it (SIGSTOP).
    host.xenstored = lambda: "T" if xs.dead else "S"
    events: list[object] = []
    run = BootRun(
        host,
        PROFILE,
        point,
        artifacts=tmp_path / "art",
        guest_kit=kit,
        hooks=RunHooks(on_event=on_event or events.append, xenstore_factory=lambda h: xs),
        limits=RunLimits(
            xenbus_grace=grace,
            timeout=timeout,
            xenstore_probe_interval=0.2,
            # The probe declares xenstored dead after 2 x this without an answer.
            xenstore_timeout=0.3,
        ),
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
    clients = HostClients(xenstore_factory=lambda h: xs)
    return Session(request, host=host, on_event=on_event, clients=clients)


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


@pytest.mark.parametrize(
    ("xs", "needle"),
    [
        (FakeXenStore(devices={"vbd": 0, "vif": 1}), "vbd: 0 device(s) in xenstore, expected 1"),
        (FakeXenStore(devices={"vbd": 2, "vif": 1}), "vbd: 2 device(s) in xenstore, expected 1"),
        (FakeXenStore(devices={"vbd": 1, "vif": 0}), "vif: 0 device(s) in xenstore, expected 1"),
        (FakeXenStore(tty=None), "/local/domain/1/console/tty missing"),
        (FakeXenStore(backend={"vbd": 6, "vif": 4}), "backend/vbd/1/51712/state=6 (Closed)"),
        (FakeXenStore({"vbd": 1, "vif": 4}), "device/vbd/51712/state=1 (Initialising)"),
    ],
    ids=["no-disk", "extra-disk", "no-vif", "no-tty", "backend-closed", "frontend-stuck"],
)
def test_xenstore_device_check_fails_xenbus_naming_the_problem(host, kit, tmp_path, xs, needle):
    """Every failure the device check exists to catch, reported by the fake the way
    xenstored reports it, fails the xenbus stage naming it."""
    host.console = GOOD
    run, _ = _run(host, _point(str(kit[0]), str(kit[1])), tmp_path, xs=xs, grace=0.5)
    v = run.run()
    assert v.verdict == VerdictValue.FAIL and v.failed_stage == "xenbus", v.reason
    assert needle in v.reason
    _no_guest_left(host, run)


def _broken_without_a_failed_stage(v) -> None:
    assert v.verdict == VerdictValue.BROKEN and v.failed_stage is None, v.reason
    assert all(s.status != StageStatus.FAILED for s in v.stages)
    assert "xenstore" in v.reason and "fake-dom0" in v.reason


def _when_passed(stage: str, action):
    """An on_event callback that runs `action` once `stage` passed on the console."""

    def on_event(ev: object) -> None:
        if isinstance(ev, StageEvent) and ev.stage == stage and ev.kind == "passed":
            action()

    return on_event


def test_xenstored_dead_before_xenbus_is_broken_not_a_guest_fail(host, kit, tmp_path) -> None:
    """xenstored stops answering while the guest is before xenbus (the guest then waits
    for its devices forever): broken at once, not `fail (xenbus)` at the stage deadline."""
    xs = FakeXenStore()
    host.console = b"".join(GOOD.splitlines(keepends=True)[:3])  # stalls before xenbus
    on_event = _when_passed("ap-launch", lambda: setattr(xs, "dead", True))

    run, _ = _run(host, _point(str(kit[0]), str(kit[1])), tmp_path, xs=xs, on_event=on_event)
    t0 = time.monotonic()
    v = run.run()
    assert time.monotonic() - t0 < 5  # the probe, not the 30 s run deadline
    _broken_without_a_failed_stage(v)
    assert "xenstored on fake-dom0 stopped answering" in v.reason
    by = {s.name: s.status for s in v.stages}
    assert by["ap-launch"] == StageStatus.PASSED and by["xenbus"] == StageStatus.NOT_REACHED
    _no_guest_left(host, run)


def test_xenstored_dead_after_xenbus_is_broken(host, kit, tmp_path) -> None:
    xs = FakeXenStore()
    host.console = b"".join(GOOD.splitlines(keepends=True)[:-1])  # stalls before login
    on_event = _when_passed("xenbus", lambda: setattr(xs, "dead", True))

    run, _ = _run(host, _point(str(kit[0]), str(kit[1])), tmp_path, xs=xs, on_event=on_event)
    v = run.run()
    _broken_without_a_failed_stage(v)
    assert {s.name: s.status for s in v.stages}["xenbus"] != StageStatus.FAILED
    _no_guest_left(host, run)


def test_a_slow_xenstored_is_not_a_dead_one(host, kit, tmp_path) -> None:
    """Seen in CI: a dom0 busy writing back a freshly unpacked guest disk left the first
    probe unanswered past its deadline, and a good boot was called `broken`.  Calls that
    time out and then get answered (within 2 x the call deadline) leave the boot alone."""
    xs = FakeXenStore(slow=1)  # the first probe times out; the next one is answered
    host.console = GOOD
    host.console_delay = 0.1  # a boot of a few seconds: the probe asks during it
    run, _ = _run(host, _point(str(kit[0]), str(kit[1])), tmp_path, xs=xs)
    v = run.run()
    assert v.verdict == VerdictValue.PASS, v.reason
    assert run._probe.timeouts == 1
    _no_guest_left(host, run)


def test_a_slow_device_poll_leaves_the_verdict_to_the_probe(host, kit, tmp_path) -> None:
    """The device check's own XenStore read timing out is a suspicion too, not a verdict."""
    xs = FakeXenStore()
    host.console = GOOD
    polls = {"n": 0}
    real = xs.device_states

    def device_states(domid: int) -> list[DeviceState]:
        polls["n"] += 1
        if polls["n"] == 1:
            time.sleep(0.3)
            raise XenStoreTimeout("xenstore on fake-dom0: no reply within 0.3s")
        return real(domid)

    xs.device_states = device_states  # type: ignore[method-assign]
    run, _ = _run(host, _point(str(kit[0]), str(kit[1])), tmp_path, xs=xs)
    v = run.run()
    assert v.verdict == VerdictValue.PASS, v.reason
    assert polls["n"] >= 2 and run._probe.timeouts == 1
    _no_guest_left(host, run)


def test_a_relay_that_cannot_reach_xenstored_is_broken_at_once(host, kit, tmp_path) -> None:
    xs = FakeXenStore()
    host.console = b"".join(GOOD.splitlines(keepends=True)[:3])
    on_event = _when_passed("ap-launch", lambda: setattr(xs, "gone", True))

    run, _ = _run(host, _point(str(kit[0]), str(kit[1])), tmp_path, xs=xs, on_event=on_event)
    v = run.run()
    _broken_without_a_failed_stage(v)
    assert "closed the stream" in v.reason and run._probe.timeouts == 0
    _no_guest_left(host, run)


def test_a_deadline_fail_asks_xenstored_before_blaming_the_guest(host, kit, tmp_path) -> None:
    """The probe had not caught it yet when the deadline struck: the final probe does."""
    xs = FakeXenStore()
    host.console = b"".join(GOOD.splitlines(keepends=True)[:3])
    run, _ = _run(host, _point(str(kit[0]), str(kit[1])), tmp_path, xs=xs, timeout=2)
    run._probe.interval = 3600.0  # no periodic probe: only the final one
    run._probe._next = time.monotonic() + 3600.0
    on_event = _when_passed("ap-launch", lambda: setattr(xs, "dead", True))

    run.on_event = on_event
    v = run.run()
    _broken_without_a_failed_stage(v)
    # Linux runs /init before blkfront loads: root-mount is the stage after ap-launch.
    assert "guest verdict was fail at root-mount" in v.reason
    _no_guest_left(host, run)


def test_a_panic_is_the_guests_fail_even_with_xenstored_dead(host, kit, tmp_path) -> None:
    """A console line decided it: no probe is asked, the guest's fail stands."""
    xs = FakeXenStore(dead=True)
    host.console = GOOD[:120] + b"Kernel panic - not syncing: No working init found.\n"
    run, _ = _run(host, _point(str(kit[0]), str(kit[1])), tmp_path, xs=xs)
    run._probe._next = time.monotonic() + 3600.0
    v = run.run()
    assert v.verdict == VerdictValue.FAIL and "forbidden pattern" in v.reason
    assert "alive" not in xs.calls
    _no_guest_left(host, run)


def test_more_memory_than_the_host_has_is_blocked_before_create(host, kit, tmp_path) -> None:
    """Within the static bound (1 TiB) but more than this host has free: the host's own
    figure decides, after connecting and before `xl create` (which would fail as broken)."""
    point = PROFILE.point(kernel=str(kit[0]), ramdisk=str(kit[1]), memory_mb=100_000)
    run, _ = _run(host, point, tmp_path)
    v = run.run()
    assert v.verdict == VerdictValue.BLOCKED and v.failed_stage is None
    assert "memory 100000 MiB: host fake-dom0 has 1843 MiB free for guests of 3071" in v.reason
    assert not [c for c in host.calls if c[:2] == ("xl", "create")]
    _no_guest_left(host, run)
    ok = PROFILE.point(kernel=str(kit[0]), ramdisk=str(kit[1]), memory_mb=1843)
    host.console = GOOD
    assert _run(host, ok, tmp_path / "ok")[0].run().verdict == VerdictValue.PASS


def test_ctrl_c_during_a_hanging_destroy_is_honoured_at_once(host, kit, tmp_path) -> None:
    """The host froze: `xl destroy` hangs on ssh.  A Ctrl-C then ends the run at once; the
    destroy is not started a second time (the next run's sweep reclaims the domain)."""
    host.console = GOOD
    orig = host._answer
    destroys: list[float] = []

    def answer(argv):
        if argv[:2] == ("xl", "destroy"):
            destroys.append(time.monotonic())
            raise KeyboardInterrupt  # what Ctrl-C does to a wait on ssh
        return orig(argv)

    host._answer = answer  # type: ignore[method-assign]
    run, _ = _run(host, _point(str(kit[0]), str(kit[1])), tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run.run()
    assert len(destroys) == 1


def test_an_unreachable_host_is_not_waited_on_again_after_the_destroy(host, kit, tmp_path):
    host.console = GOOD
    orig = host._answer
    after: list[tuple[str, ...]] = []

    def answer(argv):
        if argv[:2] == ("xl", "destroy"):
            raise BrokenError("ssh: timed out after 60s running xl destroy")
        if any(a[:2] == ("xl", "destroy") for a in host.calls[:-1]):
            after.append(argv)
        return orig(argv)

    host._answer = answer  # type: ignore[method-assign]
    run, _ = _run(host, _point(str(kit[0]), str(kit[1])), tmp_path)
    v = run.run()
    assert v.verdict == VerdictValue.BROKEN and "destroying" in v.reason
    assert after == []
    host._answer = orig  # type: ignore[method-assign]


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
        hooks=RunHooks(xenstore_factory=lambda h: xs),
        limits=RunLimits(xenbus_grace=20.0, timeout=30),
    )
    v = run.run()
    assert v.verdict == VerdictValue.PASS, v.reason
    assert xs.reads >= 3
    assert "vifs: 1 Connected in XenStore (vif/0)" in next(
        s.detail for s in v.stages if s.name == "xenbus"
    )


# -- the state machine's table and the run's shape ---------------------------------------------


def test_destroy_follows_every_state_after_prepare_and_alone_reaches_done() -> None:
    from xenpvh.run.events import TRANSITIONS, InvalidTransition, check_transition

    for state in (RunState.PREPARE, RunState.CREATE, RunState.WATCH, RunState.DECIDE):
        assert RunState.DESTROY in TRANSITIONS[state], state
    assert [s for s, nxt in TRANSITIONS.items() if RunState.DONE in nxt] == [RunState.DESTROY]
    with pytest.raises(InvalidTransition):
        check_transition(RunState.REPORT, RunState.DONE)
    with pytest.raises(InvalidTransition):
        check_transition(RunState.WATCH, RunState.PREPARE)


def test_a_bug_while_collecting_still_destroys_through_the_checked_transition(
    host, kit, tmp_path, monkeypatch
) -> None:
    """Every state change goes through transition() (the table's check), the destroy after
    a bug in COLLECT too: the guest is gone and the DESTROY event reported."""
    import xenpvh.run.boot as boot

    checked: list[RunState] = []

    def recording(current, target) -> None:
        checked.append(target)
        boot_check(current, target)

    boot_check = boot.check_transition
    monkeypatch.setattr(boot, "check_transition", recording)
    host.console = GOOD
    run, events = _run(host, _point(str(kit[0]), str(kit[1])), tmp_path)

    def collect_bug() -> None:
        raise RuntimeError("a bug in collect")

    monkeypatch.setattr(run, "_collect", collect_bug)
    with pytest.raises(RuntimeError, match="a bug in collect"):
        run.run()
    states = [e.state for e in events if isinstance(e, RunStateEvent)]
    assert states[-2:] == [RunState.COLLECT, RunState.DESTROY]
    assert checked == states and run.state is RunState.DESTROY
    _no_guest_left(host, run)


def test_the_run_room_builds_no_verdict_and_no_constructor_takes_over_8_parameters() -> None:
    """Verdicts are built by the decider (xenpvh.check.decide) from the facts the run
    reports; the run's parts take grouped options, not long parameter lists."""
    import ast

    import xenpvh.run

    for path in Path(xenpvh.run.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Verdict":
                raise AssertionError(f"{path.name}:{node.lineno} builds a Verdict")
            if isinstance(node, ast.FunctionDef) and node.name == "__init__":
                a = node.args
                n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) - 1  # not self
                assert n <= 8, f"{path.name}:{node.lineno} __init__ takes {n} parameters"
