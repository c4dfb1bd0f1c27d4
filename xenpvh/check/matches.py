"""A matched stage line counted on its stage: required lines, AP ids, CPU count, devices.

`record` advances the stage's own requirements and reports a mismatch the line proves (an
AP id outside the domain's vCPUs, a CPU count other than asked for, more devices than
configured) as a `StageFailure`.  AP ids and CPU counts are checked even after their stage
completed: a late "Launching APs: 5" on a 2-vCPU guest is still a guest that saw CPUs it was
not given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from xenpvh.check.decide_console import StageFailure
from xenpvh.check.rules import Role, Rule
from xenpvh.check.stages import SET_MAX, StageTracker


@dataclass(frozen=True)
class Recorded:
    """What one matched line did to its stage."""

    progress: bool  # the stage's own requirements advanced
    failure: StageFailure | None = None


_NOTHING = Recorded(False)


def record(
    tracker: StageTracker,
    rule: Rule,
    m: re.Match[str],
    ev_line: str,
    t: float | None,
    line_no: int | None,
) -> Recorded:
    """Count `ev_line` (matched by `rule` as `m`) on the rule's stage."""
    st = tracker.stages[rule.stage]
    name = st.spec.name
    vcpus = tracker.vcpus

    def fail(reason: str, detail: str) -> Recorded:
        return Recorded(False, StageFailure(rule.stage, reason, t, ev_line, detail, line_no))

    if rule.role is Role.REQUIRED:
        if rule.slot in st.seen_required:
            return _NOTHING
        st.seen_required.add(rule.slot)
        st.advanced(t, ev_line, line_no)
        return Recorded(True)
    if rule.role is Role.AP_IDS:
        progress = False
        for ap in (int(x) for x in m.group("ids").split() if x.isdigit()):
            if ap >= vcpus or ap < 1:
                return fail(
                    f"{name}: AP id {ap} outside 1..{vcpus - 1} for {vcpus} vCPUs",
                    tracker.detail(rule.stage),
                )
            if ap not in st.aps and len(st.aps) < SET_MAX:
                st.aps.add(ap)
                st.advanced(t, ev_line, line_no)
                progress = True
        return Recorded(progress)
    if rule.role is Role.CPU_COUNT:
        n = int(m.group("n"))
        if n != vcpus:
            return fail(
                f"{name}: guest reports {n} CPUs, expected {vcpus}",
                f"expected {vcpus} CPUs, guest reports {n}",
            )
        if st.cpu_count is None:
            st.cpu_count = n
            st.advanced(t, ev_line, line_no)
            return Recorded(True)
        return _NOTHING
    if rule.role in (Role.DISK, Role.VIF):
        disk = rule.role is Role.DISK
        seen, want = (st.disks, tracker.n_disks) if disk else (st.vifs, tracker.n_vifs)
        dev = m.group("dev")
        if dev in seen or len(seen) >= SET_MAX:
            return _NOTHING
        seen.add(dev)
        st.advanced(t, ev_line, line_no)
        if len(seen) > want:
            kind = "disk" if disk else "vif"
            return fail(
                f"{name}: {len(seen)} {kind} devices seen, expected {want}",
                tracker.detail(rule.stage),
            )
        return Recorded(True)
    return _NOTHING  # OPTIONAL: matched (an event), counts for nothing


__all__ = ["Recorded", "record"]
