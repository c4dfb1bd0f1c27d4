"""What an `ansible-playbook` run reports, read from its structured output.

The run uses the `ansible.posix.jsonl` stdout callback: one JSON object per line and per
event, written as the event happens (so task names can be shown while the play runs),
`_event` naming the callback method (`v2_playbook_on_task_start`, `v2_runner_on_failed`,
`v2_playbook_on_stats`, ...).  Lines that are not JSON are ansible's own messages on stderr
(warnings, `ERROR!` when the playbook cannot start): kept as text.

`PlaybookEvents` turns the lines into typed facts -- the task that started, the task that
failed on which host and why, the per-host recap -- and into the human-readable lines of the
run's log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# A failed result's text is the module's `msg`; a command's stderr follows it, cut to this.
MAX_DETAIL = 600


@dataclass(frozen=True)
class RecapCounts:
    """One host's counts in the play recap (`v2_playbook_on_stats`)."""

    ok: int
    changed: int
    unreachable: int
    failed: int
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0


@dataclass(frozen=True)
class TaskStarted:
    name: str
    handler: bool = False


@dataclass(frozen=True)
class TaskFailed:
    """A task failed on `host` (`unreachable`: ansible could not reach it at all)."""

    host: str
    task: str
    msg: str
    unreachable: bool = False

    def describe(self) -> str:
        what = "unreachable" if self.unreachable else "failed"
        return f"{what}: [{self.host}] {self.task}: {self.msg}"


PlaybookEvent = TaskStarted | TaskFailed


@dataclass
class PlaybookEvents:
    """Reads a run's output line by line; holds what it has learned so far."""

    recap: dict[str, RecapCounts] | None = None
    failures: list[TaskFailed] = field(default_factory=list)
    tasks: int = 0

    def feed(self, line: str) -> tuple[list[PlaybookEvent], list[str]]:
        """The events one output line carries and the lines it becomes in the log."""
        doc = _json(line)
        if doc is None:
            return [], [line]
        kind = doc.get("_event", "")
        task = str((doc.get("task") or {}).get("name") or "")
        if kind in ("v2_playbook_on_task_start", "v2_playbook_on_handler_task_start"):
            self.tasks += 1
            handler = kind.endswith("handler_task_start")
            header = "RUNNING HANDLER" if handler else "TASK"
            return [TaskStarted(task, handler)], [f"{header} [{task}]"]
        if kind == "v2_playbook_on_play_start":
            return [], [f"PLAY [{(doc.get('play') or {}).get('name', '')}]"]
        if kind == "v2_playbook_on_stats":
            self.recap = {host: _counts(s) for host, s in (doc.get("stats") or {}).items()}
            return [], ["PLAY RECAP", *(_recap_line(h, c) for h, c in self.recap.items())]
        if kind in ("v2_runner_on_failed", "v2_runner_on_unreachable"):
            unreachable = kind.endswith("unreachable")
            events: list[PlaybookEvent] = []
            lines: list[str] = []
            for host, result in (doc.get("hosts") or {}).items():
                failure = TaskFailed(str(host), task, _message(result), unreachable)
                self.failures.append(failure)
                events.append(failure)
                lines += [f"fatal: [{host}]: {failure.msg}", f"  result: {json.dumps(result)}"]
            return events, lines
        if kind in ("v2_runner_on_ok", "v2_runner_on_skipped"):
            lines = []
            for host, result in (doc.get("hosts") or {}).items():
                status = "skipping" if result.get("skipped") else "ok"
                status = "changed" if result.get("changed") and status == "ok" else status
                lines.append(f"{status}: [{host}]")
            return [], lines
        return [], []

    def fatal(self) -> list[TaskFailed]:
        """Per host that the recap counts failed or unreachable, its last failure (the one
        that stopped it; earlier ones were ignored or rescued)."""
        recap = self.recap or {}
        last: dict[str, TaskFailed] = {}
        for f in self.failures:
            counts = recap.get(f.host)
            if counts is not None and (counts.failed or counts.unreachable):
                last[f.host] = f
        return list(last.values())


def _json(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and "_event" in doc else None


def _counts(stats: dict[str, Any]) -> RecapCounts:
    def n(key: str) -> int:
        return int(stats.get(key) or 0)

    return RecapCounts(
        ok=n("ok"),
        changed=n("changed"),
        unreachable=n("unreachable"),
        failed=n("failures"),
        skipped=n("skipped"),
        rescued=n("rescued"),
        ignored=n("ignored"),
    )


def _recap_line(host: str, c: RecapCounts) -> str:
    return (
        f"{host} : ok={c.ok} changed={c.changed} unreachable={c.unreachable} "
        f"failed={c.failed} skipped={c.skipped} rescued={c.rescued} ignored={c.ignored}"
    )


def _message(result: Any) -> str:
    """A failed result in one line: its msg, the first failed loop item's msg when the msg
    only says that items failed, and a command's stderr."""
    if not isinstance(result, dict):
        return str(result)[:MAX_DETAIL]
    msg = str(result.get("msg") or "").strip()
    items = [r for r in result.get("results") or [] if isinstance(r, dict) and r.get("failed")]
    if items:
        msg = (
            f"{msg} ({items[0].get('item')!r}: {_message(items[0])})" if msg else _message(items[0])
        )
    stderr = str(result.get("stderr") or "").strip()
    if stderr and stderr not in msg:
        msg = f"{msg}: {stderr}" if msg else stderr
    return " ".join(msg.split())[:MAX_DETAIL] or "(no message)"


__all__ = [
    "PlaybookEvent",
    "PlaybookEvents",
    "RecapCounts",
    "TaskFailed",
    "TaskStarted",
]
