"""The pytest plugin in projects of its own (pytester): `--xenpvh-` options with their old
names as aliases, ini settings under the command line, options that coexist with a project's
conftest.py, markers declared once, a host per xdist worker (leased when shared), the leak
check blaming a test only for what it started, and `boot_guest`'s point options."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenpvh.pytest_settings import WorkerHost, pick_host

pytest_plugins = ["pytester"]

# A test that prints what each option reached.
PROBE = """
def test_probe(request):
    opt = request.config.getoption
    for name in ("host", "identity", "inventory", "known_hosts", "artifacts", "attempts",
                 "qemu", "wait_host"):
        print(f"XENPVH_{name.upper()}=" + repr(opt(f"xenpvh_{name}")).strip("'"))
    if hasattr(request.config.option, "project_host"):
        print("PROJECT_HOST=" + str(opt("project_host")))
"""

# A project whose own conftest.py defines --host (and --identity, as a flag).
OWN_HOST = """
def pytest_addoption(parser):
    parser.addoption("--host", dest="project_host", default="project-default")
    parser.addoption("--identity", action="store_true", dest="project_identity")
"""


def _lines(result: pytest.RunResult, prefix: str) -> list[str]:
    """The output lines that start with `prefix`, also where `-s` output follows a test id."""
    return [line[line.index(prefix) :] for line in result.outlines if prefix in line]


def test_project_conftest_keeps_its_host_option(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(OWN_HOST)
    pytester.makepyfile(PROBE)
    result = pytester.runpytest("-s")
    result.assert_outcomes(passed=1)
    assert _lines(result, "PROJECT_HOST=") == ["PROJECT_HOST=project-default"]
    assert _lines(result, "XENPVH_HOST=") == ["XENPVH_HOST=nested"]
    # Told once where xenpvh's options went.
    told = [line for line in result.outlines if "belong to another plugin" in line]
    assert told == [
        "xenpvh: --host, --identity belong to another plugin or conftest.py here; "
        "xenpvh's are --xenpvh-host, --xenpvh-identity"
    ]


def test_xenpvh_host_reaches_the_plugin_beside_a_project_host(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(OWN_HOST)
    pytester.makepyfile(PROBE)
    result = pytester.runpytest(
        "-s", "--host", "theirs", "--xenpvh-host", "root@lab1", "--xenpvh-identity", "/k"
    )
    result.assert_outcomes(passed=1)
    assert _lines(result, "PROJECT_HOST=") == ["PROJECT_HOST=theirs"]
    assert _lines(result, "XENPVH_HOST=") == ["XENPVH_HOST=root@lab1"]
    assert _lines(result, "XENPVH_IDENTITY=") == ["XENPVH_IDENTITY=/k"]


def test_short_names_are_offered_when_free(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PROBE)
    result = pytester.runpytest("-s", "--host", "lab2", "--identity=/id")
    result.assert_outcomes(passed=1)
    assert _lines(result, "XENPVH_HOST=") == ["XENPVH_HOST=lab2"]
    assert _lines(result, "XENPVH_IDENTITY=") == ["XENPVH_IDENTITY=/id"]
    assert not [line for line in result.outlines if "belong to another plugin" in line]
    result = pytester.runpytest("-s", "--xenpvh-host", "lab3")
    assert _lines(result, "XENPVH_HOST=") == ["XENPVH_HOST=lab3"]


@pytest.mark.parametrize("declared", [False, True], ids=["undeclared", "declared-in-ini"])
def test_markers_listed_once(pytester: pytest.Pytester, declared: bool) -> None:
    if declared:
        pytester.makeini(
            "[pytest]\nmarkers =\n    xen: the project's own words\n    host(name): a host\n"
        )
    result = pytester.runpytest("--markers")
    assert result.ret == 0
    for name in ("xen", "host"):
        assert len(_lines(result, f"@pytest.mark.{name}")) == 1, result.outlines
    if declared:
        assert _lines(result, "@pytest.mark.xen") == ["@pytest.mark.xen: the project's own words"]


def test_undeclared_markers_are_usable_strictly(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        "import pytest\n\n@pytest.mark.xen\n@pytest.mark.host\ndef test_live():\n    pass\n"
    )
    pytester.runpytest("--strict-markers", "--no-xen").assert_outcomes(deselected=1)


ATTACHING = """
from pathlib import Path

from xenpvh.check.verdict import StageResult, StageStatus, Verdict, VerdictValue
from xenpvh.pytest_plugin import _attach


def test_boot(request, record_testsuite_property):
    v = Verdict(
        VerdictValue.PASS,
        "all stages passed",
        stages=[StageResult("early-init", StageStatus.PASSED, 0.1, "Booting")],
    )
    _attach(request.node, v, Path("/tmp/art"), 0, record_testsuite_property)
