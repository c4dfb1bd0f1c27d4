"""The console as the HTML report shows it: numbered lines, bounded in memory.

Lines are numbered exactly as the stage checker counts them (its `LineSplitter`: CR, LF
and CRLF each end a line, ANSI escapes removed), so a stage's `line` is an anchor here.
Whatever the console's size, at most `max_bytes` of text and `max_lines` lines are kept: the
head and the tail of the console (where a boot's failure usually is), with the count of the
lines between them, which are streamed through once only to keep the tail's numbers true.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from xenpvh.check.lines import ANSI_RE, LineSplitter

log = logging.getLogger(__name__)

MAX_CONSOLE_BYTES: Final = 8 * 1024 * 1024  # characters of console text kept
MAX_CONSOLE_LINES: Final = 50_000
MAX_LINE_CHARS: Final = 2000  # longer lines are cut, with a marker
# Beyond this a console is not even scanned (console.log itself is capped at 64 MiB).
MAX_SCAN_BYTES: Final = 256 * 1024 * 1024
_CHUNK: Final = 1024 * 1024


@dataclass(frozen=True)
class ConsoleLine:
    number: int  # 1-based, as the checker counts
    text: str  # raw text (ANSI stripped, not escaped): the template escapes it
    cut: bool = False  # the line was longer than MAX_LINE_CHARS


@dataclass(frozen=True)
class ConsoleView:
    lines: tuple[ConsoleLine, ...] = ()
    total_lines: int = 0  # lines counted (shown or not)
    omitted: int = 0  # lines between the head and the tail not shown
    scan_cut: bool = False  # the console was longer than MAX_SCAN_BYTES; the rest not seen
    source: str | None = None  # file name the lines came from

    def find(self, text: str, start: int = 0) -> int | None:
        """Number of the first shown line at or after line `start` containing `text`."""
        if not text:
            return None
        for line in self.lines:
            if line.number >= start and text in line.text:
                return line.number
        return None

    def shows(self, number: int | None) -> bool:
        return number is not None and any(line.number == number for line in self.lines)


class _Collector:
    """Keeps the head until half the budget is used, then a rolling tail."""

    def __init__(self, max_bytes: int, max_lines: int, max_line_chars: int) -> None:
        self.head_bytes = self.tail_bytes = max_bytes // 2
        self.head_lines = self.tail_lines = max(max_lines // 2, 1)
        self.max_line_chars = max_line_chars
        self.head: list[ConsoleLine] = []
        self.tail: deque[ConsoleLine] = deque()
        self.head_full = False
        self.head_used = self.tail_used = 0
        self.count = 0

    def add(self, text: str) -> None:
        self.count += 1
        cut = len(text) > self.max_line_chars
        line = ConsoleLine(self.count, text[: self.max_line_chars] if cut else text, cut)
        size = len(line.text) + 1
        if not self.head_full:
            if self.head_used + size <= self.head_bytes and len(self.head) < self.head_lines:
                self.head.append(line)
                self.head_used += size
                return
            self.head_full = True
        self.tail.append(line)
        self.tail_used += size
        while self.tail and (self.tail_used > self.tail_bytes or len(self.tail) > self.tail_lines):
            self.tail_used -= len(self.tail.popleft().text) + 1

    def view(self, scan_cut: bool, source: str | None) -> ConsoleView:
        shown = len(self.head) + len(self.tail)
        return ConsoleView(
            lines=(*self.head, *self.tail),
            total_lines=self.count,
            omitted=self.count - shown,
            scan_cut=scan_cut,
            source=source,
        )


def read_console(
    path: Path,
    *,
    max_bytes: int = MAX_CONSOLE_BYTES,
    max_lines: int = MAX_CONSOLE_LINES,
    max_line_chars: int = MAX_LINE_CHARS,
    max_scan_bytes: int = MAX_SCAN_BYTES,
) -> ConsoleView:
    """The console log at `path`, bounded; a missing or unreadable log is an empty view."""
    keep = _Collector(max_bytes, max_lines, max_line_chars)
    # One character over the cap tells a cut line from one exactly at the cap.
    splitter = LineSplitter(max_line=max_line_chars + 1)
    scanned = 0
    try:
        with path.open("rb") as f:
            while scanned < max_scan_bytes and (chunk := f.read(_CHUNK)):
                chunk = chunk[: max_scan_bytes - scanned]
                scanned += len(chunk)
                _add_block(keep, splitter.feed(chunk))
            scan_cut = bool(f.read(1))
    except OSError as e:
        log.warning("console %s not shown: %s", path, e)
        return ConsoleView(source=path.name)
    _add_block(keep, splitter.flush())
    return keep.view(scan_cut, path.name)


def console_from_lines(
    lines: Iterable[str],
    *,
    max_bytes: int = MAX_CONSOLE_BYTES,
    max_lines: int = MAX_CONSOLE_LINES,
    max_line_chars: int = MAX_LINE_CHARS,
) -> ConsoleView:
    """Already split lines (numbered from 1), under the same bounds as read_console."""
    keep = _Collector(max_bytes, max_lines, max_line_chars)
    for line in lines:
        text = line[: max_line_chars + 1].rstrip("\r\n")
        keep.add(ANSI_RE.sub("", text) if "\x1b" in text else text)
    return keep.view(False, None)


def _add_block(keep: _Collector, block: str) -> None:
    for text in _lines(block):
        keep.add(text)


def _lines(block: str) -> Iterator[str]:
    if not block:
        return
    # A block is complete lines, each ending in "\n".
    yield from block[:-1].split("\n")


__all__ = [
    "MAX_CONSOLE_BYTES",
    "MAX_CONSOLE_LINES",
    "MAX_LINE_CHARS",
    "ConsoleLine",
    "ConsoleView",
    "console_from_lines",
    "read_console",
]
