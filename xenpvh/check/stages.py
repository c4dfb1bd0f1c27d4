"""Stage tracking: which stages completed, when, on which line, and the one in progress.

A stage *completes* only when its own requirements are met and the previous stage has
completed; its time is the later of the two.  The stage in progress is the first incomplete
one.  Devices the profile proves by XenStore ("xenstore" evidence) hold a stage back only in
a live run (`xenstore_proof`) or with `strict_devices`; offline they are `unverified on the
console` and reported in the stage detail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from xenpvh.check.decide_console import StageFact
from xenpvh.profile.model import EVIDENCE_XENSTORE, StageSpec

SET_MAX = 4096  # AP ids / device names remembered per stage (hostile consoles)


class EventKind(StrEnum):
    STARTED = "started"  # the stage is now the one in progress
    MATCHED = "matched"  # a line matched one of the stage's patterns
    PASSED = "passed"  # the stage completed
    FAILED = "failed"  # the stage failed: forbidden line, mismatch, deadline, console end
    NOTICE = "notice"  # a notice line (recorded, decides nothing); `detail` names the pattern


@dataclass(frozen=True)
class StageEvent:
    """One step of the live checklist; `t` is seconds from the first console byte."""

    kind: EventKind
    stage: str
    t: float | None
    line: str = ""
    detail: str = ""


@dataclass
class StageState:
    spec: StageSpec
    seen_required: set[int] = field(default_factory=set)  # slots of spec.required seen
    aps: set[int] = field(default_factory=set)
    cpu_count: int | None = None
    disks: set[str] = field(default_factory=set)
    vifs: set[str] = field(default_factory=set)
    proven: dict[str, tuple[str, ...]] = field(default_factory=dict)  # kind -> XenStore ids
    own_t: float | None = None  # when its own requirements were last advanced
    own_line: str = ""
    own_line_no: int | None = None  # console line number of own_line (1-based)
    complete: bool = False
    t: float | None = None
    evidence: str = ""
    line_no: int | None = None  # console line number of evidence

    def advanced(self, t: float | None, line: str, line_no: int | None) -> None:
        """Its own requirements advanced on `line`."""
        self.own_t, self.own_line, self.own_line_no = t, line, line_no


class StageTracker:
    """The stages of one profile point (vcpus, disks, vifs) and their completion."""

    def __init__(
        self,
        specs: tuple[StageSpec, ...] | list[StageSpec],
        *,
        vcpus: int,
        disks: int,
        vifs: int,
        xenstore_proof: bool,
        strict_devices: bool,
    ) -> None:
        self.stages = [StageState(s) for s in specs]
        self.vcpus = vcpus
        self.n_disks = disks
        self.n_vifs = vifs
        self.xenstore_proof = xenstore_proof
        self.strict_devices = strict_devices
        # The run's latest XenStore reading of devices not yet Connected (for the detail).
        self.xenstore_problem = ""
        self.current = -1  # index of the stage in progress (set by advance)

    def __len__(self) -> int:
        return len(self.stages)

    def name(self, i: int | None = None) -> str:
        """The name of stage `i` (default: the one in progress; the last once all passed)."""
        i = self.current if i is None else i
        return self.stages[min(i, len(self.stages) - 1)].spec.name

    # ------------------------------------------------------------------- devices

    def unverified(self, st: StageState) -> list[tuple[str, int]]:
        """(kind, expected count) of the stage's "xenstore" kinds not proven by XenStore."""
        out = []
        for kind, want in (("disk", self.n_disks), ("vif", self.n_vifs)):
            xenstore = getattr(st.spec, f"{kind}_evidence") == EVIDENCE_XENSTORE
            if want and xenstore and kind not in st.proven:
                out.append((kind, want))
        return out

    def devices_waived(self) -> bool:
        """Unproven "xenstore" devices do not hold a stage back: offline and not strict."""
        return not self.xenstore_proof and not self.strict_devices

    def unverified_only(self, i: int) -> str:
        """Offline and strict: the stage's only unmet requirement is devices the console
        cannot show.  Returns their description ("" otherwise)."""
        if i >= len(self.stages) or self.xenstore_proof or not self.strict_devices:
            return ""
        st = self.stages[i]
        pending = self.unverified(st)
        if not pending or not self.own_complete(st, ignore_unverified=True):
            return ""
        return "; ".join(f"{n} {kind}(s) unverified on the console" for kind, n in pending)

    def prove(self, kind: str, ids: tuple[str, ...], t: float | None) -> bool:
        """XenStore saw every expected device of `kind` Connected; True if a stage used it."""
        used = False
        for st in self.stages:
            if getattr(st.spec, f"{kind}_evidence") == EVIDENCE_XENSTORE and kind not in st.proven:
                st.proven[kind] = ids
                if not st.complete:
                    st.own_t = t if st.own_t is None or t is None else max(st.own_t, t)
                used = True
        return used

    def awaiting_xenstore(self, i: int) -> bool:
        """Stage `i` only waits for devices XenStore must prove."""
        st = self.stages[i]
        return bool(self.unverified(st)) and self.own_complete(st, ignore_unverified=True)

    # ------------------------------------------------------------------- completion

    def own_complete(self, st: StageState, *, ignore_unverified: bool = False) -> bool:
        s = st.spec
        if len(st.seen_required) < len(s.required):
            return False
        if s.ap_ids and st.aps != set(range(1, self.vcpus)):
            return False
        if s.cpu_count_completes and st.cpu_count != self.vcpus:
            return False
        if s.disk_devices and len(st.disks) < self.n_disks:
            return False
        if s.vif_devices and len(st.vifs) < self.n_vifs:
            return False
        return ignore_unverified or self.devices_waived() or not self.unverified(st)

    def advance(self, t: float | None, live: bool) -> list[StageEvent]:
        """Complete stages in order while their requirements hold; return the events."""
        events: list[StageEvent] = []
        prev_t: float | None = None
        i = 0
        while i < len(self.stages):
            st = self.stages[i]
            if not st.complete:
                if not self.own_complete(st):
                    break
                st.complete = True
                times = [x for x in (prev_t, st.own_t) if x is not None]
                st.t = max(times) if times else (t if live else None)
                st.evidence = st.own_line
                st.line_no = st.own_line_no
                events.append(StageEvent(EventKind.PASSED, st.spec.name, st.t, st.evidence))
            prev_t = st.t
            i += 1
        if i != self.current:
            self.current = i
            if i < len(self.stages):
                events.append(StageEvent(EventKind.STARTED, self.name(), prev_t))
        return events

    @property
    def all_complete(self) -> bool:
        return self.current >= len(self.stages)

    # ------------------------------------------------------------------- details

    def detail(self, i: int) -> str:
        """What stage `i` saw against what it expected (a failed stage's detail)."""
        st = self.stages[i]
        s = st.spec
        parts: list[str] = []
        missing = [p.name for j, p in enumerate(s.required) if j not in st.seen_required]
        if missing:
            parts.append("missing " + ", ".join(repr(m) for m in missing))
        if s.ap_ids:
            want = set(range(1, self.vcpus))
            parts.append(f"APs seen {fmt_set(st.aps)}, expected {fmt_set(want)}")
        if s.cpu_count:
            seen = "none" if st.cpu_count is None else str(st.cpu_count)
            parts.append(f"CPU count seen {seen}, expected {self.vcpus}")
        if s.disk_devices:
            parts.append(f"disks seen {fmt_set(st.disks)}, expected {self.n_disks}")
        if s.vif_devices:
            parts.append(f"vifs seen {fmt_set(st.vifs)}, expected {self.n_vifs}")
        parts += self.device_proof_detail(st)
        return "; ".join(parts)

    def device_proof_detail(self, st: StageState) -> list[str]:
        parts = []
        for kind, want in (("disk", self.n_disks), ("vif", self.n_vifs)):
            if not want or getattr(st.spec, f"{kind}_evidence") != EVIDENCE_XENSTORE:
                continue
            if kind in st.proven:
                ids = ",".join(st.proven[kind])
                parts.append(f"{kind}s: {want} Connected in XenStore ({ids})")
            elif self.xenstore_proof:
                seen = f": {self.xenstore_problem}" if self.xenstore_problem else ""
                parts.append(f"{kind}s: {want} expected, not yet Connected in XenStore{seen}")
            else:
                strict = " (strict devices)" if self.strict_devices else ""
                parts.append(
                    f"{kind}s: {want} unverified on the console{strict} (the kernel prints no "
                    f"line per {kind}; a live run proves them in XenStore)"
                )
        return parts

    def facts(self) -> tuple[StageFact, ...]:
        return tuple(
            StageFact(
                st.spec.name,
                st.complete,
                st.t,
                st.evidence,
                st.line_no,
                "; ".join(self.device_proof_detail(st)) if st.complete else "",
            )
            for st in self.stages
        )


def fmt_set(s: set[int] | set[str]) -> str:
    return "{" + ",".join(str(x) for x in sorted(s)) + "}" if s else "{}"  # type: ignore[type-var]


__all__ = ["SET_MAX", "EventKind", "StageEvent", "StageState", "StageTracker", "fmt_set"]
