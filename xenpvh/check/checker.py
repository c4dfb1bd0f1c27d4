"""The streaming stage checker: console bytes in, stage events and console facts out.

Model (see DESIGN.md): a profile's stages are in the OS's own boot order.  Patterns of
*every* stage are matched whenever they appear (consoles interleave); a stage completes when
its own requirements are met and the previous stage has completed (`check.stages`).  A
matched line is counted on its stage by `check.matches`; a forbidden line fails the stage
`check.blame` finds for it.  The checker reports what it saw as typed facts
(`check.decide_console.ConsoleFacts`) and the decider builds the verdict from them.

Devices: console lines (`*_devices` patterns) or, for "xenstore" evidence, `prove_devices()`
(the live run's XenStore check; offline see `check.stages`).  `notice` patterns are recorded
(`meta.notices`) and never decide.

Console source: `source="xen-serial"` reads Xen's own serial line, where the guest's lines
carry Xen's `(dN) ` prefix among Xen's `(XEN) ` lines; `check.serial` turns it into the
guest's console first, so it is judged like the same console taken with `xl console`.

State machine: RUNNING --(all stages complete)--> PASS
               RUNNING --(forbidden line)--> BLAMING --(blame line | window end)--> FAIL
               RUNNING --(AP/CPU mismatch | deadline | finish())--> FAIL
               RUNNING --(blocked line)--> BLOCKED
Once decided, the checker ignores further input.

Memory is bounded: lines are capped (`lines.MAX_LINE`), evidence is capped
(`EVIDENCE_MAX`), AP ids and device names are bounded sets.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from os import PathLike
from pathlib import Path

from xenpvh.check.blame import EVIDENCE_MAX, BlameWindow
from xenpvh.check.decide_console import ConsoleFacts, StageFailure, decide_console
from xenpvh.check.lines import LineSplitter, strip_prefix
from xenpvh.check.matches import record
from xenpvh.check.rules import NOT_ON_PARTIAL, WHOLE_LINE, Role, Rule, build_rules, find_candidates
from xenpvh.check.serial import CONSOLE_SOURCES, XEN_SERIAL, XenSerialFilter
from xenpvh.check.stages import SET_MAX, EventKind, StageEvent, StageTracker
from xenpvh.check.stamps import OfflineStamps
from xenpvh.check.verdict import Verdict
from xenpvh.errors import BlockedError
from xenpvh.profile.model import Profile

_READ_CHUNK = 64 * 1024
NOTICES_MAX = 64  # notices kept in the verdict (the count goes on)
BLAME_WAIT = 3.0  # live: seconds a forbidden line waits for its blame lines


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
        source: str = "xl",
        domid: int | None = None,
    ) -> None:
        if isinstance(vcpus, bool) or not isinstance(vcpus, int) or vcpus < 1:
            raise BlockedError(f"vcpus must be an integer >= 1, got {vcpus!r}")
        for what, n in (("disks", disks), ("vifs", vifs)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise BlockedError(f"{what} must be an integer >= 0, got {n!r}")
        if source not in CONSOLE_SOURCES:
            raise BlockedError(f"console source {source!r} is not one of {CONSOLE_SOURCES}")
        self.profile = profile
        self.vcpus = vcpus
        self.n_disks = disks
        self.n_vifs = vifs
        self.strict_devices = strict_devices
        # Xen's serial line: the guest's own lines are taken out of it first.
        self.serial = XenSerialFilter(domid) if source == XEN_SERIAL else None
        # A live run reports XenStore proof (`prove_devices`); offline, "xenstore" devices
        # are unverified on the console, which fails only with `strict_devices`.
        self._tracker = StageTracker(
            profile.stages,
            vcpus=vcpus,
            disks=disks,
            vifs=vifs,
            xenstore_proof=xenstore_proof,
            strict_devices=strict_devices,
        )
        self._clock = clock
        self._start = clock() if clock is not None else 0.0
        self._first_byte: float | None = None
        self._tick: float | None = None  # live: seconds from the first byte at this feed
        self._stamps = OfflineStamps()
        self._where: tuple[str, int] | None = None  # (block, line start) being applied
        # Line numbers as in console.log: complete lines consumed so far, and the number of
        # the line being applied (the splitter ends lines at CR, LF and CRLF alike).
        self._lines_done = 0
        self._line_no: int | None = None
        self._splitter = LineSplitter()
        self._rules = build_rules(profile)
        self._scan_rules = [r for r in self._rules if r.pattern.literals]
        self._line_rules = [r for r in self._rules if not r.pattern.literals]
        self._partial_done: set[int] = set()  # rules already applied to the current partial
        self._partial_len = 0
        self._partial_stages: set[int] = set()  # stages whose evidence is the partial line
        self._progress = False  # a stage's own requirements advanced since advance ran
        self._blame = BlameWindow(self._tracker, self._rules, profile.blame_lines)
        self._failure: StageFailure | None = None
        self._blocked = ""
        self._verdict: Verdict | None = None
        self._events: list[StageEvent] = []
        self._notices: list[dict[str, object]] = []
        self._notice_count = 0
        self._advance(None)

    # ----------------------------------------------------------------------- public API

    @property
    def xenstore_problem(self) -> str:
        """The run's latest XenStore reading of devices not yet Connected (for the detail)."""
        return self._tracker.xenstore_problem

    @xenstore_problem.setter
    def xenstore_problem(self, value: str) -> None:
        self._tracker.xenstore_problem = value

    @property
    def done(self) -> bool:
        return self._verdict is not None

    def facts(self) -> ConsoleFacts:
        """What the console showed so far, for the decider."""
        return ConsoleFacts(
            profile=self.profile.name,
            vcpus=self.vcpus,
            disks=self.n_disks,
            vifs=self.n_vifs,
            stages=self._tracker.facts(),
            in_progress=self._tracker.name(),
            failure=self._failure,
            blocked=self._blocked,
            notices=tuple(self._notices),
            notices_total=self._notice_count,
            strict_devices=self.strict_devices,
        )

    @property
    def verdict(self) -> Verdict:
        """The verdict once decided; before that, a provisional view (stages so far)."""
        return self._verdict if self._verdict is not None else decide_console(self.facts())

    @property
    def stage_in_progress(self) -> str | None:
        return None if self._tracker.all_complete else self._tracker.name()

    def feed(self, data: bytes) -> list[StageEvent]:
        """Consume console bytes (any split); return the events they caused."""
        if self.done or not data:
            return []
        if self.serial is not None and not (data := self.serial.feed(data)):
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
            self._end_block(block)
        if not self.done and self._blame.pending is None:
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
        ids = tuple(sorted(str(x) for x in ids))[:SET_MAX]
        t = self._now_live()
        if self._tracker.prove(kind, ids, t):
            self._progress = True
        if self._progress and self._blame.pending is None:
            self._progress = False
            self._advance(t)
        return self._take_events()

    def awaiting_xenstore(self, stage: str) -> bool:
        """`stage` is in progress and only waits for devices XenStore must prove."""
        i = self._tracker.current
        if self.done or i >= len(self._tracker) or self._tracker.name(i) != stage:
            return False
        return self._tracker.awaiting_xenstore(i)

    def _now_live(self) -> float | None:
        if self._clock is None or self._first_byte is None:
            return self._tick
        return round(self._clock() - self._first_byte, 6)

    def poll(self) -> list[StageEvent]:
        """Check the stage in progress against its deadline (live mode only)."""
        if self.done or self._clock is None:
            return []
        if self._blame.pending is not None:
            wall = self._blame.pending.wall
            if wall is None or self._clock() - wall >= BLAME_WAIT:
                self._fail(self._blame.settle(None))
            return self._take_events()
        i = self._tracker.current
        stages = self._tracker.stages
        spec = stages[i].spec
        base = stages[i - 1].t if i > 0 else None
        now = self._clock()
        began = self._start if base is None else (self._first_byte or self._start) + base
        if now - began > spec.deadline:
            reason = f"{spec.name} not reached within {spec.deadline:g}s"
            self._fail(StageFailure(i, reason, None, "", self._tracker.detail(i), None))
        return self._take_events()

    def finish(self, reason: str = "console ended") -> Verdict:
        """The console ended (or the run gave up): decide with what was seen."""
        if self._verdict is None:
            if self._clock is not None and self._first_byte is not None:
                self._tick = round(self._clock() - self._first_byte, 6)
            rest = self.serial.flush() if self.serial is not None else b""
            block = self._splitter.feed(rest) + self._splitter.flush()
            if block:
                self._scan_block(block)
                self._end_block(block)
        if self._verdict is None and self._blame.pending is not None:
            self._fail(self._blame.settle(None))
        if self._verdict is None:
            i = self._tracker.current
            unverified = self._tracker.unverified_only(i)
            name = self._tracker.name(i)
            why = (
                f"{name}: {unverified} (strict devices)"
                if unverified
                else f"{reason} before {name}"
            )
            self._fail(StageFailure(i, why, None, "", self._tracker.detail(i), None))
        self._take_events()
        assert self._verdict is not None
        return self._verdict

    # ----------------------------------------------------------------------- scanning

    def _end_block(self, block: str) -> None:
        self._lines_done += block.count("\n")
        self._partial_done = set()
        self._partial_len = 0
        # The window closes once `blame_lines` lines followed the failure.
        if self._blame.pending is not None and self._blame.over(self._lines_done):
            self._fail(self._blame.settle(None))

    def _scan_block(self, block: str) -> None:
        """Find candidate lines with C-speed substring search, then apply rules in order."""
        hits = find_candidates(block, self._scan_rules, self._line_rules)
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
            if self._blame.over(self._line_no):
                self._fail(self._blame.settle(None))
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
            self._stamps.block_done(block)

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
            if rule.role in NOT_ON_PARTIAL or rule.index in self._partial_done:
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
            st = self._tracker.stages[i]
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
        if self._blame.pending is not None:
            failure = self._blame.on_line(line, rule_ids)
            if failure is not None:
                self._fail(failure)
            return set(rule_ids)
        matched: set[int] = set()
        forbidden: list[Rule] = []
        blame: list[Rule] = []
        for rid in rule_ids:
            rule = self._rules[rid]
            if rule.pattern.regex.search(line) is None:
                continue
            matched.add(rid)
            if rule.role is Role.FORBIDDEN:
                forbidden.append(rule)
            elif rule.role is Role.BLAME:
                blame.append(rule)
            elif rule.role is Role.NOTICE:
                self._notice(rule, line, t)
            elif rule.role is Role.BLOCKED and not self.done:
                self._block(rule, line[:EVIDENCE_MAX], t)
                return matched
        if forbidden:
            wall = self._clock() if self._clock is not None else None
            failure = self._blame.on_forbidden(
                forbidden, blame, line[:EVIDENCE_MAX], t, self._line_no, wall
            )
            if failure is not None:
                self._fail(failure)
            return matched
        for rid in rule_ids:
            rule = self._rules[rid]
            if rid not in matched or rule.role in WHOLE_LINE:
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
        return self._stamps.t(stamp, self._where)

    # ----------------------------------------------------------------------- stage logic

    def _on_match(self, rule: Rule, m: re.Match[str], line: str, t: float | None) -> None:
        # Trailing blanks are not evidence: a prompt's "login: " may be matched before its
        # space arrives, and the verdict must not depend on where the console was cut.
        ev_line = line[:EVIDENCE_MAX].rstrip()
        st = self._tracker.stages[rule.stage]
        if st.complete and rule.role is not Role.CPU_COUNT and rule.role is not Role.AP_IDS:
            return  # a completed stage's lines repeat harmlessly (e.g. a second banner)
        self._events.append(
            StageEvent(EventKind.MATCHED, st.spec.name, t, ev_line, rule.pattern.name)
        )
        done = record(self._tracker, rule, m, ev_line, t, self._line_no)
        if done.failure is not None:
            self._fail(done.failure)
        elif done.progress:
            self._progress = True

    def _block(self, rule: Rule, line: str, t: float | None) -> None:
        """The guest says it cannot run its test here: blocked, no stage failed."""
        name = self._tracker.name()
        self._events.append(StageEvent(EventKind.FAILED, name, t, line, rule.pattern.name))
        self._blocked = f"blocked pattern {rule.pattern.name!r}: {line}"
        self._verdict = decide_console(self.facts())

    def _notice(self, rule: Rule, line: str, t: float | None) -> None:
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
                EventKind.NOTICE, self._tracker.name(), t, line[:EVIDENCE_MAX], rule.pattern.name
            )
        )

    def _advance(self, t: float | None) -> None:
        """Complete stages in order while their requirements hold."""
        self._events += self._tracker.advance(t, live=self._clock is not None)
        if self._tracker.all_complete and self._verdict is None:
            self._verdict = decide_console(self.facts())

    def _fail(self, failure: StageFailure) -> None:
        i = min(failure.stage, len(self._tracker) - 1)
        if i != failure.stage:
            failure = StageFailure(
                i, failure.reason, failure.t, failure.line, failure.detail, failure.line_no
            )
        name = self._tracker.name(i)
        self._events.append(
            StageEvent(EventKind.FAILED, name, failure.t, failure.line, failure.detail)
        )
        self._failure = failure
        self._verdict = decide_console(self.facts())

    def _take_events(self) -> list[StageEvent]:
        out, self._events = self._events, []
        return out


