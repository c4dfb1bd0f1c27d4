"""The `hypervisor` stage: does the host run the Xen we built?

Checked on the hypervisor's own console text (`xl dmesg`, which survives a warm start where
the serial log of the resumed machine does not hold the boot banner) plus `xl info`.  Pure:
text in, a StageResult out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from xenpvh.check.verdict import StageResult, StageStatus

HYPERVISOR_STAGE = "hypervisor"
_MAX_LINE = 4096


@dataclass(frozen=True)
class HostExpectation:
    """What the host console must show: the Xen version and literal lines (patch markers)."""

    xen_version: str | None = None
    lines: tuple[str, ...] = ()


def _strip_prefix(line: str) -> str:
    line = line[:_MAX_LINE]
    return re.sub(r"^\(XEN\)\s*(\[[^\]]*\]\s*)?", "", line)


def check_hypervisor(console: str, xl_version: str | None, exp: HostExpectation) -> StageResult:
    """Every expected line must appear on the console, and `xl info` must report the version."""
    lines = [_strip_prefix(raw) for raw in console.splitlines()]
    evidence: list[str] = []
    missing: list[str] = []
    if exp.xen_version:
        banner = re.compile(r"Xen version " + re.escape(exp.xen_version))
        hit = next((ln for ln in lines if banner.search(ln)), None)
        if hit is None:
            missing.append(f"banner 'Xen version {exp.xen_version}'")
        else:
            evidence.append(hit)
        if xl_version is None or not (
            xl_version.startswith(exp.xen_version) or exp.xen_version.startswith(xl_version)
        ):
            missing.append(f"xl info xen_version {xl_version!r} (expected {exp.xen_version!r})")
    for want in exp.lines:
        hit = next((ln for ln in lines if want in ln), None)
        if hit is None:
            missing.append(repr(want))
        else:
            evidence.append(hit)
    if missing:
        return StageResult(
            HYPERVISOR_STAGE,
            StageStatus.FAILED,
            None,
            evidence[0] if evidence else "",
            "missing on the hypervisor console: " + ", ".join(missing),
        )
    return StageResult(HYPERVISOR_STAGE, StageStatus.PASSED, None, " | ".join(evidence)[:512])


def read_expect_file(text: str) -> tuple[str, ...]:
    """`expect-console` beside a patch series: one literal line a line, `#` comments."""
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return tuple(out)
