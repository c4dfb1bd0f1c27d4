"""A profile's patterns as the checker's rules, and the search that finds their lines.

Each pattern of a profile becomes one `Rule`: its role (what a matching line means), the
stage it belongs to or names, and a stable index (forbidden, blame, notices, blocked, then
stage by stage), which is the order the checker applies the rules of one line in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from xenpvh.profile.model import Pattern, Profile


class Role(StrEnum):
    """Which role a pattern plays; the checker dispatches on it per matching line."""

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


# Roles that act on a whole console line only (never on a partial line).
WHOLE_LINE = frozenset({Role.FORBIDDEN, Role.BLAME, Role.NOTICE, Role.BLOCKED})
# Not applied to a partial line either: roles whose value is read from the line and may still
# grow.  FreeBSD prints "Launching APs: 2 3 1" an id at a time, each from its own CPU; matched
# at "Launching APs: 2 " it would count AP 2 alone and never see the rest of its line.
NOT_ON_PARTIAL = WHOLE_LINE | {Role.AP_IDS, Role.CPU_COUNT, Role.DISK, Role.VIF}


@dataclass(frozen=True)
class Rule:
    index: int  # stable order: forbidden, blame, notices, blocked, then stage by stage
    role: Role
    stage: int  # index into the stages (forbidden/blame: the stage named, -1 for none)
    pattern: Pattern
    slot: int = 0  # position of the pattern in its stage's list (required: which one)


def build_rules(profile: Profile) -> list[Rule]:
    """Every pattern of `profile` as a rule, in the order rules apply to one line."""
    rules: list[Rule] = []

    def add(role: Role, stage: int, patterns: Iterable[Pattern]) -> None:
        for slot, p in enumerate(patterns):
            rules.append(Rule(len(rules), role, stage, p, slot))

    names = [s.name for s in profile.stages]
    for role, patterns in (
        (Role.FORBIDDEN, profile.forbidden),
        (Role.BLAME, getattr(profile, "blame", ())),
    ):
        for p in patterns:
            stage = names.index(p.stage) if p.stage in names else -1
            rules.append(Rule(len(rules), role, stage, p))
    add(Role.NOTICE, -1, getattr(profile, "notices", ()))
    add(Role.BLOCKED, -1, getattr(profile, "blocked", ()))
    for i, s in enumerate(profile.stages):
        add(Role.REQUIRED, i, s.required)
        add(Role.OPTIONAL, i, s.optional)
        add(Role.AP_IDS, i, s.ap_ids)
        add(Role.CPU_COUNT, i, s.cpu_count)
        add(Role.DISK, i, s.disk_devices)
        add(Role.VIF, i, s.vif_devices)
    return rules


def find_candidates(
    block: str, scan_rules: Sequence[Rule], line_rules: Sequence[Rule]
) -> dict[int, set[int]]:
    """Line start -> indices of the rules that may match that line of `block`.

    Rules with literals are found by C-speed substring search; rules without one search the
    block and resume at the next line, so a match spanning lines (e.g. via \\s) cannot hide
    one inside a line.  Every candidate is verified on its own line by the checker."""
    hits: dict[int, set[int]] = {}
    for rule in scan_rules:
        for lit in rule.pattern.literals:
            pos = block.find(lit)
            while pos >= 0:
                start = block.rfind("\n", 0, pos) + 1
                hits.setdefault(start, set()).add(rule.index)
                end = block.find("\n", pos)
                pos = block.find(lit, end + 1) if end >= 0 else -1
    for rule in line_rules:
        search = rule.pattern.regex.search
        pos = 0
        while (m := search(block, pos)) is not None:
            start = block.rfind("\n", 0, m.start()) + 1
            hits.setdefault(start, set()).add(rule.index)
            nl = block.find("\n", m.start())
            if nl < 0:
                break
            pos = nl + 1
    return hits


__all__ = ["NOT_ON_PARTIAL", "WHOLE_LINE", "Role", "Rule", "build_rules", "find_candidates"]
