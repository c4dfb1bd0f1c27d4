"""Causal blame: which stage a forbidden line fails.

A forbidden pattern that names a stage (`Pattern.stage`) fails that stage, whether it is in
progress, not reached yet, or already passed.  A forbidden pattern without a stage fails the
stage a `blame` pattern names -- on the forbidden line itself or on one of the next
`blame_lines` lines (a panic and its backtrace) -- or else the stage in progress.  While a
failure waits for its blame lines, the checker matches nothing else; the wait ends with the
window, the console's end, or (live) the checker's `BLAME_WAIT`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xenpvh.check.decide_console import StageFailure
from xenpvh.check.rules import Role, Rule
from xenpvh.check.stages import StageTracker

EVIDENCE_MAX = 512  # characters of a console line kept as evidence


@dataclass(frozen=True)
class Blaming:
    """A forbidden line waiting (bounded) for the line that names its stage."""

    rule: Rule
    line: str
    t: float | None
    line_no: int | None
    wall: float | None  # live: clock reading at the forbidden line


def forbidden_failure(
    tracker: StageTracker,
    rule: Rule,
    line: str,
    t: float | None,
    line_no: int | None,
    stage: int | None,
    by: tuple[Rule, str] | None,
) -> StageFailure:
    """The failure a forbidden line makes, on `stage` (None: the stage in progress)."""
    detail = f"matched {rule.pattern.source!r}"
    if stage is None or stage < 0:
        i = tracker.current
        reason = f"forbidden pattern {rule.pattern.name!r} during {tracker.name()}"
    else:
        i = stage
        name = tracker.stages[i].spec.name
        reason = f"forbidden pattern {rule.pattern.name!r} indicts {name}"
        if by is not None:
            reason += f" (blamed by {by[0].pattern.name!r})"
            detail += f"; blamed on {name} by {by[0].pattern.name!r}: {by[1]!r}"
        if tracker.stages[i].complete:
            detail += f"; {name} had passed"
        elif i != tracker.current and tracker.current < len(tracker):
            detail += f"; {tracker.name()} was in progress"
    return StageFailure(min(i, len(tracker) - 1), reason, t, line, detail, line_no)


class BlameWindow:
    """Decides a forbidden line's stage, waiting up to `blame_lines` lines for a blame."""

    def __init__(self, tracker: StageTracker, rules: Sequence[Rule], blame_lines: int) -> None:
        self._tracker = tracker
        self._rules = rules
        self._has_blame = any(r.role is Role.BLAME for r in rules)
        self._blame_lines = blame_lines
        self.pending: Blaming | None = None

    def on_forbidden(
        self,
        forbidden: list[Rule],
        blame: list[Rule],
        line: str,
        t: float | None,
        line_no: int | None,
        wall: float | None,
    ) -> StageFailure | None:
        """A forbidden line: fail the stage it names, else the stage a blame pattern on the
        same line names, else wait for a blame line (None), else the stage in progress."""
        named = [r for r in forbidden if r.stage >= 0]
        rule = named[0] if named else forbidden[0]
        if rule.stage >= 0:
            return forbidden_failure(self._tracker, rule, line, t, line_no, rule.stage, None)
        if blame:
            by = (blame[0], line)
            return forbidden_failure(self._tracker, rule, line, t, line_no, blame[0].stage, by)
        if self._has_blame and self._blame_lines > 0:
            self.pending = Blaming(rule, line, t, line_no, wall)
            return None
        return forbidden_failure(self._tracker, rule, line, t, line_no, None, None)

    def on_line(self, line: str, rule_ids: Sequence[int]) -> StageFailure | None:
        """A line after a forbidden one: does it name the stage (blame, or a forbidden
        pattern with a stage)?"""
        for rid in rule_ids:
            rule = self._rules[rid]
            named = rule.role is Role.BLAME or (rule.role is Role.FORBIDDEN and rule.stage >= 0)
            if named and rule.pattern.regex.search(line):
                return self.settle((rule, line[:EVIDENCE_MAX]))
        return None

    def over(self, line_no: int | None) -> bool:
        """`line_no` lies past the window of the pending forbidden line."""
        b = self.pending
        if b is None or b.line_no is None or line_no is None:
            return False
        return line_no > b.line_no + self._blame_lines

    def settle(self, by: tuple[Rule, str] | None) -> StageFailure:
        """End the wait: blamed `by` a line, or (None) on the stage in progress."""
        b = self.pending
        assert b is not None
        self.pending = None
        stage = by[0].stage if by is not None else None
        return forbidden_failure(self._tracker, b.rule, b.line, b.t, b.line_no, stage, by)


__all__ = ["EVIDENCE_MAX", "BlameWindow", "Blaming", "forbidden_failure"]
