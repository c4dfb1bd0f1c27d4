"""Verdicts: the one answer every run and every `xenpvh check` produces."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum


class VerdictValue(StrEnum):
    PASS = "pass"  # every stage reached, nothing forbidden seen
    FAIL = "fail"  # the guest misbehaved; names the stage
    BROKEN = "broken"  # infrastructure failed; retryable
    BLOCKED = "blocked"  # our input is wrong; never retried


class StageStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    NOT_REACHED = "not-reached"


@dataclass
class StageResult:
    name: str
    status: StageStatus = StageStatus.NOT_REACHED
    t: float | None = None  # seconds from the first console byte
    evidence: str = ""  # the (escaped-on-output) console line that decided the stage
    detail: str = ""  # e.g. "APs seen {1,2}, expected {1,2,3}"
    # 1-based number of the evidence line in console.log (CR, LF and CRLF each end a line,
    # as the checker splits them); None when no single line decided the stage.
    line: int | None = None


@dataclass
class Verdict:
    verdict: VerdictValue
    reason: str
    failed_stage: str | None = None
    stages: list[StageResult] = field(default_factory=list)
    # Extra facts a run adds (host, toolstack, xen version, timings).
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return {
            VerdictValue.PASS: 0,
            VerdictValue.FAIL: 1,
            VerdictValue.BLOCKED: 2,
            VerdictValue.BROKEN: 3,
        }[self.verdict]

    def to_json_dict(self) -> dict[str, object]:
        d = {
            "verdict": str(self.verdict),
            "failed_stage": self.failed_stage,
            "reason": self.reason,
            "stages": [
                {
                    "name": s.name,
                    "status": str(s.status),
                    "t": s.t,
                    "evidence": s.evidence,
                    **({"detail": s.detail} if s.detail else {}),
                    **({"line": s.line} if s.line is not None else {}),
                }
                for s in self.stages
            ],
        }
        if self.meta:
            d["meta"] = self.meta
        return d


def verdict_from_json_dict(d: dict[str, object]) -> Verdict:
    stages = [
        StageResult(
            name=str(s["name"]),
            status=StageStatus(s["status"]),
            t=s.get("t"),
            evidence=str(s.get("evidence", "")),
            detail=str(s.get("detail", "")),
            line=int(s["line"]) if s.get("line") is not None else None,
        )
        for s in d.get("stages", [])  # type: ignore[union-attr]
    ]
    return Verdict(
        verdict=VerdictValue(d["verdict"]),
        reason=str(d["reason"]),
        failed_stage=d.get("failed_stage"),  # type: ignore[arg-type]
        stages=stages,
        meta=dict(d.get("meta", {})),  # type: ignore[arg-type]
    )


__all__ = [
    "StageResult",
    "StageStatus",
    "Verdict",
    "VerdictValue",
    "asdict",
    "verdict_from_json_dict",
]