"""


@pytest.mark.parametrize("family", ["xunit2", "xunit1"])
def test_boot_results_reach_junit_in_every_family(pytester: pytest.Pytester, family: str) -> None:
    """The plugin records a boot's stages without record_property (which pytest refuses
    under xunit2): no warning, and the stages reach the JUnit file; under xunit2 that file
    validates against the JUnit schema Jenkins and GitLab consume."""
    import xml.etree.ElementTree as ET

    import xmlschema

    pytester.makepyfile(ATTACHING)
    out = pytester.path / "junit.xml"
    result = pytester.runpytest(f"--junitxml={out}", "-o", f"junit_family={family}")
    result.assert_outcomes(passed=1)
    assert "record_property" not in result.stdout.str()
    assert "warning" not in result.stdout.str().lower()
    text = out.read_text()
    assert "early-init" in text and "xenpvh" in text
    if family == "xunit2":
        schema = xmlschema.XMLSchema(Path(__file__).parent / "schemas" / "junit-10.xsd")
        root = ET.fromstring(text)
        suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
        for suite in suites:
            schema.validate(ET.tostring(suite, encoding="unicode"))


SKIPS = """
import pytest
from xenpvh.run.guest_inputs import NO_FREEBSD_KERNEL

@pytest.mark.xen
def test_user_input_absent():
    pytest.skip(NO_FREEBSD_KERNEL)

@pytest.mark.xen
def test_other_skip():
    pytest.skip("nested host unavailable")
"""


def test_xen_required_tolerates_only_the_users_absent_inputs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SKIPS)
    for option in ("--xenpvh-xen-required", "--xen-required"):  # the old name: an alias
        result = pytester.runpytest(option)
        result.assert_outcomes(skipped=1, failed=1)
        out = result.stdout.str()
        assert "--xenpvh-xen-required tolerated a skip: test_xen_required_tolerates" in out
        assert "no FreeBSD kernel" in out
        assert "skipped but --xenpvh-xen-required is set: Skipped: nested host" in out
    # Without --xen-required both are plain skips.
    pytester.runpytest().assert_outcomes(skipped=2)


# -- option names: every one `--xenpvh-`, the old ones aliases ---------------------------------


def test_every_option_is_xenpvh_prefixed_and_names_its_aliases(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfig()
    options = config._parser.getgroup("xenpvh").options
    assert len(options) >= 13
    for option in options:
        first, *aliases = option.names()
        help_text = option.attrs()["help"]
        if help_text.startswith("alias of --xenpvh-"):  # a short name offered where free
            assert first == help_text.removeprefix("alias of ").replace("xenpvh-", "", 1)
            continue
        assert first.startswith("--xenpvh-"), option.names()
        for alias in aliases:
            assert f"alias {alias}" in help_text, (alias, help_text)
    names = {n for o in options for n in o.names()}
    assert {"--no-xen", "--xen-required", "--host"} <= names  # the README's and CI's names


def test_no_xen_and_its_alias_deselect_live_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        "import pytest\n\n@pytest.mark.xen\ndef test_live():\n    pass\n\ndef test_unit():\n"
        "    pass\n"
    )
    for option in ("--xenpvh-no-xen", "--no-xen"):
        pytester.runpytest(option).assert_outcomes(passed=1, deselected=1)


# -- ini settings, under the command line ------------------------------------------------------

INI_VALUES = {
    "xenpvh_host": "lab-ini",
    "xenpvh_identity": "keys/id",
    "xenpvh_inventory": "lab.toml",
    "xenpvh_known_hosts": "keys/known_hosts",
    "xenpvh_artifacts": "art",
    "xenpvh_attempts": "5",
    "xenpvh_qemu": "system",
    "xenpvh_wait_host": "7",
}


def _write_ini(pytester: pytest.Pytester, kind: str, values: dict[str, str]) -> None:
    if kind == "pytest.ini":
        pytester.makeini("[pytest]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()))
    else:
        body = "".join(f'{k} = "{v}"\n' for k, v in values.items())
        pytester.makepyprojecttoml("[tool.pytest.ini_options]\n" + body)


@pytest.mark.parametrize("kind", ["pytest.ini", "pyproject.toml"])
def test_ini_settings_reach_the_plugin_and_the_command_line_wins(
    pytester: pytest.Pytester, kind: str
) -> None:
    _write_ini(pytester, kind, INI_VALUES)
    pytester.makepyfile(PROBE)
    result = pytester.runpytest("-s")
    result.assert_outcomes(passed=1)
    here = pytester.path
    assert _lines(result, "XENPVH_HOST=") == ["XENPVH_HOST=lab-ini"]
    # Paths are relative to the ini file, as pytest's own `paths` settings are.
    assert _lines(result, "XENPVH_IDENTITY=") == [f"XENPVH_IDENTITY={here / 'keys/id'}"]
    assert _lines(result, "XENPVH_INVENTORY=") == [f"XENPVH_INVENTORY={here / 'lab.toml'}"]
    assert _lines(result, "XENPVH_KNOWN_HOSTS=") == [
        f"XENPVH_KNOWN_HOSTS={here / 'keys/known_hosts'}"
    ]
    assert _lines(result, "XENPVH_ARTIFACTS=") == [f"XENPVH_ARTIFACTS={here / 'art'}"]
    assert _lines(result, "XENPVH_ATTEMPTS=") == ["XENPVH_ATTEMPTS=5"]
    assert _lines(result, "XENPVH_QEMU=") == ["XENPVH_QEMU=system"]
    assert _lines(result, "XENPVH_WAIT_HOST=") == ["XENPVH_WAIT_HOST=7.0"]
    result = pytester.runpytest(
        "-s", "--xenpvh-host", "cli", "--identity", "/k", "--xenpvh-attempts", "2"
    )
    assert _lines(result, "XENPVH_HOST=") == ["XENPVH_HOST=cli"]
    assert _lines(result, "XENPVH_IDENTITY=") == ["XENPVH_IDENTITY=/k"]
    assert _lines(result, "XENPVH_ATTEMPTS=") == ["XENPVH_ATTEMPTS=2"]
    assert _lines(result, "XENPVH_QEMU=") == ["XENPVH_QEMU=system"]  # the ini's, still


def test_defaults_without_ini_or_options(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PROBE)
    result = pytester.runpytest("-s")
    assert _lines(result, "XENPVH_HOST=") == ["XENPVH_HOST=nested"]
    assert _lines(result, "XENPVH_ATTEMPTS=") == ["XENPVH_ATTEMPTS=3"]
    assert _lines(result, "XENPVH_QEMU=") == ["XENPVH_QEMU=patched"]
    assert _lines(result, "XENPVH_IDENTITY=") == ["XENPVH_IDENTITY=None"]


def test_a_bad_number_in_the_ini_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nxenpvh_attempts = many\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "xenpvh_attempts: 'many' is not a number" in result.stderr.str()


# -- a host per xdist worker ------------------------------------------------------------------

TESTS_DIR = Path(__file__).parent
WORKER_PROBE = """
import os
from pathlib import Path

