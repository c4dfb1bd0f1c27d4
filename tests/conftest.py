"""The project's own test tiers.

`slow`: a live test too costly for CI's 90 minutes on a 2-core machine (the nightly tier):
the ansible lab-box VM (debootstrap, two provisioning runs and a GRUB -> Xen boot, all under
TCG: 27 min measured on 2026-12-02), Debian guest variants (GRUB, 1 disk at 1 and 4 vCPUs,
2 disks at 2 vCPUs: 5-8 min a boot; CI boots it at 1 vCPU with 2 disks and 2 vifs, and with a
wrong root), the live plan run with its bisection (7-11 min), and
variants of what a CI test already proves (a cold nested boot, other vCPU counts, a second
point of the same fault; 1-2.5 min each -- together ~14 min of CI on 2026-12-03, when a
loaded CI run took 1.6x longer than a quiet one).  The README's test command runs everything
else; `--slow` runs these as well.  A slow test is deselected, never skipped: the summary
names it with the option that runs it, and `--xen-required` still fails any skip.

Shared fixtures: `host`, a fake Xen host (`test_toolstack_fakes.FakeXenHost`, or the class a
module's own `fake_host_class` fixture names) with a fast console, closed after the test.
Shared helpers live in `fakes.py`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_toolstack_fakes import FakeXenHost

_DESELECTED = pytest.StashKey[list[str]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--slow",
        action="store_true",
        default=False,
        help="also run the `slow` live tests (the nightly tier; each costs 20+ min here)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: a live test of 20+ minutes on 2 cores; deselected unless --slow"
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("slow"):
        return
    slow = [i for i in items if i.get_closest_marker("slow") is not None]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [i for i in items if i.get_closest_marker("slow") is None]
        config.stash[_DESELECTED] = [i.nodeid for i in slow]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for nodeid in terminalreporter.config.stash.get(_DESELECTED, []):
        terminalreporter.write_line(f"slow tier, not run (run it with --slow): {nodeid}")


@pytest.fixture
def fake_host_class() -> type[FakeXenHost]:
    """The fake Xen host `host` makes; a module overrides this fixture for a subclass."""
    return FakeXenHost


@pytest.fixture
def host(fake_host_class: type[FakeXenHost]) -> Iterator[FakeXenHost]:
    """A fake Xen host whose `xl console` prints a line every 10 ms."""
    h = fake_host_class()
    h.console_delay = 0.01
    yield h
    h.close()
