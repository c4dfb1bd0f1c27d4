"""The developer's loop live, through the `xenpvh` command itself, on the nested host (or the
lab box `--host` names): `xenpvh host nested up` once (or the one already up), then `dev`
runs reuse it.

- a `dev` run whose kernel command line keeps the APs down (`maxcpus=1` on a 2-vCPU guest:
  Linux brings up only the boot CPU) fails at ap-launch and keeps the guest; `attach` (driven
  by pexpect, on a real pty) logs in on its hvc0 and runs a shell command, Ctrl-] detaches;
  `destroy` ends it; nothing is left (no domain, no run dir, no record);
- the second run of an unchanged kernel uploads nothing (measured bytes, verdict.json);
- a host lease held by another process makes `dev` refuse naming the owner, or wait for it;
- `--watch`: touching the kernel re-runs; the edit → verdict time is measured and printed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest

from xenpvh.host import lock
from xenpvh.host.request import HostRequest
from xenpvh.run import keep

pytestmark = pytest.mark.xen

ROOT = Path(__file__).resolve().parent.parent


def _xenpvh(*args: str) -> list[str]:
    return [sys.executable, "-m", "xenpvh", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "200"
    return env


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(
        _xenpvh(*args), capture_output=True, text=True, timeout=timeout, env=_env(), cwd=ROOT
    )
    print(f"$ xenpvh {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def host_args(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """The `--host ...` arguments of every command; a nested host is brought up once
    (`xenpvh host nested up`) unless one is up already, and taken down if we started it."""
    opt = request.config.getoption
    spec = opt("xenpvh_host")
    args = ["--host", spec]
    for name in ("inventory", "identity", "known_hosts"):
        value = opt(f"xenpvh_{name}")
        if value:
            args += [f"--{name.replace('_', '-')}", value]
    started = False
    if spec == "nested":
        from xenpvh.host.nested import NestedHost

        try:
            NestedHost.attach().close()
        except Exception:
            t0 = time.monotonic()
            p = _run("host", "nested", "up")
            assert p.returncode == 0, p.stderr
            started = True
            print(f"nested host up in {time.monotonic() - t0:.1f}s")
    try:
        yield args
    finally:
        if started:
            _run("host", "nested", "down")


@pytest.fixture
def host(host_args: list[str]) -> Iterator[Any]:
    """The same host, reached from this process, for leak checks and the lease; it must be
    clean after every test."""
    from xenpvh.run.dev_hosts import reach_host

    spec = dict(zip(host_args[::2], host_args[1::2], strict=True))
    req = HostRequest(
        spec=spec["--host"],
        inventory=Path(spec["--inventory"]) if "--inventory" in spec else None,
        identity=Path(spec["--identity"]) if "--identity" in spec else None,
        known_hosts=Path(spec["--known-hosts"]) if "--known-hosts" in spec else None,
    )
    with reach_host(req) as h:
        yield h
        xenpvh_domains = [
            line.split()[0]
            for line in h.run(["xl", "list"], check=True).out.splitlines()
            if line.startswith("xenpvh-")
        ]
        assert xenpvh_domains == [], f"domains left: {xenpvh_domains}"
        left = h.run(["ls", "-A", "/var/lib/xenpvh/runs"]).out.split()
        assert left == [], f"run dirs left on the host: {left}"
        assert lock.read_lease(h) is None


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The guest kit's kernel, copied (the watch test touches it), and its initramfs."""
    from xenpvh.build.guestkit import build_linux_guest_kit

    kit = build_linux_guest_kit()
    d = tmp_path_factory.mktemp("kernel")
    shutil.copy2(kit.kernel, d / "vmlinuz")
    return d / "vmlinuz", Path(kit.ramdisk)


def _verdicts(art: Path) -> list[dict[str, Any]]:
    # `latest` is a symlink to the newest run's directory: each run once.
    docs = [
        json.loads(p.read_text()) for p in art.glob("*/verdict.json") if not p.parent.is_symlink()
    ]
    return sorted(docs, key=lambda d: d.get("started_at") or d["meta"].get("session_id", ""))


def _dev(host_args: list[str], kernel: tuple[Path, Path], art: Path, *extra: str) -> Any:
    return _run(
        "dev",
        "--profile",
        "linux-pvh",
        "--kernel",
        str(kernel[0]),
        "--ramdisk",
        str(kernel[1]),
        "--vcpus",
        "2",
        "--artifacts",
        str(art),
        "--attempts",
        "1",
        *host_args,
        *extra,
    )