import pytest

from xenpvh.pytest_plugin import picked_host


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    picked = picked_host(config)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    host = config.getoption("xenpvh_host")  # what `xen_host` opens
    Path(config.rootpath, f"{worker}.host").write_text(f"{host} {picked.shared}")
"""


def _picked(pytester: pytest.Pytester) -> dict[str, str]:
    return {p.stem: p.read_text() for p in sorted(pytester.path.glob("*.host"))}


@pytest.fixture
def outside_xdist(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pytester subprocess is a controller of its own, even when this suite itself runs
    under xdist (whose worker variables it would otherwise inherit)."""
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)


def test_each_xdist_worker_takes_host_n_mod_the_pools_size(
    pytester: pytest.Pytester, outside_xdist: None
) -> None:
    pytester.makeconftest(WORKER_PROBE)
    pytester.makepyfile("def test_a():\n    pass\n")
    pytester.runpytest_subprocess("-n", "3", "--xenpvh-hosts", "a,b").assert_outcomes(passed=1)
    # gw0 and gw2 share a: they take turns on its lease; gw1 has b to itself.
    assert _picked(pytester) == {
        "main": "a False",  # the controller runs no test
        "gw0": "a True",
        "gw1": "b False",
        "gw2": "a True",
    }


def test_workers_without_a_pool_share_the_one_host(
    pytester: pytest.Pytester, outside_xdist: None
) -> None:
    pytester.makeconftest(WORKER_PROBE)
    pytester.makeini("[pytest]\nxenpvh_host = box\n")
    pytester.makepyfile("def test_a():\n    pass\n")
    pytester.runpytest_subprocess("-n", "2").assert_outcomes(passed=1)
    assert _picked(pytester) == {"main": "box False", "gw0": "box True", "gw1": "box True"}


def test_pool_from_the_ini_file(pytester: pytest.Pytester, outside_xdist: None) -> None:
    pytester.makeconftest(WORKER_PROBE)
    pytester.makeini("[pytest]\nxenpvh_hosts = a b c\n")
    pytester.makepyfile("def test_a():\n    pass\n")
    pytester.runpytest_subprocess("-n", "2").assert_outcomes(passed=1)
    assert _picked(pytester) == {"main": "a False", "gw0": "a False", "gw1": "b False"}


