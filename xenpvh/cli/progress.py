"""Drawing the library's progress events (`xenpvh.util.progress`) with rich.

`ProgressView` is a `ProgressSink`: each task is a row (a spinner, then ✔ or ✘; its label, a
bar when its size is known, its elapsed time and its latest output line), a `Status` is a
spinner line under the rows, a `Note` goes to `console.log`.  The rows are drawn by a rich
Live display that starts with the first task or status and stops when none is left (its rows
stay on the screen), so a view can be handed to long-lived objects (a nested host) without
holding the terminal between their steps.  Use it as a context manager where an exception
may leave a task open; `close()` stops the display.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.spinner import Spinner
from rich.text import Text

from xenpvh.util.progress import (
    Note,
    ProgressEvent,
    ProgressSink,
    Status,
    TaskAdvanced,
    TaskFinished,
    TaskStarted,
)

# The latest output line is cut to this many characters (build output lines are long).
DETAIL_WIDTH = 120


class _DetailColumn(ProgressColumn):
    """The last line a step printed, as plain text: build output is full of brackets that
    rich would otherwise read as markup."""

    def render(self, task: Task) -> Text:
        detail = task.fields.get("detail", "")
        return Text(str(detail), style="dim", no_wrap=True, overflow="ellipsis")


class _StatusColumn(SpinnerColumn):
    """A spinner while a step runs, then ✔ — or ✘ for the step that failed."""

    def render(self, task: Task) -> RenderableType:
        if task.fields.get("failed"):
            return Text("✘", style="bold red")
        if task.finished:
            return Text("✔", style="green")
        return super().render(task)


class _Rows(Progress):
    """The task rows, and the current status line under them."""

    status: Text | None = None

    def get_renderables(self) -> Iterable[RenderableType]:
        yield from super().get_renderables()
        if self.status is not None:
            yield Spinner("dots", self.status, style="cyan")


def default_console() -> Console:
    """Where progress goes when nobody says: stderr (stdout carries results)."""
    return Console(stderr=True, highlight=False)


def make_progress(console: Console | None = None) -> Progress:
    """Rows for download, patch, configure and build: a spinner, the step, its elapsed time
    and the step's latest output line."""
    return _Rows(
        _StatusColumn(),
        TextColumn("{task.description}", markup=False),
        BarColumn(bar_width=12),
        TimeElapsedColumn(),
        _DetailColumn(),
        console=console or default_console(),
        transient=False,
    )


class ProgressView:
    """A ProgressSink that draws the events on `console` (see the module's docstring)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or default_console()
        self._rows: _Rows | None = None
        self._tasks: dict[int, TaskID] = {}
        self._running: set[int] = set()
        # Library work may report from a worker thread (a watched command).
        self._lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            if isinstance(event, Note):
                self.console.log(Text(event.text))
            elif isinstance(event, Status):
                self._status(event.text)
            elif isinstance(event, TaskStarted):
                self._started(event)
            elif isinstance(event, TaskAdvanced):
                self._advanced(event)
            elif isinstance(event, TaskFinished):
                self._finished(event)
            self._stop_when_idle()

    def _shown(self) -> _Rows:
        if self._rows is None:
            rows = make_progress(self.console)
            assert isinstance(rows, _Rows)
            rows.start()
            self._rows, self._tasks = rows, {}
        return self._rows

    def _status(self, text: str) -> None:
        if text:
            self._shown().status = Text(text, no_wrap=True, overflow="ellipsis")
        elif self._rows is not None:
            self._rows.status = None

    def _started(self, event: TaskStarted) -> None:
        rows = self._shown()
        self._tasks[event.task] = rows.add_task(event.label, total=event.total, detail="")
        self._running.add(event.task)

    def _advanced(self, event: TaskAdvanced) -> None:
        tid = self._tasks.get(event.task)
        if self._rows is None or tid is None:
            return
        fields: dict[str, object] = {}
        if event.detail:
            fields["detail"] = event.detail.strip()[:DETAIL_WIDTH]
        self._rows.update(
            tid, completed=event.completed, description=event.label, **fields
        )  # None leaves a value as it was

    def _finished(self, event: TaskFinished) -> None:
        self._running.discard(event.task)
        tid = self._tasks.get(event.task)
        if self._rows is None or tid is None:
            return
        rows = self._rows
        if event.label is not None:
            rows.update(tid, description=event.label)
        if event.ok:
            total = next((t.total for t in rows.tasks if t.id == tid), None)
            rows.update(tid, total=total or 1, completed=total or 1, detail="")
        else:
            # Stopped, not finished: its elapsed time stays at the moment it failed.
            rows.update(tid, failed=True)
            rows.stop_task(tid)

    def _stop_when_idle(self) -> None:
        rows = self._rows
        if rows is not None and not self._running and rows.status is None:
            rows.stop()
            self._rows = None

    def close(self) -> None:
        """Stop the display (its rows stay on the screen)."""
        with self._lock:
            if self._rows is not None:
                self._rows.stop()
                self._rows = None
            self._running.clear()

    def __enter__(self) -> ProgressView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def view_for(console: Console | None) -> ProgressSink | None:
    """A view drawing on `console`, or None (nobody listens) without one."""
    return ProgressView(console) if console is not None else None


__all__ = ["DETAIL_WIDTH", "ProgressView", "default_console", "make_progress", "view_for"]
