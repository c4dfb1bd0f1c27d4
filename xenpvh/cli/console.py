"""What the CLI shows: the live stage checklist, the text timeline, errors on one line.

Presentation only (rich lives here and nowhere in the library): it consumes the Session's
typed events and results.  Guest text is hostile and goes through `terminal_safe`.
"""

from __future__ import annotations

import re
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from xenpvh.check.verdict import StageStatus, Verdict, VerdictValue

_STATUS_STYLE = {
    StageStatus.PASSED: ("✔", "green"),
    StageStatus.FAILED: ("✘", "bold red"),
    StageStatus.NOT_REACHED: ("·", "dim"),
}
_VERDICT_STYLE = {
    VerdictValue.PASS: "bold green",
    VerdictValue.FAIL: "bold red",
    VerdictValue.BROKEN: "bold magenta",
    VerdictValue.BLOCKED: "bold yellow",
}
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str, limit: int = 200) -> str:
    """Guest output is hostile: never let it drive the user's terminal (escapes, bells)."""
    text = _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fmt_t(t: float | None) -> str:
    return "" if t is None else f"{t:8.2f}s"


def render_timeline(verdict: Verdict) -> Group:
    """The readable stage timeline of `xenpvh check` / `xenpvh boot` (text format)."""
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("", width=1)
    table.add_column("stage")
    table.add_column("t", justify="right")
    table.add_column("evidence / detail", overflow="fold")
    for s in verdict.stages:
        mark, style = _STATUS_STYLE[s.status]
        what = s.detail if s.status != StageStatus.PASSED and s.detail else s.evidence
        if s.status == StageStatus.PASSED and s.detail:
            what = f"{what}  [{s.detail}]" if what else s.detail  # e.g. unverified devices
        table.add_row(
            Text(mark, style=style),
            Text(s.name, style=style),
            _fmt_t(s.t),
            Text(terminal_safe(what)),
        )
    head = Text.assemble(
        ("verdict: ", "bold"),
        (str(verdict.verdict), _VERDICT_STYLE[verdict.verdict]),
        (f"  (stage {verdict.failed_stage})" if verdict.failed_stage else "", "bold"),
    )
    parts: list[Any] = [table, head, Text("reason: ") + Text(terminal_safe(verdict.reason, 400))]
    notices = verdict.meta.get("notices") if verdict.meta else None
    if isinstance(notices, list):
        total = verdict.meta.get("notices_total", len(notices))
        parts.append(Text(f"notices (recorded, not failed): {total}"))
        for n in notices[:5]:
            if isinstance(n, dict):
                where = f"line {n.get('line')}: " if n.get("line") else ""
                text = f"  {n.get('name')}: {where}{n.get('evidence', '')}"
                parts.append(Text(terminal_safe(text, 300)))
    artifacts = verdict.meta.get("artifacts") if verdict.meta else None
    if artifacts:
        parts.append(Text(f"artifacts: {artifacts}"))
    return Group(*parts)


class LiveChecklist:
    """Draws the live stage checklist from run and stage events (see xenpvh.run.events)."""

    def __init__(self, stages: list[str], console: Console) -> None:
        self.stages = stages
        self.status: dict[str, tuple[str, float | None, str]] = {
            s: ("waiting", None, "") for s in stages
        }
        self.run_state = "starting"
        self.console = console
        self.started = time.monotonic()
        self._live = Live(self._render(), console=console, refresh_per_second=4, transient=False)

    def __enter__(self) -> LiveChecklist:
        if self.console.is_terminal:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.console.is_terminal:
            self._live.update(self._render())
            self._live.__exit__(None, None, None)

    def _render(self) -> Table:
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(width=1)
        table.add_column()
        table.add_column(justify="right")
        table.add_column(overflow="fold")
        elapsed = time.monotonic() - self.started
        table.add_row("", Text(f"run: {self.run_state}", style="bold"), f"{elapsed:7.1f}s", "")
        for s in self.stages:
            st, t, line = self.status[s]
            mark, style = {
                "passed": ("✔", "green"),
                "failed": ("✘", "bold red"),
                "in progress": ("…", "cyan"),
            }.get(st, ("·", "dim"))
            table.add_row(
                Text(mark, style=style),
                Text(s, style=style),
                _fmt_t(t),
                Text(terminal_safe(line, 100)),
            )
        return table

    def __call__(self, event: object) -> None:
        kind = str(getattr(event, "kind", ""))
        stage = getattr(event, "stage", None)
        if stage in self.status:
            t = getattr(event, "t", None)
            line = getattr(event, "line", "") or getattr(event, "detail", "")
            if kind == "started":
                self.status[stage] = ("in progress", None, "")
            elif kind in ("passed", "failed"):
                self.status[stage] = (kind, t, line)
                if not self.console.is_terminal:
                    self.console.print(
                        Text(f"{kind:>7} {stage:<11} {_fmt_t(t)}  ")
                        + Text(terminal_safe(line, 120))
                    )
        elif hasattr(event, "kept_in"):  # AttemptEvent: another attempt follows
            self.console.print(
                Text(
                    f"attempt {event.number} of {event.of} broken by the host: "
                    f"{terminal_safe(event.reason, 300)}; retrying (kept in {event.kept_in})",
                    style="yellow",
                )
            )
            self.status = {s: ("waiting", None, "") for s in self.stages}
        elif hasattr(event, "description") and hasattr(event, "what"):  # BuildEvent
            self.console.print(Text(f"{event.what}: {event.description}"))
        elif hasattr(event, "verdict") and hasattr(event, "failed_stage"):
            # The verdict is known and written: say it now, the destroy takes a few seconds.
            where = f" at {event.failed_stage}" if event.failed_stage else ""
            self.run_state = f"{event.verdict}{where} (destroying the guest)"
            if not self.console.is_terminal:
                self.console.print(
                    Text(f"verdict: {event.verdict}{where}: {terminal_safe(event.reason)}")
                )
        elif hasattr(event, "state"):
            self.run_state = str(event.state)
            detail = getattr(event, "detail", "")
            if not self.console.is_terminal:
                self.console.print(Text(f"run: {self.run_state} {terminal_safe(detail)}"))
        if self.console.is_terminal:
            self._live.update(self._render())


def err_console() -> Console:
    # soft_wrap: an error is one line however long (CI logs are grepped, not read at 80 cols).
    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_error(console: Console, kind: str, exc: BaseException | str) -> None:
    """`blocked: <why>` (or broken:/error:) on one line, then the exception's notes."""
    style = {"blocked": "bold yellow", "broken": "bold magenta"}.get(kind, "bold red")
    console.print(f"[{style}]{kind}:[/{style}] {escape(_one_line(str(exc)))}", soft_wrap=True)
    for note in getattr(exc, "__notes__", ()):
        console.print(escape(_one_line(str(note))), soft_wrap=True)


def _one_line(text: str) -> str:
    return " ".join(text.split("\n")) if "\n" in text else text