def test_failed_guest_is_kept_attached_destroyed_and_uploads_are_cached(
    host: Any, host_args: list[str], kernel: tuple[Path, Path], tmp_path: Path
) -> None:
    from xenpvh.util.fs import sha256_file

    # Make this run the one that uploads the kernel: remove the host's content-addressed copy.
    remote_kernel = f"/var/lib/xenpvh/kernels/{sha256_file(kernel[0])[:16]}-vmlinuz"
    host.run(["rm", "-f", "--", remote_kernel], check=True)
    art = tmp_path / "art"
    p = _dev(host_args, kernel, art, "--cmdline-append", "maxcpus=1", "--keep-for", "20m")
    assert p.returncode == 1, p.stderr
    (doc,) = _verdicts(art)
    assert doc["verdict"] == "fail" and doc["failed_stage"] == "ap-launch", doc["reason"]
    assert "1 CPU" in doc["reason"]
    meta = doc["meta"]
    assert meta["uploads"]["kernel"] == kernel[0].stat().st_size  # sent: the host lacked it
    kept = meta["kept"]
    run_id, domain = kept["run_id"], kept["domain"]
    assert f"xenpvh attach {run_id}" in p.stdout
    assert host.run(["xl", "domid", domain]).ok, "the failed guest was not kept"
    try:
        _attach_and_destroy(host, kept)
    finally:
        if host.run(["xl", "domid", domain]).ok:  # a failure above: do not leak the guest
            _run("destroy", run_id)

    # The second run of the unchanged kernel sends nothing; --no-keep-on-fail destroys; its
    # outcome is one JSON line on stdout (--format json).
    art2 = tmp_path / "art2"
    p = _dev(
        host_args, kernel, art2, "--cmdline-append", "maxcpus=1", "--no-keep-on-fail",
        "--format", "json",
    )  # fmt: skip
    assert p.returncode == 1, p.stderr
    (line,) = p.stdout.splitlines()
    run = json.loads(line)
    assert (run["verdict"], run["failed_stage"], run["kept"]) == ("fail", "ap-launch", None)
    assert run["uploaded_bytes"] == 0
    (doc2,) = _verdicts(art2)
    assert run["run_id"] == doc2["meta"]["run_id"]
    assert doc2["failed_stage"] == "ap-launch"
    assert doc2["meta"]["uploads"]["kernel"] == 0
    assert doc2["meta"]["uploads"]["ramdisk"] == 0
    assert "kept" not in doc2["meta"]
    print(
        json.dumps(
            {
                "uploads_first": meta["uploads"],
                "uploads_second": doc2["meta"]["uploads"],
                "unpause_to_verdict_s": [
                    meta.get("unpause_to_verdict_s"),
                    doc2["meta"].get("unpause_to_verdict_s"),
                ],
            }
        )
    )


def _attach_and_destroy(host: Any, kept: dict[str, Any]) -> None:
    run_id, domain = kept["run_id"], kept["domain"]
    console_log = Path(kept["console_log"])
    before = console_log.stat().st_size

    # `ps` lists it with its owner and age.
    ps = _run("ps", "--format", "json")
    assert ps.returncode == 0
    rows = {r["run"]: r for r in json.loads(ps.stdout)["kept"]}
    assert rows[run_id]["owner"] == lock.default_owner()
    assert 0 <= rows[run_id]["age_s"] < 600 and rows[run_id]["failed_stage"] == "ap-launch"

    # `attach`: a shell in the kept guest over the host's pty channel; Ctrl-] detaches.
    child = pexpect.spawn(
        _xenpvh("attach", run_id)[0],
        _xenpvh("attach", run_id)[1:],
        env=_env(),
        cwd=str(ROOT),
        timeout=60,
        encoding="utf-8",
        codec_errors="replace",
        dimensions=(50, 200),
    )
    transcript: list[str] = []
    child.logfile_read = _Collect(transcript)
    try:
        child.expect("attached to")
        # getty (re)draws its prompt on a new line; a login runs root's shell.
        for _ in range(10):
            child.send("\r")
            if child.expect(["login: ", pexpect.TIMEOUT], timeout=10) == 0:
                break
        else:
            pytest.fail("no login prompt on the kept guest's console")
        child.send("root\r")
        child.expect(r"[#$] ", timeout=30)
        child.send("echo xenpvh-$((6*7)); grep -c ^processor /proc/cpuinfo\r")
        child.expect("xenpvh-42", timeout=30)
        child.expect(r"\n(\d+)\r?\n", timeout=30)
        assert child.match.group(1) == "1"  # maxcpus=1: the guest runs on one CPU
        child.sendcontrol("]")
        child.expect("detached", timeout=30)
        child.expect(pexpect.EOF, timeout=30)
    finally:
        child.close()
    assert child.exitstatus == 0, "".join(transcript)
    appended = console_log.read_bytes()[before:]
    assert b"xenpvh-42" in appended  # the attach session went into the run's console log
    assert host.run(["xl", "domid", domain]).ok, "detaching ended the guest"

    # `destroy` ends it: domain, run dir and records gone.
    p = _run("destroy", run_id)
    assert p.returncode == 0, p.stderr
    assert not host.run(["xl", "domid", domain]).ok
    assert not host.run(["test", "-e", f"/var/lib/xenpvh/runs/{run_id}"]).ok
    assert run_id not in {r.run_id for r in keep.local_records()}
    assert _run("attach", run_id).returncode == 2


