"""The layers and the import rules of pyproject.toml's [tool.importlinter] hold.

The contracts (which package may import which, no import cycle at any depth, rich and
argparse only in the front ends) are checked by import-linter's own `lint-imports`, from the
venv this test runs in, so the README's test command keeps the shape from drifting.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_imports(*args: str) -> subprocess.CompletedProcess[str]:
    if not LINT_IMPORTS.is_file():
        pytest.fail(f"{LINT_IMPORTS} is missing: install the dev extra (pip install -e .[dev])")
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_import_contracts_are_kept() -> None:
    proc = _lint_imports()
    assert proc.returncode == 0, f"lint-imports failed:\n{proc.stdout}\n{proc.stderr}"


def test_the_contracts_are_the_ones_written_down() -> None:
    """A contract dropped from pyproject.toml (or a config lint-imports does not read) would
    let the first test pass on nothing."""
    out = _lint_imports().stdout
    for name in (
        "layers (top to bottom)",
        "no import cycle between sibling packages or modules",
        "rich and argparse only in xenpvh.cli and xenpvh.pytest_plugin",
    ):
        assert name in out, out
