"""The developer's loop without Xen: upload caching, keeping a failed guest (and its lease
outliving the sweep until the keep ends), the host lock in a Session, the file watch, stage
time differences, the interactive console pump, and the CLI's parsing and refusals.

Fakes only at the Host boundary (test_toolstack_fakes.FakeXenHost answers like xl 4.17 and
runs `xl console` as a real pty child); uploads are also measured against a real LocalHost."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import pexpect
import pytest
from test_run_boot import GOOD, FakeXenStore
from test_toolstack_fakes import FakeXenHost

from xenpvh.check.verdict import VerdictValue
from xenpvh.cli.main import main
from xenpvh.host import lock
from xenpvh.host.local import LocalHost
from xenpvh.host.lock import HostLease
from xenpvh.run import keep, lease, remote
from xenpvh.run.devloop import DevLoop, FileWatch, stage_deltas
from xenpvh.run.options import HostClients
from xenpvh.run.request import BootRequest
from xenpvh.run.session import HostWaitEvent, Session
from xenpvh.toolstack.attach import AttachEnd, interact
from xenpvh.util.fs import sha256_file

# A 2-vCPU guest that brought up only its boot CPU (e.g. `maxcpus=1`): fails at ap-launch.
ONE_CPU = GOOD.replace(b"2 CPUs", b"1 CPU")


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The local kept-guest index lives under a private XDG_CACHE_HOME."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def kit(tmp_path: Path) -> tuple[str, str]:
    k, r = tmp_path / "vmlinuz", tmp_path / "initrd"
    k.write_bytes(b"kernel" * 1000)
    r.write_bytes(b"initrd" * 100)
    return str(k), str(r)


def _session(fake_host, kit, tmp_path, **kw) -> Session:
    xs = FakeXenStore({"vbd": 4, "vif": 4})
    request = BootRequest(profile="linux-pvh", kernel=kit[0], ramdisk=kit[1], attempts=1, **kw)
    clients = HostClients(xenstore_factory=lambda h: xs)
    return Session(request, host=fake_host, clients=clients, artifacts_root=tmp_path / "art")


# -- uploads ----------------------------------------------------------------------------------


def test_upload_sends_only_what_the_host_lacks(tmp_path: Path) -> None:
    """Against a real LocalHost: the bytes sent are measured; an unchanged kernel is not
    sent again, a changed one (a new content-addressed name) is."""
    k = tmp_path / "bzImage"
    k.write_bytes(os.urandom(50_000))
    h = LocalHost()
    root = tmp_path / "host"
    name = lambda p: f"{root}/kernels/{sha256_file(p)[:16]}-{p.name}"  # noqa: E731
    assert remote.upload(h, [(k, name(k))], []) == {name(k): 50_000}
    assert Path(name(k)).read_bytes() == k.read_bytes()
    assert remote.upload(h, [(k, name(k))], []) == {name(k): 0}
    k.write_bytes(os.urandom(40_000))
    assert remote.upload(h, [(k, name(k))], []) == {name(k): 40_000}


def test_second_run_with_unchanged_kernel_uploads_nothing(host, kit, tmp_path) -> None:
    host.console = GOOD
    first = _session(host, kit, tmp_path).run().verdict
    assert first.verdict is VerdictValue.PASS, first.reason
    assert first.meta["uploads"]["kernel"] == 6000
    assert first.meta["uploads"]["ramdisk"] == 600
    assert first.meta["uploaded_bytes"] >= 6600
    second = _session(host, kit, tmp_path).run().verdict
    assert second.meta["uploads"] == {"kernel": 0, "ramdisk": 0}
    assert second.meta["uploaded_bytes"] == 0
    doc = json.loads((Path(second.meta["artifacts"]) / "verdict.json").read_text())
    assert doc["meta"]["uploaded_bytes"] == 0
    Path(kit[0]).write_bytes(b"rebuilt" * 10)
    third = _session(host, kit, tmp_path).run().verdict
    assert third.meta["uploads"]["kernel"] == 70 and third.meta["uploads"]["ramdisk"] == 0


# -- keeping a failed guest ---------------------------------------------------------------------


def test_fail_keeps_the_guest_with_its_records_and_lease(host, kit, tmp_path, cache) -> None:
    host.console = ONE_CPU
    result = _session(host, kit, tmp_path, keep_on_fail=True, keep_for=3600, owner="ann").run()
    v = result.verdict
    assert v.verdict is VerdictValue.FAIL and v.failed_stage == "ap-launch", v.reason
    kept = v.meta["kept"]
    domain, run_id = kept["domain"], kept["run_id"]
    assert domain in host.domains, "the failed guest was destroyed"
    assert kept["owner"] == "ann" and kept["failed_stage"] == "ap-launch"
    assert kept["expires"] - kept["since"] == pytest.approx(3600)
    assert Path(kept["console_log"]).is_file()
    run_dir = f"/var/lib/xenpvh/runs/{run_id}"
    record = keep.KeptGuest.from_json(host.files[f"{run_dir}/kept.json"].decode())
    assert record.domain == domain
    lease_doc = json.loads(host.files[f"{run_dir}/lease"])
    assert lease_doc["expires"] == pytest.approx(kept["expires"], abs=2)
    # The dev process ends while the guest lives on: the lease is detached, so a sweep does
    # not reclaim it as a dead owner's (only the keep's expiry ends it).
    assert lease_doc["detached"] is True
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert not lease.owner_gone({**lease_doc, "owner_pid": dead.pid, "owner_started": 1})
    # The local index finds it by run id and by domain name.
    assert keep.find_local(run_id) == record
    assert keep.find_local(domain) == record
    assert (cache / "xenpvh" / "kept" / f"{run_id}.json").is_file()
    # verdict.json says so too.
    doc = json.loads((result.artifacts / "verdict.json").read_text())
    assert doc["meta"]["kept"]["domain"] == domain
    # The sweep of a later run on the same host leaves it alone (its lease is live) ...
    host.console = GOOD
    assert _session(host, kit, tmp_path).run().verdict.verdict is VerdictValue.PASS
    assert domain in host.domains
    # ... and `end` destroys it, removes its run dir and both records.
    assert keep.end(host, record)
    assert domain not in host.domains
    assert not [p for p in host.files if p.startswith(run_dir)]
    assert keep.local_records() == []


def test_expired_keep_is_reaped_by_the_next_run_and_by_reap(host, kit, tmp_path) -> None:
    host.console = ONE_CPU
    v = _session(host, kit, tmp_path, keep_on_fail=True, keep_for=3600).run().verdict
    run_id, domain = v.meta["kept"]["run_id"], v.meta["kept"]["domain"]
    run_dir = f"/var/lib/xenpvh/runs/{run_id}"
    # The keep ran out: the lease is in the past.
    lease.write_lease(host, run_dir, domain=domain, run_id=run_id, timeout=-lease.LEASE_SLACK - 5)
    host.console = GOOD
    later = _session(host, kit, tmp_path).run().verdict
    assert later.meta.get("swept_stale_domains") == [domain]
    assert domain not in host.domains
    assert not [p for p in host.files if p.startswith(run_dir)]
    # reap_expired ends kept guests whose record says the keep is over.
    host.console = ONE_CPU
    v = _session(host, kit, tmp_path, keep_on_fail=True, keep_for=1).run().verdict
    time.sleep(1.1)
    reaped = keep.reap_expired(host)
    assert [r.run_id for r in reaped] == [v.meta["kept"]["run_id"]]
    assert list(host.domains) == ["Domain-0"]
    assert keep.local_records() == []


@pytest.mark.parametrize("console", [GOOD, ONE_CPU])
def test_only_a_fail_is_kept_and_only_when_asked(host, kit, tmp_path, console) -> None:
    host.console = console
    v = _session(host, kit, tmp_path, keep_on_fail=console == GOOD).run().verdict
    assert "kept" not in v.meta
    assert list(host.domains) == ["Domain-0"]
    assert not [p for p in host.files if p.startswith("/var/lib/xenpvh/runs/")]


def test_a_guest_gone_by_itself_is_not_kept(host, kit, tmp_path) -> None:
    host.console = ONE_CPU
    host.console_then = "crash"  # on_crash="destroy": the domain is gone at the verdict
    v = _session(host, kit, tmp_path, keep_on_fail=True).run().verdict
    assert v.verdict is VerdictValue.FAIL
    assert "kept" not in v.meta
    assert keep.local_records() == []
    assert not [p for p in host.files if p.startswith("/var/lib/xenpvh/runs/")]


def test_kept_record_from_a_host_is_checked() -> None:
    good = keep.KeptGuest(
        "20261202-101010-abcdef",
        "xenpvh-20261202-101010-abcdef",
        3,
        "h",
        {},
        "xl",
        "o",
        1.0,
        2.0,
        "/a",
        "/a/console.log",
    )
    assert keep.KeptGuest.from_json(good.to_json()) == good
    for bad in (
        {"run_id": "../../etc"},
        {"domain": "Domain-0"},
        {"remote_root": "/var/../etc"},
        {"expires": "soon"},
    ):
        doc = {**json.loads(good.to_json()), **bad}
        with pytest.raises((ValueError, TypeError)):
            keep.KeptGuest.from_json(json.dumps(doc))
    with pytest.raises(Exception, match="neither a run id"):
        keep.find_local("rm -rf /")


# -- the host lock in a session -----------------------------------------------------------------


def _hold(host: FakeXenHost, owner: str, reason: str = "bisecting", ttl: float = 600) -> None:
    now = time.time()
    held = HostLease(host.name, owner, reason, now, now + ttl, 0, "elsewhere")
    host.files[f"{lock.LOCK_ROOT}/host-lease"] = (held.to_text() + "\n").encode()


def test_a_held_host_refuses_a_session_naming_the_owner(host, kit, tmp_path) -> None:
    host.console = GOOD
    _hold(host, "nightly@ci", "plan nightly-4.17")
    events: list[object] = []
    s = _session(host, kit, tmp_path, owner="ann", wait_host=1.0)
    s.on_event = events.append
    t0 = time.monotonic()
    v = s.run().verdict
    assert v.verdict is VerdictValue.BLOCKED
    assert "nightly@ci" in v.reason and "plan nightly-4.17" in v.reason, v.reason
    assert "waited" in v.reason and time.monotonic() - t0 >= 1.0
    assert any(isinstance(e, HostWaitEvent) and "nightly@ci" in e.holder for e in events)
    assert not [c for c in host.calls if c[:2] == ("xl", "create")], "a domain was made"
    # Its owner passes; an expired lease is no obstacle.
    assert _session(host, kit, tmp_path, owner="nightly@ci").run().verdict.verdict == "pass"
    _hold(host, "nightly@ci", ttl=-1)
    assert _session(host, kit, tmp_path, owner="ann").run().verdict.verdict == "pass"


# -- watch and deltas ---------------------------------------------------------------------------


def test_file_watch_debounces(tmp_path: Path) -> None:
    k = tmp_path / "bzImage"
    k.write_bytes(b"v1")
    w = FileWatch([k], debounce=0.6, poll=0.05)
    assert w.wait(timeout=0.3) is None

    def build() -> None:  # a build writing the kernel in pieces over 0.5 s
        for i in range(5):
            with k.open("ab") as f:
                f.write(b"x" * i)
            time.sleep(0.1)

    threading.Thread(target=build).start()
    t0 = time.monotonic()
    assert w.wait(timeout=10) == [k]
    # Not before the writes ended (0.4 s) and the file then held still (0.6 s).
    assert time.monotonic() - t0 >= 0.9
    assert k.read_bytes() == b"v1" + b"x" * 10
    assert w.wait(timeout=0.3) is None  # nothing new
    k.unlink()
    assert w.wait(timeout=0.3) is None  # gone is not a change to run
    k.write_bytes(b"v2")
    assert w.wait(timeout=5) == [k]


def test_stage_deltas() -> None:
    from xenpvh.check.verdict import StageResult, StageStatus, Verdict

    a = Verdict(
        VerdictValue.PASS,
        "",
        stages=[StageResult("early-init", StageStatus.PASSED, 0.5), StageResult("ap-launch")],
    )
    b = Verdict(
        VerdictValue.FAIL,
        "",
        stages=[
            StageResult("early-init", StageStatus.PASSED, 0.25),
            StageResult("ap-launch", StageStatus.FAILED, 1.0),
        ],
    )
    d = stage_deltas(a, b)
    assert [(x.stage, x.before, x.now, x.delta) for x in d] == [
        ("early-init", 0.5, 0.25, -0.25),
        ("ap-launch", None, None, None),
    ]
    assert d[1].status == "failed"


# -- the console pump ---------------------------------------------------------------------------


def test_interact_pumps_both_ways_logs_and_detaches(tmp_path: Path) -> None:
    """A real pty child (`cat`-like echo) as the console, a pty pair as the terminal."""
    child = pexpect.spawn(
        sys.executable,
        ["-c", "import sys\nfor l in sys.stdin: print('guest says', l.strip(), flush=True)"],
        timeout=10,
    )
    term_master, term_slave = pty.openpty()
    tty.setraw(term_slave)  # as attach() sets the user's terminal
    log_path = tmp_path / "console.log"
    result: list[object] = []
    with log_path.open("ab") as log:
        t = threading.Thread(
            target=lambda: result.append(
                interact(child, stdin_fd=term_slave, stdout_fd=term_slave, log=log)
            )
        )
        t.start()
        os.write(term_master, b"hello\r")
        seen = b""
        deadline = time.monotonic() + 10
        while b"guest says hello" not in seen and time.monotonic() < deadline:
            seen += os.read(term_master, 1024)
        os.write(term_master, b"\x1d")  # Ctrl-]
        t.join(10)
    child.close(force=True)
    assert result and result[0].end is AttachEnd.DETACHED
    assert b"guest says hello" in log_path.read_bytes()


def test_interact_ends_with_the_console(tmp_path: Path) -> None:
    child = pexpect.spawn(sys.executable, ["-c", "print('bye')"], timeout=10)
    r, _w = os.pipe()
    out_r, out_w = os.pipe()
    res = interact(child, stdin_fd=r, stdout_fd=out_w, log=None)
    assert res.end is AttachEnd.CONSOLE_ENDED
    assert b"bye" in os.read(out_r, 100)


# -- CLI ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("30m", 1800), ("2h", 7200), ("1.5d", 129600)]
)
def test_duration(text: str, seconds: float) -> None:
    from xenpvh.cli.dev import duration

    assert duration(text) == seconds


def test_dev_json_is_a_line_per_run_with_stage_deltas_uploads_and_the_kept_guest(
    host, kit, tmp_path, capsys
) -> None:
    """`dev --format json`: stdout carries one JSON object per run, one line each (a stream
    under --watch); the checklist and the human lines stay on stderr."""
    from rich.console import Console

    from xenpvh.cli.dev import DevView

    xs = FakeXenStore({"vbd": 4, "vif": 4})
    request = BootRequest(
        profile="linux-pvh", kernel=kit[0], ramdisk=kit[1], attempts=1,
        keep_on_fail=True, keep_for=600, owner="ann",
    )  # fmt: skip
    stages = ["early-init", "ap-launch", "root-mount", "xenbus", "login"]
    view = DevView(stages, Console(stderr=True), as_json=True)
    loop = DevLoop(
        request, artifacts_root=tmp_path / "art", on_event=view,
        session_options={"clients": HostClients(xenstore_factory=lambda h: xs)},
    )  # fmt: skip
    with view:
        host.console = GOOD
        assert loop.run_once(host, changed_at=None).exit_code == 0
        host.console = ONE_CPU
        assert loop.run_once(host, changed_at=time.time() - 5).exit_code == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 2, out
    first, second = (json.loads(x) for x in lines)
    assert (first["run"], first["verdict"], first["failed_stage"]) == (1, "pass", None)
    assert first["uploads"] == {"kernel": 6000, "ramdisk": 600} and first["kept"] is None
    assert all(s["previous_t"] is None and s["t"] is not None for s in first["stages"])
    assert (second["verdict"], second["failed_stage"], second["exit_code"]) == (
        "fail", "ap-launch", 1,
    )  # fmt: skip
    assert second["uploads"] == {"kernel": 0, "ramdisk": 0} and second["uploaded_bytes"] == 0
    early = next(s for s in second["stages"] if s["name"] == "early-init")
    assert early["previous_t"] is not None and early["delta"] == pytest.approx(
        early["t"] - early["previous_t"], abs=1e-3
    )
    ap = next(s for s in second["stages"] if s["name"] == "ap-launch")
    assert ap["status"] == "failed" and ap["t"] is None and ap["delta"] is None
    assert second["kept"]["domain"] in host.domains and second["kept"]["owner"] == "ann"
    assert second["kernel_written_to_verdict_s"] >= 5
    assert second["run_id"] == second["kept"]["run_id"]
    assert "run 2: fail at ap-launch" in err and "xenpvh attach" in err
    keep.end(host, keep.KeptGuest(**second["kept"]))


def test_dev_refuses_bad_input_before_any_host(tmp_path: Path, capsys) -> None:
    assert main(["dev", "--profile", "linux-pvh", "--watch"]) == 2
    assert "--watch needs --kernel" in capsys.readouterr().err
    assert main(["dev", "--profile", "linux-pvh", "--kernel", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["dev", "--profile", "linux-pvh", "--keep-for", "soon"])


def test_attach_and_destroy_name_what_is_unknown(capsys) -> None:
    assert main(["attach", "20261202-101010-abcdef"]) == 2
    assert "no kept guest" in capsys.readouterr().err
    assert main(["destroy", "not a run"]) == 2
    assert "neither a run id" in capsys.readouterr().err


def test_ps_lists_nothing_and_host_lock_cycle_on_local(tmp_path, monkeypatch, capsys) -> None:
    """`host lock|who|unlock local` on a private lease root: the CLI's whole path."""
    monkeypatch.setattr(lock, "LOCK_ROOT", str(tmp_path / "lockroot"))
    assert main(["ps"]) == 0
    assert "no kept guests" in capsys.readouterr().out
    assert (
        main(["host", "lock", "local", "--reason", "bisect", "--owner", "ann", "--for", "1h"]) == 0
    )
    assert "locked local" in capsys.readouterr().err
    assert main(["host", "who", "local", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["lease"]["owner"] == "ann" and doc["lease"]["reason"] == "bisect"
    assert doc["lease"]["pid"] == 0  # held after the command exits
    # Another owner is refused (blocked, naming the holder), then unlocks only with --force.
    assert main(["host", "lock", "local", "--owner", "bob"]) == 2
    assert "ann" in capsys.readouterr().err
    assert main(["host", "unlock", "local", "--owner", "bob"]) == 2
    assert main(["host", "unlock", "local", "--owner", "ann"]) == 0
    assert main(["host", "who", "local"]) == 0
    assert "free" in capsys.readouterr().out


def test_ps_prunes_records_of_guests_the_host_no_longer_has(monkeypatch, capsys) -> None:
    """A kept guest recorded here that its host (this machine, `local`) does not have any
    more is dropped from the index by `ps` (it was reaped or destroyed elsewhere)."""
    rec = keep.KeptGuest(
        "20261202-101010-abcdef",
        "xenpvh-20261202-101010-abcdef",
        3,
        "local",
        {"spec": "local", "inventory": None, "identity": None, "known_hosts": None},
        "xl",
        "ann",
        time.time(),
        time.time() + 60,
        "/nonexistent",
        "/nonexistent/console.log",
        remote_root="/nonexistent-xenpvh-root",
    )
    keep.save_local(rec)
    monkeypatch.setattr(keep, "REMOTE_ROOT", "/nonexistent-xenpvh-root")
    assert main(["ps", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"kept": [], "problems": []}
    assert keep.local_records() == []


def test_the_dev_loop_reports_by_events_and_prints_nothing(host, kit, tmp_path, capsys) -> None:
    """The loop (library) draws nothing: its runs, the Session's events, the kept guest it
    ends before the next run and the watch all reach the front end as events."""
    from xenpvh.run.devloop import DevRunFinished, KeptGuestEnded

    xs = FakeXenStore({"vbd": 4, "vif": 4})
    request = BootRequest(
        profile="linux-pvh", kernel=kit[0], ramdisk=kit[1], attempts=1,
        keep_on_fail=True, keep_for=600, owner="ann",
    )  # fmt: skip
    events: list[object] = []
    loop = DevLoop(
        request, artifacts_root=tmp_path / "art", on_event=events.append,
        session_options={"clients": HostClients(xenstore_factory=lambda h: xs)},
    )  # fmt: skip
    host.console = ONE_CPU
    first = loop.run_once(host, changed_at=None)
    assert first.exit_code == 1 and first.kept is not None and loop.kept == first.kept
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "DevRunStarted" and kinds[-1] == "DevRunFinished", kinds
    assert "VerdictEvent" in kinds and "RunStateEvent" in kinds

    class OneChange:
        def wait(self, timeout: float | None = None) -> list[Path]:
            return [Path(kit[0])]

    events.clear()
    host.console = GOOD
    loop.watch(host, [Path(kit[0])], debounce=0, file_watch=OneChange(), runs=1)  # type: ignore[arg-type]
    kinds = [type(e).__name__ for e in events]
    assert kinds[:3] == ["Watching", "FilesChanged", "KeptGuestEnded"], kinds
    ended = events[2]
    assert isinstance(ended, KeptGuestEnded) and ended.error is None
    assert ended.record.domain == first.kept.domain and first.kept.domain not in host.domains
    done = events[-1]
    assert isinstance(done, DevRunFinished)
    second = done.run
    assert (second.number, second.exit_code, second.kept) == (2, 0, None)
    assert second.previous is first.verdict and second.changed_at is not None
    assert loop.kept is None
    assert capsys.readouterr() == ("", "")