# Nightly tier (tests/conftest.py): the lease has live sshd tests in test_host_lock.
@pytest.mark.slow
def test_host_lease_of_another_owner_refuses_then_waits(
    host: Any, host_args: list[str], kernel: tuple[Path, Path], tmp_path: Path
) -> None:
    held = lock.acquire(host, owner="nightly-test@ci", reason="live lease test", ttl=600)
    try:
        p = _dev(host_args, kernel, tmp_path / "refused")
        assert p.returncode == 2, p.stderr
        assert "nightly-test@ci" in p.stderr and "live lease test" in p.stderr
        assert host.run(["ls", "-A", "/var/lib/xenpvh/runs"]).out.split() == []
        who = _run("host", "who", *host_args[1:2], *host_args[2:], "--format", "json")
        assert json.loads(who.stdout)["lease"]["owner"] == "nightly-test@ci"
        # With --wait-host the run waits; it boots once the holder lets go.
        threading.Timer(15, lock.release, (host, held)).start()
        t0 = time.monotonic()
        p = _dev(host_args, kernel, tmp_path / "waited", "--wait-host", "300")
        assert p.returncode == 0, p.stderr
        assert time.monotonic() - t0 > 15
        assert "waiting:" in p.stderr and "nightly-test@ci" in p.stderr
    finally:
        lock.release(host, held)


def test_watch_reruns_on_a_new_kernel_and_measures_the_loop(
    host: Any, host_args: list[str], kernel: tuple[Path, Path], tmp_path: Path
) -> None:
    args = ["dev", "--profile", "linux-pvh", "--kernel", str(kernel[0])]
    args += ["--ramdisk", str(kernel[1]), "--artifacts", str(tmp_path / "art"), "--attempts", "1"]
    args += [*host_args, "--watch", "--debounce", "1"]
    child = pexpect.spawn(
        sys.executable,
        ["-m", "xenpvh", *args],
        env=_env(),
        cwd=str(ROOT),
        timeout=600,
        encoding="utf-8",
        codec_errors="replace",
        dimensions=(50, 200),
        # Ctrl-C below must reach a Python that honours it: a runner that started pytest
        # in the background of a script (CI, `cmd &`) hands its children SIGINT ignored,
        # and Python then installs no KeyboardInterrupt handler (the loop never ended).
        preexec_fn=_sigint_default,
    )
    transcript: list[str] = []
    child.logfile_read = _Collect(transcript)
    try:
        child.expect(r"run 1: (?:\x1b\[[0-9;]*m)*pass")
        child.expect("watching")
        time.sleep(2)
        os.utime(kernel[0])  # "make" wrote a new kernel
        child.expect(
            r"run 2: (?:\x1b\[[0-9;]*m)*pass.*"
            r"kernel written → verdict ([0-9.]+)s; start → verdict ([0-9.]+)s"
        )
        edit_to_verdict, start_to_verdict = map(float, child.match.groups())
        assert 0 < start_to_verdict <= edit_to_verdict
        child.expect("Δ")  # the stage-time comparison with run 1
        child.expect("watching")
        time.sleep(1)  # a human's Ctrl-C: the watch has started polling
        child.sendintr()
        if child.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=60) == 1:
            # Still running: its signal masks and its threads' stacks (xenpvh dumps them on
            # SIGUSR1) say whether the SIGINT was ignored, blocked or caught and where it waits.
            status = Path(f"/proc/{child.pid}/status").read_text()
            masks = [ln for ln in status.splitlines() if ln.startswith(("SigBlk", "SigIgn"))]
            child.kill(signal.SIGUSR1)
            child.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=5)
            # SIGTERM (what CI runners and systemd send) must still end the loop, cleanly.
            child.kill(signal.SIGTERM)
            child.expect(pexpect.EOF, timeout=60)
            child.close()
            assert child.exitstatus == 143, "".join(transcript[-20:])
            # Known and open (closing note of 2026-12-03): under a pytest started in the
            # background of a script, the loop was still polling 60 s after ^C (its stack in
            # FileWatch.wait); from a terminal, and from the same spawn outside pytest, it exits
            # 130 in 0.1 s.  Reported as xfail with the evidence, never as a pass.
            pytest.xfail(
                f"Ctrl-C not acted on within 60 s ({'; '.join(masks)}); stacks:\n"
                + "".join(transcript)[-3000:]
            )
    finally:
        child.close()
    assert child.exitstatus == 130 or child.signalstatus is not None, "".join(transcript)
    figures = {"edit_to_verdict_s": edit_to_verdict, "start_to_verdict_s": start_to_verdict}
    print(json.dumps(figures))
    out = os.environ.get("XENPVH_LIVE_TIMES")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps({"test": "dev --watch loop", **figures}) + "\n")


class _Collect:
    """pexpect logfile that keeps the transcript (shown when an assertion fails)."""

    def __init__(self, into: list[str]) -> None:
        self.into = into

    def write(self, data: str) -> None:
        self.into.append(data)

    def flush(self) -> None:
        pass