def check_file(
    path: str | PathLike[str],
    profile: Profile,
    vcpus: int,
    disks: int,
    vifs: int,
    *,
    strict_devices: bool = False,
    source: str = "xl",
    domid: int | None = None,
) -> Verdict:
    """Check a saved console log (no deadlines; `t` from timestamp prefixes when present).

    Devices the profile proves only by XenStore are `unverified on the console`; with
    `strict_devices` that fails their stage.  `source="xen-serial"` reads a log of Xen's
    serial line (the guest's lines prefixed `(dN) `; `domid` picks the guest)."""
    p = Path(path)
    try:
        f = p.open("rb")
    except OSError as e:
        raise BlockedError(f"cannot read console log {p}: {e.strerror}") from e
    checker = StageChecker(
        profile,
        vcpus=vcpus,
        disks=disks,
        vifs=vifs,
        clock=None,
        strict_devices=strict_devices,
        source=source,
        domid=domid,
    )
    with f:
        while not checker.done and (chunk := f.read(_READ_CHUNK)):
            checker.feed(chunk)
    verdict = checker.finish("console ended")
    verdict.meta["console"] = str(p)
    if checker.serial is not None:
        verdict.meta["console_source"] = XEN_SERIAL
        verdict.meta["domid"] = checker.serial.domid
    return verdict


__all__ = ["EVIDENCE_MAX", "EventKind", "StageChecker", "StageEvent", "check_file"]
