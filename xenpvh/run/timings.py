"""The timings of one boot run: monotonic timestamps of its steps and the durations between
them that go into the verdict's meta."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Timings:
    """Monotonic timestamps of one run (None: not reached)."""

    start: float
    create: float | None = None  # just before `xl create`
    created: float | None = None  # `xl create -p` returned
    attached: float | None = None  # console client holds the console
    unpaused: float | None = None
    first_byte: float | None = None
    decided: float | None = None  # the verdict was known
    deciding_arrival: float | None = None  # arrival of the console chunk that decided it
    collected: float | None = None
    destroyed: float | None = None

    def meta(self) -> dict[str, float | None]:
        def d(a: float | None, b: float | None) -> float | None:
            return round(b - a, 3) if a is not None and b is not None else None

        return {
            "create_to_verdict_s": d(self.create, self.decided),
            "xl_create_s": d(self.create, self.created),
            "console_attach_s": d(self.created, self.attached),
            "unpause_to_verdict_s": d(self.unpaused, self.decided),
            "harness_overhead_s": d(self.deciding_arrival, self.decided),
            "verdict_to_destroyed_s": d(self.decided, self.destroyed),
            "collect_s": d(self.decided, self.collected),
            "destroy_s": d(self.collected or self.decided, self.destroyed),
            "run_s": d(self.start, self.destroyed),
        }
