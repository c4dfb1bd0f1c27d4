"""pytest plugin (entry point `pytest11: xenpvh`).

    pytest                              # a Xen host under QEMU, booted once per session
    pytest --xenpvh-host root@box       # a lab box (host key verified against known_hosts)
    pytest -n 4 --xenpvh-hosts a,b      # xdist: worker gwN boots on host N mod 2

Every option is `--xenpvh-NAME`.  Older names stay as aliases: `--no-xen`, `--xen-required`
always; `--host`, `--inventory`, `--identity` and `--known-hosts` unless another plugin or the
project's conftest.py already defines them (then the run says so once, at the end).  The
host settings can also live in the ini file (`pytest.ini`, `[tool.pytest.ini_options]`):
`xenpvh_host`, `xenpvh_hosts`, `xenpvh_inventory`, `xenpvh_identity`, `xenpvh_known_hosts`,
`xenpvh_artifacts`, `xenpvh_attempts`, `xenpvh_qemu`, `xenpvh_wait_host`; the command line
wins, and ini paths are relative to the ini file.

Fixtures:
- `xen_host`: the session's Host (nested host booted once per session, shut down at the end).
  Under pytest-xdist each worker takes its own host from the pool (`worker_host`); workers
  that share a host hold its lease (`xenpvh.host.lock`) one test at a time.
- `boot_guest`: call `boot_guest("linux-pvh", vcpus=4, disks=2, cmdline_append="maxcpus=1")`
  to boot one profile point on `xen_host`; returns a `BootResult` (verdict + artifacts) and
  records a JUnit property per stage.
After every `xen` test the leak check fails the test for what it started and left
(`xenpvh.leaks`).  Marker `xen` marks live tests; `--xenpvh-no-xen` deselects them.
Markers `xen` and `host` are declared here unless the project's configuration does.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from xenpvh import leaks
from xenpvh.check.verdict import Verdict
from xenpvh.host import lock
from xenpvh.host.open import open_host
from xenpvh.host.request import HostRequest
from xenpvh.plan import pytest_plan  # the module: a `pytest_` name here would be a hook
from xenpvh.profile.domain import DiskSpec, VifSpec
from xenpvh.pytest_settings import (
    SETTINGS,
    SHORT_SETTINGS,
    WorkerHost,
    ini_type,
    resolve_settings,
    worker_host,
)
from xenpvh.run.guest_inputs import TOLERATED_SKIPS
from xenpvh.run.request import BootRequest
from xenpvh.run.session import Session
from xenpvh.util.progress import log_sink

log = logging.getLogger(__name__)

GROUP = "xenpvh"


# Held by a worker per test on a host it shares with other workers (seconds).
WORKER_LEASE_TTL = 4 * 3600.0
# The short names another plugin or conftest.py had taken, per run (told at the end).
_TAKEN = pytest.StashKey[list[str]]()
_TOLERATED = pytest.StashKey[list[str]]()
_WORKER_HOST = pytest.StashKey[WorkerHost]()
_LEAK_SNAPSHOT = pytest.StashKey[leaks.Snapshot]()
# The markers this plugin needs, declared unless the project's configuration declares them.
MARKERS: dict[str, str] = {
    "xen": "live test that boots real Xen (the nested host unless --xenpvh-host is given)",
    "host": "uses real processes on this machine (sshd on loopback, qemu)",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(GROUP, "xenpvh: live Xen PVH boots")
    for s in SETTINGS:
        also = f" (alias {s.short}, unless another plugin defines it)" if s.short else ""
        group.addoption(f"--xenpvh-{s.name}", dest=s.dest, default=None, help=s.help + also)
        parser.addini(s.dest, f"{s.help} (--xenpvh-{s.name} wins)", type=ini_type(s))
    group.addoption(
        "--xenpvh-no-xen",
        "--no-xen",
        dest="xenpvh_no_xen",
        action="store_true",
        help="deselect `xen` tests (alias --no-xen)",
    )
    group.addoption(
        "--xenpvh-xen-required",
        "--xen-required",
        dest="xenpvh_xen_required",
        action="store_true",
        help="a skipped `xen` test is a failure (CI: a skipped live test is not a passing "
        "one) (alias --xen-required)",
    )
    pytest_plan.add_options(group)  # `xenpvh plan run`'s pytest sessions


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser
) -> Iterator[None]:
    """Offer the short option names once the project's conftest.py files had their say.

    A conftest's options are added after every plugin's, and argparse refuses a name twice
    ("conflicting option string: --host"): taking `--host` first would break every project
    whose conftest.py defines its own.  So the short names are added afterwards, where free.
    """
    result = yield
    group = parser.getgroup(GROUP)
    taken: list[str] = []
    for s in SHORT_SETTINGS:
        assert s.short is not None
        try:
            alias = f"alias of --xenpvh-{s.name}"
            group.addoption(s.short, dest=s.dest, default=argparse.SUPPRESS, help=alias)
        except (argparse.ArgumentError, ValueError):
            taken.append(s.short)
    early_config.stash[_TAKEN] = taken
    return result


def pytest_configure(config: pytest.Config) -> None:
    pytest_plan.pytest_configure_plan(config)
    resolve_settings(config)
    picked = config.stash[_WORKER_HOST] = worker_host(config)
    config.option.xenpvh_host = picked.spec
    declared = {line.split(":", 1)[0].split("(", 1)[0].strip() for line in config.getini("markers")}
    for name, description in MARKERS.items():
        if name not in declared:
            config.addinivalue_line("markers", f"{name}: {description}")


def picked_host(config: pytest.Config) -> WorkerHost:
    """The host `worker_host` picked for this pytest process (in pytest_configure)."""
    return config.stash[_WORKER_HOST]


def _tolerated_skip(reason: str) -> bool:
    """Exactly one of xenpvh.run.guest_inputs' reasons (pytest prefixes `Skipped: `)."""
    return reason.removeprefix("Skipped: ") in TOLERATED_SKIPS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in terminalreporter.config.stash.get(_TOLERATED, []):
        terminalreporter.write_line(f"xenpvh: --xenpvh-xen-required tolerated a skip: {line}")
    taken = terminalreporter.config.stash.get(_TAKEN, [])
    if taken:
        names = ", ".join(f"--xenpvh-{name.removeprefix('--')}" for name in taken)
        terminalreporter.write_line(
            f"xenpvh: {', '.join(taken)} belong to another plugin or conftest.py here; "
            f"xenpvh's are {names}"
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("xenpvh_no_xen"):
        keep, drop = [], []
        for item in items:
            (drop if item.get_closest_marker("xen") else keep).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep
    # The session's host lives from its first user to the end of the session.  Tests that
    # start a QEMU of their own wait for a free machine (two TCG guests on two cores starve
    # each other), so they must not come after the session host is up: its users go last.
    own = [i for i in items if "xen_host" not in getattr(i, "fixturenames", ())]
    shared = [i for i in items if "xen_host" in getattr(i, "fixturenames", ())]
    items[:] = own + shared


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if (
        report.skipped
        and item.get_closest_marker("xen")
        and item.config.getoption("xenpvh_xen_required")
        and not hasattr(report, "wasxfail")
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        if _tolerated_skip(str(reason)):
            # The user's own input (a FreeBSD kernel, XTF binaries) is absent: say so.
            item.config.stash.setdefault(_TOLERATED, []).append(f"{item.nodeid}: {reason}")
            return report
        report.outcome = "failed"
        report.longrepr = f"live `xen` test skipped but --xenpvh-xen-required is set: {reason}"


@pytest.fixture(scope="session")
def xen_host(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """The session's Xen host (a `xenpvh.host.base.Host`): the nested host is booted once
    per test session (or the one `xenpvh host nested up` left running is reused) and shut
    down at the end; an ssh host is connected once."""
    opt = request.config.getoption
    base = opt("xenpvh_artifacts")
    artifacts = Path(base) / "host" if base else tmp_path_factory.mktemp("xen-host")
    artifacts.mkdir(parents=True, exist_ok=True)
    hreq = HostRequest(
        spec=opt("xenpvh_host"),
        inventory=_path(opt("xenpvh_inventory")),
        identity=_path(opt("xenpvh_identity")),
        known_hosts=_path(opt("xenpvh_known_hosts")),
        qemu=opt("xenpvh_qemu"),
    )
    progress = log_sink(logging.getLogger("xenpvh.host"))  # pytest shows what was logged
    with open_host(hreq, artifacts=artifacts, progress=progress) as h:
        yield h


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    snapshot = item.stash.get(_LEAK_SNAPSHOT, None)
    if snapshot is not None:
        snapshot.call_starts()  # every fixture is set up now
    return (yield)


@pytest.fixture(autouse=True)
def _xenpvh_leak_check(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every `xen` test (and its fixtures' teardown): no process it started (QEMU by
    PID), no nested-host temp dir it made and no `xenpvh-` domain, run dir or console log
    of its runs on the session's host may be left (`xenpvh.leaks`)."""
    if request.node.get_closest_marker("xen") is None:
        yield
        return
    leaks.become_subreaper()
    before = request.node.stash[_LEAK_SNAPSHOT] = leaks.Snapshot()
    host = None
    if "xen_host" in request.fixturenames:
        host = request.getfixturevalue("xen_host")
        before.take_host(host)
    yield
    # An interrupted test (Ctrl-C, SIGTERM) has no funcargs left: check what can be checked.
    if not getattr(request.node, "funcargs", None):
        host = None
    # Nested hosts that outlive the test by design: those of session/module fixtures.
    keep_pids: set[int] = set()
    keep_dirs: set[str] = set()
    info = getattr(request.node, "_fixtureinfo", None)
    for defs in getattr(info, "name2fixturedefs", {}).values():
        for fixturedef in defs:
            cached = getattr(fixturedef, "cached_result", None)
            if fixturedef.scope != "function" and cached is not None:
                pids, dirs = leaks.session_host_parts(cached[0])
                keep_pids |= pids
                keep_dirs |= dirs
    found = leaks.leaks(before, keep_pids=keep_pids, keep_dirs=keep_dirs, host=host)
    if found:
        pytest.fail("left behind by this test: " + "; ".join(found), pytrace=False)


@pytest.fixture(autouse=True)
def _xenpvh_worker_lease(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test on a host this worker shares with other workers holds the host's lease for
    its duration: the others' tests wait (up to --xenpvh-wait-host), then fail naming the
    holder.  Sessions of this process pass their own lease (`lock.check`)."""
    picked = picked_host(request.config)
    if not picked.shared or "xen_host" not in request.fixturenames:
        yield
        return
    host = request.getfixturevalue("xen_host")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    lease = lock.acquire(
        host,
        owner=f"pytest {worker} (pid {os.getpid()} on {socket.gethostname()})"[:200],
        reason=request.node.nodeid[-200:],
        ttl=WORKER_LEASE_TTL,
        wait=float(request.config.getoption("xenpvh_wait_host")),
        on_wait=lambda holder: log.info("waiting for host %s: %s", host.name, holder.describe()),
    )
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # an expired or force-released lease is gone
            lock.release(host, lease)


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


@dataclass
class BootResult:
    """What `boot_guest(...)` returns: the session's verdict and its artifacts directory."""

    verdict: Verdict
    artifacts: Path


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80]


@pytest.fixture
def boot_guest(
    request: pytest.FixtureRequest,
    xen_host: Any,
    tmp_path: Path,
    record_testsuite_property: Callable[[str, object], None],
) -> Callable[..., BootResult]:
    """A function that boots one profile point on the session's host through a
    `xenpvh.run.session.Session` and returns a `BootResult` (verdict + artifacts dir).

    `vcpus`, `memory` (MiB), `disks` and `vifs` (a count, or DiskSpec/VifSpec tuples) and
    `cmdline_append` change the profile's point; None keeps the profile's.  Each boot's
    stages are attached to the test's report (`user_properties` and a "xenpvh" section of
    its output), which works with every `junit_family`."""
    opt = request.config.getoption
    base = opt("xenpvh_artifacts")
    counter = iter(range(1000))

    def boot(
        profile: str,
        *,
        vcpus: int | None = None,
        memory: int | None = None,
        disks: int | tuple[DiskSpec, ...] | None = None,
        vifs: int | tuple[VifSpec, ...] | None = None,
        cmdline_append: str = "",
        kernel: str | None = None,
        ramdisk: str | None = None,
        toolstack: str = "xl",
        attempts: int | None = None,
    ) -> BootResult:
        n = next(counter)
        if base:
            artifacts = Path(base) / f"{_safe(request.node.name)}-{n}"
        else:
            artifacts = tmp_path / f"run-{n}"
        req = BootRequest(
            profile=profile,
            vcpus=vcpus,
            memory_mb=memory,
            disks=disks,
            vifs=vifs,
            kernel=kernel,
            ramdisk=ramdisk,
            cmdline_append=cmdline_append,
            toolstack=toolstack,
            attempts=attempts if attempts is not None else opt("xenpvh_attempts"),
            artifacts=artifacts,
        )
        result = Session(req, host=xen_host).run()
        _attach(request.node, result.verdict, result.artifacts, n, record_testsuite_property)
        return BootResult(result.verdict, result.artifacts)

    return boot


def _attach(
    item: pytest.Item,
    verdict: Verdict,
    artifacts: Path,
    n: int,
    record_suite: Callable[[str, object], None] | None = None,
) -> None:
    """A boot's verdict and stages into the JUnit file the CI server reads, valid in every
    junit_family: xunit2 (pytest's default, the schema Jenkins and GitLab read) has no
    testcase properties, so there they become testsuite properties named after the test
    (`record_testsuite_property`); xunit1 gets testcase properties (`user_properties`).
    Never `record_property`, which pytest refuses under xunit2.  A report section carries
    the same lines to the terminal and, with junit_logging, to system-out."""
    prefix = f"xenpvh.{n}." if n else "xenpvh."
    props = [
        (f"{prefix}verdict", str(verdict.verdict)),
        (f"{prefix}attempts", str(len(verdict.meta.get("attempts") or [None]))),  # type: ignore[arg-type]
        (f"{prefix}artifacts", str(artifacts)),
    ]
    lines = [f"verdict {verdict.verdict}: {verdict.reason}", f"artifacts {artifacts}"]
    for s in verdict.stages:
        t = "" if s.t is None else f" t={s.t:.2f}s"
        props.append((f"{prefix}stage.{s.name}", f"{s.status}{t}"))
        lines.append(f"{s.name:<12} {s.status}{t}")
    if item.config.getini("junit_family") == "xunit2":
        if record_suite is not None:
            for name, value in props:
                record_suite(f"{item.nodeid}::{name}", value)
    else:
        item.user_properties.extend(props)
    item.add_report_section("call", f"xenpvh boot {n}", "\n".join(lines))
