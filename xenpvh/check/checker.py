"""The streaming stage checker: console bytes in, stage events and one verdict out.

Model (see DESIGN.md): a profile's stages are in the OS's own boot order.  Patterns of
*every* stage are matched whenever they appear (consoles interleave), but a stage
*completes* only when its own requirements are met and the previous stage has completed; its
time is the later of the two.  The stage in progress is the first incomplete one; deadlines
blame it.

Blame is causal: a forbidden pattern that names a stage (`Pattern.stage`) fails that stage,
whether it is in progress, not reached yet, or already passed (a passed stage the guest then
failed in is failed).  A forbidden pattern without a stage fails the stage a `blame` pattern
names -- on the forbidden line itself or on one of the next `blame_lines` lines (a panic and
its backtrace) -- or else the stage in progress.  Every stage after the failed one is "not
reached"; so are earlier stages that had not completed.  While a failure waits for its blame
lines, nothing else is matched; the wait ends with the window, the console's end, or (live)
`BLAME_WAIT` seconds.

Devices: a stage's disks/vifs are proven by their console lines (`*_devices` patterns) or,
for a kind whose evidence is "xenstore", by `prove_devices()` (the live run's XenStore
check).  Without XenStore proof (`xenstore_proof=False`: an offline check) such devices are
`unverified on the console`: reported in the stage detail, not failed unless
`strict_devices`.  `notice` patterns are recorded (`meta.notices`) and never decide.

State machine: RUNNING --(all stages complete)--> PASS
               RUNNING --(forbidden line)--> BLAMING --(blame line | window end)--> FAIL
               RUNNING --(AP/CPU mismatch | deadline | finish())--> FAIL
Once decided, the checker ignores further input.

Memory is bounded: lines are capped (`lines.MAX_LINE`), evidence is capped
(`EVIDENCE_MAX`), AP ids and device names are bounded sets.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from os import PathLike
from pathlib import Path

from xenpvh.check.lines import LineSplitter, strip_prefix
from xenpvh.check.verdict import StageResult, StageStatus, Verdict, VerdictValue
from xenpvh.errors import BlockedError
from xenpvh.profile.model import EVIDENCE_XENSTORE, Pattern, Profile, StageSpec

EVIDENCE_MAX = 512  # characters of a console line kept as evidence
_SET_MAX = 4096  # AP ids / device names remembered per stage (hostile consoles)
_READ_CHUNK = 64 * 1024
_LOOKBACK = 32  # lines searched backwards for a timestamp (offline mode)
NOTICES_MAX = 64  # notices kept in the verdict (the count goes on)
BLAME_WAIT = 3.0  # live: seconds a forbidden line waits for its blame lines


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


# Which role a pattern plays; the checker dispatches on it per matching line.
class _Role(StrEnum):
    FORBIDDEN = "forbidden"
    REQUIRED = "required"
    OPTIONAL = "optional"
    AP_IDS = "ap_ids"
    CPU_COUNT = "cpu_count"
    DISK = "disk"
    VIF = "vif"
    BLAME = "blame"
    NOTICE = "notice"
    BLOCKED = "blocked"


@dataclass(frozen=True)
class _Rule:
    index: int  # stable order: forbidden, blame, notices, then stage by stage
    role: _Role
    stage: int  # index into the stages (forbidden/blame: the stage named, -1 for none)
    pattern: Pattern


@dataclass
class _StageState:
    spec: StageSpec
    seen_required: set[int] = field(default_factory=set)
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


@dataclass(frozen=True)
class _Failure:
    """What failed a stage: its index, time, console line (and that line's number)."""

    stage: int
    t: float | None
    line: str
    detail: str
    line_no: int | None


@dataclass
class _Blaming:
    """A forbidden line waiting (bounded) for the line that names its stage."""

    rule: _Rule
    line: str
    t: float | None
    line_no: int | None
    wall: float | None  # live: clock reading at the forbidden line


class StageChecker:
    """Decide one boot from its console, incrementally.

    `clock=None` is offline mode (`check_file`): no deadlines, and `t` comes from the
    lines' timestamp prefixes when they have them.
    """

    def __init__(
        self,
        profile: Profile,
        *,
        vcpus: int,
        disks: int,
        vifs: int,
        clock: Callable[[], float] | None = time.monotonic,
        xenstore_proof: bool = False,
        strict_devices: bool = False,
    ) -> None:
        if isinstance(vcpus, bool) or not isinstance(vcpus, int) or vcpus < 1:
            raise BlockedError(f"vcpus must be an integer >= 1, got {vcpus!r}")
        for what, n in (("disks", disks), ("vifs", vifs)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise BlockedError(f"{what} must be an integer >= 0, got {n!r}")
        self.profile = profile
        self.vcpus = vcpus
        self.n_disks = disks
        self.n_vifs = vifs
        # A live run reports XenStore proof (`prove_devices`); offline, "xenstore" devices
        # are unverified on the console, which fails only with `strict_devices`.
        self.xenstore_proof = xenstore_proof
        self.strict_devices = strict_devices
        # The run's latest XenStore reading of devices not yet Connected (for the detail).
        self.xenstore_problem = ""
        self._clock = clock
        self._start = clock() if clock is not None else 0.0
        self._first_byte: float | None = None
        self._tick: float | None = None  # live: seconds from the first byte at this feed
        self._stamp_origin: float | None = None
        self._last_stamp: float | None = None  # offline: latest timestamp prefix seen
        self._where: tuple[str, int] | None = None  # (block, line start) being applied
        # Line numbers as in console.log: complete lines consumed so far, and the number of
        # the line being applied (the splitter ends lines at CR, LF and CRLF alike).
        self._lines_done = 0
        self._line_no: int | None = None
        self._splitter = LineSplitter()
        self._stages = [_StageState(s) for s in profile.stages]
        self._rules = self._build_rules()
        self._scan_rules = [r for r in self._rules if r.pattern.literals]
        self._line_rules = [r for r in self._rules if not r.pattern.literals]
        self._partial_done: set[int] = set()  # rules already applied to the current partial
        self._partial_len = 0
        self._partial_stages: set[int] = set()  # stages whose evidence is the partial line
        self._progress = False  # a stage's own requirements advanced since _advance ran
        self._current = -1  # index of the stage in progress (set by _advance)
        self._verdict: Verdict | None = None
        self._events: list[StageEvent] = []
        self._blaming: _Blaming | None = None
        self._notices: list[dict[str, object]] = []
        self._notice_count = 0
        self._advance(None)

    # ----------------------------------------------------------------------- public API

    @property
    def done(self) -> bool:
        return self._verdict is not None

    @property
    def verdict(self) -> Verdict:
        """The verdict once decided; before that, a provisional view (stages so far)."""
        if self._verdict is not None:
            return self._verdict
        stage = self._stage_name()
        return self._make_verdict(VerdictValue.FAIL, f"undecided: {stage} in progress", None)

    @property
    def stage_in_progress(self) -> str | None:
        return None if self._current >= len(self._stages) else self._stage_name()

    def feed(self, data: bytes) -> list[StageEvent]:
        """Consume console bytes (any split); return the events they caused."""
        if self.done or not data:
            return []
        if self._clock is not None:
            # One clock reading per feed: every line of this chunk arrived "now".
            now = self._clock()
            if self._first_byte is None:
                self._first_byte = now
            self._tick = round(now - self._first_byte, 6)
        block = self._splitter.feed(data)
        if block:
            self._scan_block(block)
            self._lines_done += block.count("\n")
            self._partial_done = set()
            self._partial_len = 0
            self._blame_window_check()
        if not self.done and self._blaming is None:
            self._scan_partial()
        return self._take_events()

    def prove_devices(self, kind: str, ids: Iterable[str]) -> list[StageEvent]:
        """The run's XenStore check saw every expected device of `kind` ("vbd"/"disk" or
        "vif") Connected (frontend and backend state 4): stages whose evidence for that kind
        is "xenstore" count them as proven."""
        kind = {"vbd": "disk"}.get(kind, kind)
        if kind not in ("disk", "vif"):
            raise ValueError(f"unknown device kind {kind!r}")
        if self.done:
            return []
        ids = tuple(sorted(str(x) for x in ids))[:_SET_MAX]
        t = self._now_live()
        for st in self._stages:
            if getattr(st.spec, f"{kind}_evidence") == EVIDENCE_XENSTORE and kind not in st.proven:
                st.proven[kind] = ids
                if not st.complete:
                    st.own_t = t if st.own_t is None or t is None else max(st.own_t, t)
                self._progress = True
        if self._progress and self._blaming is None:
            self._progress = False
            self._advance(t)
        return self._take_events()

    def awaiting_xenstore(self, stage: str) -> bool:
        """`stage` is in progress and only waits for devices XenStore must prove."""
        i = self._current
        if self.done or i >= len(self._stages) or self._stages[i].spec.name != stage:
            return False
        st = self._stages[i]
        return bool(self._unverified(st)) and self._own_complete(st, ignore_unverified=True)

    def _now_live(self) -> float | None:
        if self._clock is None or self._first_byte is None:
            return self._tick
        return round(self._clock() - self._first_byte, 6)

    def poll(self) -> list[StageEvent]:
        """Check the stage in progress against its deadline (live mode only)."""
        if self.done or self._clock is None:
            return []
        if self._blaming is not None:
            wall = self._blaming.wall
            if wall is None or self._clock() - wall >= BLAME_WAIT:
                self._settle_blame(None)
            return self._take_events()
        i = self._current
        spec = self._stages[i].spec
        base = self._stages[i - 1].t if i > 0 else None
        now = self._clock()
        began = self._start if base is None else (self._first_byte or self._start) + base
        if now - began > spec.deadline:
            self._fail(
                i,
                f"{spec.name} not reached within {spec.deadline:g}s",
                line="",
                detail=self._stage_detail(i),
            )
        return self._take_events()

    def finish(self, reason: str = "console ended") -> Verdict:
        """The console ended (or the run gave up): decide with what was seen."""
        if self._verdict is None:
            if self._clock is not None and self._first_byte is not None:
                self._tick = round(self._clock() - self._first_byte, 6)
            block = self._splitter.flush()
            if block:
                self._scan_block(block)
                self._lines_done += block.count("\n")
                self._partial_done = set()
                self._blame_window_check()
        if self._verdict is None and self._blaming is not None:
            self._settle_blame(None)
        if self._verdict is None:
            i = self._current
            unverified = self._unverified_only(i)
            if unverified:
                why = f"{self._stages[i].spec.name}: {unverified} (strict devices)"
            else:
                why = f"{reason} before {self._stages[i].spec.name}"
            self._fail(i, why, "", self._stage_detail(i))
        self._take_events()
        assert self._verdict is not None
        return self._verdict

    # ----------------------------------------------------------------------- scanning

    def _build_rules(self) -> list[_Rule]:
        rules: list[_Rule] = []

        def add(role: _Role, stage: int, patterns: Iterable[Pattern]) -> None:
            for p in patterns:
                rules.append(_Rule(len(rules), role, stage, p))

        names = [st.spec.name for st in self._stages]
        for role, patterns in (
            (_Role.FORBIDDEN, self.profile.forbidden),
            (_Role.BLAME, getattr(self.profile, "blame", ())),
        ):
            for p in patterns:
                stage = names.index(p.stage) if p.stage in names else -1
                rules.append(_Rule(len(rules), role, stage, p))
        add(_Role.NOTICE, -1, getattr(self.profile, "notices", ()))
        add(_Role.BLOCKED, -1, getattr(self.profile, "blocked", ()))
        for i, st in enumerate(self._stages):
            s = st.spec
            add(_Role.REQUIRED, i, s.required)
            add(_Role.OPTIONAL, i, s.optional)
            add(_Role.AP_IDS, i, s.ap_ids)
            add(_Role.CPU_COUNT, i, s.cpu_count)
            add(_Role.DISK, i, s.disk_devices)
            add(_Role.VIF, i, s.vif_devices)
        return rules

    def _scan_block(self, block: str) -> None:
        """Find candidate lines with C-speed substring search, then apply rules in order."""
        hits: dict[int, set[int]] = {}
        for rule in self._scan_rules:
            for lit in rule.pattern.literals:
                pos = block.find(lit)
                while pos >= 0:
                    start = block.rfind("\n", 0, pos) + 1
                    hits.setdefault(start, set()).add(rule.index)
                    end = block.find("\n", pos)
                    pos = block.find(lit, end + 1) if end >= 0 else -1
        for rule in self._line_rules:
            # Patterns without a literal: search the block, then resume at the next line so a
            # match spanning lines (e.g. via \s) cannot hide one inside a line; every
            # candidate is verified on its own line in _apply.
            search = rule.pattern.regex.search
            pos = 0
            while (m := search(block, pos)) is not None:
                start = block.rfind("\n", 0, m.start()) + 1
                hits.setdefault(start, set()).add(rule.index)
                nl = block.find("\n", m.start())
                if nl < 0:
                    break
                pos = nl + 1
        if self._partial_stages:
            self._refresh_partial_evidence(block[: block.find("\n")])
        counted_to, lines_before = 0, self._lines_done
        for start in sorted(hits):
            end = block.find("\n", start)
            line = block[start : end if end >= 0 else len(block)]
            self._where = (block, start)
            lines_before += block.count("\n", counted_to, start)
            counted_to = start
            self._line_no = lines_before + 1
            if self._blame_window_over(self._line_no):
                self._settle_blame(None)
                return
            idx = hits[start]
            if start == 0 and self._partial_done:
                # The block's first line continues the partial line already matched.
                idx = idx - self._partial_done
            if idx:
                self._apply(line, sorted(idx))
                if self.done:
                    return
        if self._clock is None:
            self._last_stamp = self._stamp_before(block, len(block))

    def _stamp_before(self, block: str, pos: int) -> float | None:
        """Offline: the stamp of the nearest stamped line before `pos` (bounded look-back).

        Unstamped lines (an init's own echo) inherit the time of the kernel line before them.
        """
        for _ in range(_LOOKBACK):
            end = block.rfind("\n", 0, pos)
            if end < 0:
                break
            pos = block.rfind("\n", 0, end) + 1
            stamp = strip_prefix(block[pos:end][:64])[1]
            if stamp is not None:
                return stamp
            if pos == 0:
                break
        return self._last_stamp

    def _scan_partial(self) -> None:
        """Match the incomplete last line (a `login: ` prompt never gets its newline)."""
        if self._splitter.overflowed and self._partial_len:
            return
        part = self._splitter.partial
        if not part or len(part) == self._partial_len:
            return
        self._partial_len = len(part)
        todo = []
        for rule in self._rules:
            # Forbidden patterns wait for the whole line: a verdict must not depend on
            # where the console happened to split it.
            if rule.role in _NOT_ON_PARTIAL or rule.index in self._partial_done:
                continue
            lits = rule.pattern.literals
            if lits and not any(lit in part for lit in lits):
                continue
            todo.append(rule.index)
        if todo:
            self._where = None
            self._line_no = self._lines_done + 1
            applied = self._apply(part, todo)
            self._partial_done |= applied
            self._partial_stages |= {self._rules[r].stage for r in applied}

    def _refresh_partial_evidence(self, full: str) -> None:
        """The partial line matched earlier is now complete: keep the whole line as evidence."""
        line = strip_prefix(full)[0][:EVIDENCE_MAX].rstrip()
        for i in self._partial_stages:
            st = self._stages[i]
            # Its line number stays: the partial line was already counted as the next line.
            if st.own_line and line.startswith(st.own_line):
                if st.evidence == st.own_line:
                    st.evidence = line
                st.own_line = line
        self._partial_stages = set()

    def _apply(self, raw: str, rule_ids: list[int]) -> set[int]:
        """Apply the matching rules to one line in rule order; return the ones that matched."""
        line, stamp = strip_prefix(raw)
        t = self._now(stamp)
        if self._blaming is not None:
            self._blame_line(line, rule_ids)
            return set(rule_ids)
        matched: set[int] = set()
        forbidden: list[_Rule] = []
        blame: list[_Rule] = []
        for rid in rule_ids:
            rule = self._rules[rid]
            m = rule.pattern.regex.search(line)
            if m is None:
                continue
            matched.add(rid)
            if rule.role is _Role.FORBIDDEN:
                forbidden.append(rule)
            elif rule.role is _Role.BLAME:
                blame.append(rule)
            elif rule.role is _Role.NOTICE:
                self._notice(rule, line, t)
            elif rule.role is _Role.BLOCKED and not self.done:
                self._block(rule, line[:EVIDENCE_MAX], t)
                return matched
        if forbidden:
            self._forbidden_line(forbidden, blame, line[:EVIDENCE_MAX], t)
            return matched
        for rid in rule_ids:
            rule = self._rules[rid]
            if rid not in matched or rule.role in _WHOLE_LINE:
                continue
            m = rule.pattern.regex.search(line)
            assert m is not None
            self._on_match(rule, m, line, t)
            if self.done:
                break
        if not self.done and self._progress:
            self._progress = False
            self._advance(t)
        return matched

    def _now(self, stamp: float | None) -> float | None:
        if self._clock is not None:
            return self._tick
        if stamp is None:
            # Unstamped line: inherit the stamp of the nearest stamped line before it.
            where = self._where
            stamp = self._last_stamp if where is None else self._stamp_before(*where)
        else:
            self._last_stamp = stamp
        if stamp is None:
            return None
        if self._stamp_origin is None:
            self._stamp_origin = stamp if stamp > 1e6 else 0.0  # wall clock vs since-boot
        return round(stamp - self._stamp_origin, 6)

    # ----------------------------------------------------------------------- stage logic

    def _on_match(self, rule: _Rule, m: re.Match[str], line: str, t: float | None) -> None:
        # Trailing blanks are not evidence: a prompt's "login: " may be matched before its
        # space arrives, and the verdict must not depend on where the console was cut.
        ev_line = line[:EVIDENCE_MAX].rstrip()
        line_no = self._line_no
        st = self._stages[rule.stage]
        name = st.spec.name
        if st.complete and rule.role is not _Role.CPU_COUNT and rule.role is not _Role.AP_IDS:
            return  # a completed stage's lines repeat harmlessly (e.g. a second banner)
        self._events.append(StageEvent(EventKind.MATCHED, name, t, ev_line, rule.pattern.name))
        if rule.role is _Role.REQUIRED:
            if rule.index not in st.seen_required:
                st.seen_required.add(rule.index)
                st.own_t, st.own_line, st.own_line_no = t, ev_line, line_no
                self._progress = True
        elif rule.role is _Role.AP_IDS:
            ids = [int(x) for x in m.group("ids").split() if x.isdigit()]
            for ap in ids:
                if ap >= self.vcpus or ap < 1:
                    self._fail(
                        rule.stage,
                        f"{name}: AP id {ap} outside 1..{self.vcpus - 1} for {self.vcpus} vCPUs",
                        ev_line,
                        detail=self._stage_detail(rule.stage),
                        t=t,
                        line_no=line_no,
                    )
                    return
                if ap not in st.aps and len(st.aps) < _SET_MAX:
                    st.aps.add(ap)
                    st.own_t, st.own_line, st.own_line_no = t, ev_line, line_no
                    self._progress = True
        elif rule.role is _Role.CPU_COUNT:
            n = int(m.group("n"))
            if n != self.vcpus:
                self._fail(
                    rule.stage,
                    f"{name}: guest reports {n} CPUs, expected {self.vcpus}",
                    ev_line,
                    detail=f"expected {self.vcpus} CPUs, guest reports {n}",
                    t=t,
                    line_no=line_no,
                )
                return
            if st.cpu_count is None:
                st.cpu_count = n
                st.own_t, st.own_line, st.own_line_no = t, ev_line, line_no
                self._progress = True
        elif rule.role in (_Role.DISK, _Role.VIF):
            disk = rule.role is _Role.DISK
            seen, want = (st.disks, self.n_disks) if disk else (st.vifs, self.n_vifs)
            dev = m.group("dev")
            if dev not in seen and len(seen) < _SET_MAX:
                seen.add(dev)
                st.own_t, st.own_line, st.own_line_no = t, ev_line, line_no
                self._progress = True
                if len(seen) > want:
                    kind = "disk" if disk else "vif"
                    self._fail(
                        rule.stage,
                        f"{name}: {len(seen)} {kind} devices seen, expected {want}",
                        ev_line,
                        detail=self._stage_detail(rule.stage),
                        t=t,
                        line_no=line_no,
                    )

    # ----------------------------------------------------------------------- blame

    def _forbidden_line(
        self, forbidden: list[_Rule], blame: list[_Rule], line: str, t: float | None
    ) -> None:
        """A forbidden line: fail the stage it names, else wait for a blame line, else fail
        the stage in progress."""
        named = [r for r in forbidden if r.stage >= 0]
        rule = named[0] if named else forbidden[0]
        if rule.stage >= 0:
            self._fail_forbidden(rule, line, t, self._line_no, rule.stage, None)
            return
        if blame:
            self._fail_forbidden(rule, line, t, self._line_no, blame[0].stage, (blame[0], line))
            return
        has_blame = any(r.role is _Role.BLAME for r in self._rules)
        if has_blame and self.profile.blame_lines > 0:
            wall = self._clock() if self._clock is not None else None
            self._blaming = _Blaming(rule, line, t, self._line_no, wall)
            return
        self._fail_forbidden(rule, line, t, self._line_no, None, None)

    def _blame_line(self, raw_line: str, rule_ids: list[int]) -> None:
        """A line after a forbidden one: does it name the stage (blame, or a forbidden
        pattern with a stage)?"""
        for rid in rule_ids:
            rule = self._rules[rid]
            named = rule.role is _Role.BLAME or (rule.role is _Role.FORBIDDEN and rule.stage >= 0)
            if named and rule.pattern.regex.search(raw_line):
                self._settle_blame((rule, raw_line[:EVIDENCE_MAX]))
                return

    def _blame_window_over(self, line_no: int | None) -> bool:
        b = self._blaming
        if b is None or b.line_no is None or line_no is None:
            return False
        return line_no > b.line_no + self.profile.blame_lines

    def _blame_window_check(self) -> None:
        """After a block: the window closes once `blame_lines` lines followed the failure."""
        if self._blaming is not None and self._blame_window_over(self._lines_done):
            self._settle_blame(None)

    def _settle_blame(self, by: tuple[_Rule, str] | None) -> None:
        b = self._blaming
        assert b is not None
        self._blaming = None
        stage = by[0].stage if by is not None else None
        self._fail_forbidden(b.rule, b.line, b.t, b.line_no, stage, by)

    def _fail_forbidden(
        self,
        rule: _Rule,
        line: str,
        t: float | None,
        line_no: int | None,
        stage: int | None,
        by: tuple[_Rule, str] | None,
    ) -> None:
        detail = f"matched {rule.pattern.source!r}"
        if stage is None or stage < 0:
            i = self._current
            reason = f"forbidden pattern {rule.pattern.name!r} during {self._stage_name()}"
        else:
            i = stage
            name = self._stages[i].spec.name
            reason = f"forbidden pattern {rule.pattern.name!r} indicts {name}"
            if by is not None:
                reason += f" (blamed by {by[0].pattern.name!r})"
                detail += f"; blamed on {name} by {by[0].pattern.name!r}: {by[1]!r}"
            if self._stages[i].complete:
                detail += f"; {name} had passed"
            elif i != self._current and self._current < len(self._stages):
                detail += f"; {self._stage_name()} was in progress"
        self._fail(i, reason, line, detail=detail, t=t, line_no=line_no)

    def _block(self, rule: _Rule, line: str, t: float | None) -> None:
        """The guest says it cannot run its test here: blocked, no stage failed."""
        self._events.append(
            StageEvent(EventKind.FAILED, self._stage_name(), t, line, rule.pattern.name)
        )
        self._verdict = self._make_verdict(
            VerdictValue.BLOCKED, f"blocked pattern {rule.pattern.name!r}: {line}", None
        )

    def _notice(self, rule: _Rule, line: str, t: float | None) -> None:
        self._notice_count += 1
        if len(self._notices) < NOTICES_MAX:
            self._notices.append(
                {
                    "name": rule.pattern.name,
                    "stage": self.stage_in_progress,
                    "t": t,
                    "line": self._line_no,
                    "evidence": line[:EVIDENCE_MAX],
                }
            )
        self._events.append(
            StageEvent(
                EventKind.NOTICE, self._stage_name(), t, line[:EVIDENCE_MAX], rule.pattern.name
            )
        )

    # ----------------------------------------------------------------------- devices

    def _unverified(self, st: _StageState) -> list[tuple[str, int]]:
        """(kind, expected count) of the stage's "xenstore" kinds not proven by XenStore."""
        out = []
        for kind, want in (("disk", self.n_disks), ("vif", self.n_vifs)):
            xenstore = getattr(st.spec, f"{kind}_evidence") == EVIDENCE_XENSTORE
            if want and xenstore and kind not in st.proven:
                out.append((kind, want))
        return out

    def _devices_waived(self) -> bool:
        """Unproven "xenstore" devices do not hold a stage back: offline and not strict."""
        return not self.xenstore_proof and not self.strict_devices

    def _unverified_only(self, i: int) -> str:
        """Offline and strict: the stage's only unmet requirement is devices the console
        cannot show.  Returns their description ("" otherwise)."""
        if i >= len(self._stages) or self.xenstore_proof or not self.strict_devices:
            return ""
        st = self._stages[i]
        pending = self._unverified(st)
        if not pending or not self._own_complete(st, ignore_unverified=True):
            return ""
        return "; ".join(f"{n} {kind}(s) unverified on the console" for kind, n in pending)

    def _own_complete(self, st: _StageState, *, ignore_unverified: bool = False) -> bool:
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
        return ignore_unverified or self._devices_waived() or not self._unverified(st)

    def _advance(self, t: float | None) -> None:
        """Complete stages in order while their requirements hold."""
        prev_t: float | None = None
        i = 0
        while i < len(self._stages):
            st = self._stages[i]
            if not st.complete:
                if not self._own_complete(st):
                    break
                st.complete = True
                times = [x for x in (prev_t, st.own_t) if x is not None]
                st.t = max(times) if times else (t if self._clock is not None else None)
                st.evidence = st.own_line
                st.line_no = st.own_line_no
                self._events.append(StageEvent(EventKind.PASSED, st.spec.name, st.t, st.evidence))
            prev_t = st.t
            i += 1
        if i != self._current:
            self._current = i
            if i < len(self._stages):
                self._events.append(StageEvent(EventKind.STARTED, self._stage_name(), prev_t))
        if i >= len(self._stages) and self._verdict is None:
            self._verdict = self._make_verdict(VerdictValue.PASS, "all stages passed", None)

    def _stage_detail(self, i: int) -> str:
        st = self._stages[i]
        s = st.spec
        parts: list[str] = []
        missing = [p.name for j, p in enumerate(s.required) if not self._req_seen(st, j)]
        if missing:
            parts.append("missing " + ", ".join(repr(m) for m in missing))
        if s.ap_ids:
            want = set(range(1, self.vcpus))
            parts.append(f"APs seen {_fmt_set(st.aps)}, expected {_fmt_set(want)}")
        if s.cpu_count:
            seen = "none" if st.cpu_count is None else str(st.cpu_count)
            parts.append(f"CPU count seen {seen}, expected {self.vcpus}")
        if s.disk_devices:
            parts.append(f"disks seen {_fmt_set(st.disks)}, expected {self.n_disks}")
        if s.vif_devices:
            parts.append(f"vifs seen {_fmt_set(st.vifs)}, expected {self.n_vifs}")
        parts += self._device_proof_detail(st)
        return "; ".join(parts)

    def _device_proof_detail(self, st: _StageState) -> list[str]:
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

    def _req_seen(self, st: _StageState, j: int) -> bool:
        rid = next(
            r.index
            for r in self._rules
            if r.role is _Role.REQUIRED and r.pattern is st.spec.required[j]
        )
        return rid in st.seen_required

    def _fail(
        self,
        i: int,
        reason: str,
        line: str,
        detail: str = "",
        t: float | None = None,
        line_no: int | None = None,
    ) -> None:
        i = min(i, len(self._stages) - 1)
        st = self._stages[i]
        name = st.spec.name
        self._events.append(StageEvent(EventKind.FAILED, name, t, line, detail))
        self._verdict = self._make_verdict(
            VerdictValue.FAIL, reason, name, failed=_Failure(i, t, line, detail, line_no)
        )

    def _make_verdict(
        self,
        value: VerdictValue,
        reason: str,
        failed_stage: str | None,
        failed: _Failure | None = None,
    ) -> Verdict:
        results: list[StageResult] = []
        for i, st in enumerate(self._stages):
            if failed is not None and i > failed.stage:
                r = StageResult(st.spec.name)  # after the failed stage: not reached
            elif st.complete and not (failed is not None and failed.stage == i):
                r = StageResult(
                    st.spec.name,
                    StageStatus.PASSED,
                    st.t,
                    st.evidence,
                    "; ".join(self._device_proof_detail(st)),
                    line=st.line_no,
                )
            elif failed is not None and failed.stage == i:
                r = StageResult(
                    st.spec.name,
                    StageStatus.FAILED,
                    failed.t,
                    failed.line,
                    failed.detail,
                    line=failed.line_no,
                )
            else:
                r = StageResult(st.spec.name)
            results.append(r)
        meta: dict[str, object] = {
            "profile": self.profile.name,
            "vcpus": self.vcpus,
            "disks": self.n_disks,
            "vifs": self.n_vifs,
        }
        if self._notice_count:
            meta["notices"] = list(self._notices)
            if self._notice_count > len(self._notices):
                meta["notices_total"] = self._notice_count
        if self.strict_devices:
            meta["strict_devices"] = True
        return Verdict(value, reason, failed_stage, results, meta)

    def _stage_name(self) -> str:
        return self._stages[min(self._current, len(self._stages) - 1)].spec.name

    def _take_events(self) -> list[StageEvent]:
        out, self._events = self._events, []
        return out


# Roles that act on a whole console line only (never on a partial line).
_WHOLE_LINE = frozenset({_Role.FORBIDDEN, _Role.BLAME, _Role.NOTICE, _Role.BLOCKED})
# Not applied to a partial line either: roles whose value is read from the line and may still
# grow.  FreeBSD prints "Launching APs: 2 3 1" an id at a time, each from its own CPU; matched
# at "Launching APs: 2 " it would count AP 2 alone and never see the rest of its line.
_NOT_ON_PARTIAL = _WHOLE_LINE | {_Role.AP_IDS, _Role.CPU_COUNT, _Role.DISK, _Role.VIF}


def _fmt_set(s: set[int] | set[str]) -> str:
    return "{" + ",".join(str(x) for x in sorted(s)) + "}" if s else "{}"  # type: ignore[type-var]


def check_file(
    path: str | PathLike[str],
    profile: Profile,
    vcpus: int,
    disks: int,
    vifs: int,
    *,
    strict_devices: bool = False,
) -> Verdict:
    """Check a saved console log (no deadlines; `t` from timestamp prefixes when present).

    Devices the profile proves only by XenStore are `unverified on the console`; with
    `strict_devices` that fails their stage."""
    p = Path(path)
    try:
        f = p.open("rb")
    except OSError as e:
        raise BlockedError(f"cannot read console log {p}: {e.strerror}") from e
    checker = StageChecker(
        profile, vcpus=vcpus, disks=disks, vifs=vifs, clock=None, strict_devices=strict_devices
    )
    with f:
        while not checker.done and (chunk := f.read(_READ_CHUNK)):
            checker.feed(chunk)
    verdict = checker.finish("console ended")
    verdict.meta["console"] = str(p)
    return verdict


__all__ = ["EVIDENCE_MAX", "EventKind", "StageChecker", "StageEvent", "check_file"]