FAKE_HOST = f"""
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, {str(TESTS_DIR)!r})
from fakes import LeakHost

from xenpvh.host import lock
from xenpvh.util.owner import Owner, current_owner, process_start, this_machine

LOG = Path(__file__).with_name("lease.log")


def acquire(host, *, owner, reason, ttl, wait, on_wait=None, **kw):
    with LOG.open("a") as f:
        f.write(f"acquire {{host.name}} {{reason}} wait={{wait}}\\n")
    return ("lease", reason)


def release(host, lease, **kw):
    with LOG.open("a") as f:
        f.write(f"release {{host.name}} {{lease[1]}}\\n")


lock.acquire = acquire
lock.release = release


def other_owner():
    pid = os.getppid()
    return Owner("other", this_machine(), pid, process_start(pid) or 0)


@pytest.fixture(scope="session")
def xen_host():
    host = LeakHost()
    host.start_run("20260101-000000-cccccc", other_owner())  # a guest kept by someone
    return host
"""

LIVE_TESTS = """
import pytest

from conftest import other_owner
from xenpvh.util.owner import current_owner


@pytest.mark.xen
def test_leaves_its_guest(xen_host):
    xen_host.start_run("mine", current_owner())


@pytest.mark.xen
def test_another_owner_starts_one_meanwhile(xen_host):
    xen_host.start_run("theirs", other_owner())


@pytest.mark.xen
def test_needs_no_host():
    pass
"""


def test_the_leak_check_blames_a_test_only_for_what_it_started(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(FAKE_HOST)
    pytester.makepyfile(LIVE_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaves_its_guest*",
            "*left behind by this test: on host leak-host: console log guest-xenpvh-mine.log;"
            " on host leak-host: domain xenpvh-mine; on host leak-host: run dir mine",
        ]
    )
    assert "xenpvh-theirs" not in result.stdout.str()
    assert "cccccc" not in result.stdout.str()
    assert not (pytester.path / "lease.log").exists()  # one process: no lease taken


def test_workers_sharing_a_host_lease_it_per_test(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(FAKE_HOST)
    pytester.makepyfile(
        "import pytest\n\n"
        + "".join(f"@pytest.mark.xen\ndef test_live_{n}(xen_host):\n    pass\n\n" for n in range(3))
        + "@pytest.mark.xen\ndef test_without_the_host():\n    pass\n"
    )
    result = pytester.runpytest_subprocess("-n", "2", "--xenpvh-wait-host", "9")
    result.assert_outcomes(passed=4)
    log = sorted((pytester.path / "lease.log").read_text().splitlines())
    nodeids = [f"test_workers_sharing_a_host_lease_it_per_test.py::test_live_{n}" for n in range(3)]
    assert log == sorted(
        [f"acquire leak-host {n} wait=9.0" for n in nodeids]
        + [f"release leak-host {n}" for n in nodeids]
    )


# -- boot_guest takes the point's options ------------------------------------------------------

BOOT_GUEST = """
from pathlib import Path

import pytest

import xenpvh.pytest_plugin as plugin
from xenpvh.check.verdict import Verdict, VerdictValue
from xenpvh.profile.domain import VifSpec
from xenpvh.run.session import SessionResult

REQUESTS = []


class FakeSession:
    def __init__(self, request, *, host):
        REQUESTS.append((request, host))

    def run(self):
        request = REQUESTS[-1][0]
        return SessionResult(Verdict(VerdictValue.PASS, "all stages passed"), request.artifacts)


@pytest.fixture(scope="session")
def xen_host():
    return "the-host"


def test_boot(boot_guest, monkeypatch, tmp_path):
    monkeypatch.setattr(plugin, "Session", FakeSession)
    result = boot_guest(
        "linux-pvh", vcpus=2, memory=512, disks=2, vifs=(VifSpec(),), cmdline_append="quiet"
    )
    assert result.verdict.verdict == VerdictValue.PASS
    request, host = REQUESTS[0]
    assert host == "the-host"
    assert (request.profile, request.vcpus, request.memory_mb) == ("linux-pvh", 2, 512)
    assert request.disks == 2 and request.vifs == (VifSpec(),)
    assert request.cmdline_append == "quiet" and request.attempts == 4
    assert result.artifacts == tmp_path / "run-0"
    boot_guest("linux-pvh")
    assert REQUESTS[1][0].disks is None and REQUESTS[1][0].vcpus is None  # the profile's
"""


def test_boot_guest_passes_the_points_options_to_the_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(BOOT_GUEST)
    pytester.runpytest("--xenpvh-attempts", "4").assert_outcomes(passed=1)


def test_pick_host() -> None:
    assert pick_host("box", (), None, 1) == WorkerHost("box", shared=False)
    assert pick_host("box", (), "gw1", 2) == WorkerHost("box", shared=True)
    assert pick_host("box", ("a", "b"), "gw3", 4) == WorkerHost("b", shared=True)
    assert pick_host("box", ("a", "b", "c"), "gw1", 2) == WorkerHost("b", shared=False)
    assert pick_host("box", ("a",), None, 1) == WorkerHost("a", shared=False)
