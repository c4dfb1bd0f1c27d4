"""Inputs of live tests that are the user's, never the project's: a FreeBSD kernel built from
the user's tree (`xenpvh build freebsd`), XTF test binaries built from the user's checkout
(`xenpvh build xtf`).

Where one is absent, the live test skips with exactly the reason here, and `--xen-required`
(xenpvh.pytest_plugin) tolerates exactly these skips, naming them; any other skip of a live
test still fails the run.
"""

from __future__ import annotations

import os
from pathlib import Path

FREEBSD_KERNEL_ENV = "XENPVH_FREEBSD_KERNEL"
XTF_DIR_ENV = "XENPVH_XTF_DIR"

NO_FREEBSD_KERNEL = (
    f"no FreeBSD kernel: set {FREEBSD_KERNEL_ENV}=PATH or build one with "
    "`xenpvh build freebsd --tree PATH`"
)
NO_XTF = (
    f"no XTF test binaries: set {XTF_DIR_ENV} to a built xtf tree or build them with "
    "`xenpvh build xtf --tree PATH`"
)
# The skips `--xen-required` tolerates: the user's inputs, absent on this machine.
TOLERATED_SKIPS: tuple[str, ...] = (NO_FREEBSD_KERNEL, NO_XTF)


def freebsd_kernel() -> Path | None:
    """`$XENPVH_FREEBSD_KERNEL`, else the newest FreeBSD kernel in the build cache."""
    given = os.environ.get(FREEBSD_KERNEL_ENV)
    if given:
        return Path(given)
    from xenpvh.build.freebsd import newest_cached_kernel

    return newest_cached_kernel()


def xtf_test(name: str) -> Path | None:
    """The XTF test binary `name` (e.g. `test-hvm64-example`) under `$XENPVH_XTF_DIR` (in
    that directory itself, or in a built tree's tests/<test>/ directories), else in the
    newest XTF build of the cache."""
    root = os.environ.get(XTF_DIR_ENV)
    if not root:
        from xenpvh.build.xtf import newest_cached_test

        return newest_cached_test(name)
    base = Path(root)
    for candidate in (base / name, *sorted(base.glob(f"tests/*/{name}"))):
        if candidate.is_file():
            return candidate
    return None


__all__ = [
    "FREEBSD_KERNEL_ENV",
    "NO_FREEBSD_KERNEL",
    "NO_XTF",
    "TOLERATED_SKIPS",
    "XTF_DIR_ENV",
    "freebsd_kernel",
    "xtf_test",
]
