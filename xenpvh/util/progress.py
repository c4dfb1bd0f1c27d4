"""Progress as typed events: what long library work (builds, images, QEMU, provisioning, the
nested host) reports while it runs.

The library never draws: it calls a `ProgressSink` with these events.  The CLI draws them with
rich (`xenpvh/cli/progress.py`); the pytest plugin and the plan runner log them
(`log_sink`).  A sink that is None means nobody listens (`emit` then does nothing), so library
code needs no branch per caller.

A *task* is one named piece of work with a start and an end (a build phase, the dom0 image, a
playbook task); `Status` is a single line that replaces the previous one (waiting for ssh),
`Note` a line worth keeping in a log.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

_ids = itertools.count(1)


def new_task_id() -> int:
    """A process-unique task id (tasks of nested work must not collide)."""
    return next(_ids)


@dataclass(frozen=True)
class TaskStarted:
    """Task `task` began; `total` is its size in units when known (bytes, steps), else None."""

    task: int
    label: str
    total: float | None = None


@dataclass(frozen=True)
class TaskAdvanced:
    """Task `task` got further: `completed` of its total, and/or its latest output line."""

    task: int
    completed: float | None = None
    detail: str = ""
    label: str | None = None  # a new label, when the task's description changes


@dataclass(frozen=True)
class TaskFinished:
    """Task `task` ended after `elapsed` seconds; `ok` False when it raised."""

    task: int
    ok: bool
    elapsed: float
    label: str | None = None


@dataclass(frozen=True)
class Status:
    """A one-line status that replaces the previous one ("nested Xen: waiting for ssh (12s)");
    an empty `text` clears it (the wait is over)."""

    text: str


@dataclass(frozen=True)
class Note:
    """A message worth keeping (a cache hit, a host reused, a step's summary)."""

    text: str


ProgressEvent = TaskStarted | TaskAdvanced | TaskFinished | Status | Note
ProgressSink = Callable[[ProgressEvent], None]


def emit(sink: ProgressSink | None, event: ProgressEvent) -> None:
    """Hand `event` to `sink`, if anybody listens."""
    if sink is not None:
        sink(event)


@contextlib.contextmanager
def task(
    sink: ProgressSink | None, label: str, total: float | None = None
) -> Iterator[Callable[..., None]]:
    """Report one task: started now, finished when the block ends (`ok` False if it raised).

    Yields `advance(completed=None, detail="", label=None)` for the block to report progress.
    """
    tid = new_task_id()
    start = time.monotonic()
    emit(sink, TaskStarted(tid, label, total))

    def advance(completed: float | None = None, detail: str = "", label: str | None = None) -> None:
        emit(sink, TaskAdvanced(tid, completed, detail, label))

    try:
        yield advance
    except BaseException:
        emit(sink, TaskFinished(tid, False, time.monotonic() - start))
        raise
    emit(sink, TaskFinished(tid, True, time.monotonic() - start))


def log_sink(logger: logging.Logger, level: int = logging.INFO) -> ProgressSink:
    """A sink that logs what a person would want in a log: task ends, notes; no per-line
    detail (a build's output is in its own log) and no status churn."""
    labels: dict[int, str] = {}

    def sink(event: ProgressEvent) -> None:
        if isinstance(event, TaskStarted):
            labels[event.task] = event.label
            logger.log(level, "%s: started", event.label)
        elif isinstance(event, TaskAdvanced) and event.label:
            labels[event.task] = event.label
        elif isinstance(event, TaskFinished):
            label = event.label or labels.pop(event.task, f"task {event.task}")
            logger.log(
                level, "%s: %s in %.1fs", label, "done" if event.ok else "failed", event.elapsed
            )
        elif isinstance(event, Note):
            logger.log(level, "%s", event.text)

    return sink


__all__ = [
    "Note",
    "ProgressEvent",
    "ProgressSink",
    "Status",
    "TaskAdvanced",
    "TaskFinished",
    "TaskStarted",
    "emit",
    "log_sink",
    "new_task_id",
    "task",
]
