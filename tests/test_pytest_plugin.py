"""The pytest plugin in projects of its own (pytester): options that coexist with a
project's conftest.py, markers declared once."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

# A test that prints what each option reached.
PROBE = """
def test_probe(request):
    opt = request.config.getoption
    print("XENPVH_HOST=" + str(opt("xenpvh_host")))
    print("XENPVH_IDENTITY=" + str(opt("xenpvh_identity")))
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
from xenpvh.live_inputs import NO_FREEBSD_KERNEL

@pytest.mark.xen
def test_user_input_absent():
    pytest.skip(NO_FREEBSD_KERNEL)

@pytest.mark.xen
def test_other_skip():
    pytest.skip("nested host unavailable")
"""


def test_xen_required_tolerates_only_the_users_absent_inputs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SKIPS)
    result = pytester.runpytest("--xen-required")
    result.assert_outcomes(skipped=1, failed=1)
    out = result.stdout.str()
    assert "--xen-required tolerated a skip: test_xen_required_tolerates" in out
    assert "no FreeBSD kernel" in out
    assert "live `xen` test skipped but --xen-required is set: Skipped: nested host" in out
    # Without --xen-required both are plain skips.
    pytester.runpytest().assert_outcomes(skipped=2)
