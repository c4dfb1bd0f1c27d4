"""Console bytes -> normalised text of complete lines, with bounded memory.

Guest console output is hostile: chunks split anywhere (mid-UTF-8, mid-CRLF), lines may
never end, escape sequences decorate text.  `LineSplitter` turns a byte stream into blocks
of complete lines (each ending in "\\n", capped at `MAX_LINE` chars, ANSI escapes removed)
plus the current partial line, so the checker can scan whole blocks at C speed.
"""

from __future__ import annotations

import codecs
import re
from datetime import datetime

MAX_LINE = 64 * 1024  # characters kept per line; the rest of an overlong line is dropped

# CSI (colours, cursor moves), OSC (titles) and two-byte escapes.  None of them spans "\n",
# so stripping a block of lines equals stripping each line.
ANSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b\n]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")

# Timestamp prefixes added by the kernel, `xl console` loggers or Xen itself.
_PREFIX_RE = re.compile(
    r"(?:\(XEN\) )?"
    r"(?:\[\s*(?P<mono>\d+\.\d+)\] ?"
    r"|\[(?P<wall>\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d+)?)\] ?)?"
)


def strip_prefix(line: str) -> tuple[str, float | None]:
    """Remove a timestamp / `(XEN) ` prefix; return the rest and the stamp in seconds."""
    m = _PREFIX_RE.match(line)
    if m is None or not m.end():
        return line, None
    stamp: float | None = None
    if m.group("mono") is not None:
        stamp = float(m.group("mono"))
    elif m.group("wall") is not None:
        try:
            stamp = datetime.fromisoformat(m.group("wall")).timestamp()
        except ValueError:
            stamp = None
    return line[m.end() :], stamp


class LineSplitter:
    """Incremental bytes -> (block of complete lines, partial line).

    CR LF, bare CR and LF all end a line.  A CR at the very end of a chunk ends the line at
    once; an LF starting the next chunk is then the same line end and is dropped.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""  # the current incomplete line (raw, capped)
        self._skip_lf = False  # last chunk ended in CR
        self._discarding = False  # the current line overflowed: drop until its end

    @property
    def overflowed(self) -> bool:
        """The current line passed the cap; its remainder is being dropped."""
        return self._discarding

    @property
    def partial(self) -> str:
        """The current incomplete line, ANSI-stripped (e.g. a `login: ` prompt)."""
        p = self._pending
        return ANSI_RE.sub("", p) if "\x1b" in p else p

    def feed(self, data: bytes) -> str:
        """Consume bytes; return the newly completed lines as one block ("" if none)."""
        return self._text(self._decoder.decode(data))

    def flush(self) -> str:
        """End of stream: the partial line (if any) becomes a complete line."""
        text = self._text(self._decoder.decode(b"", final=True))
        if self._pending:
            text += self._finish_block(self._pending + "\n")
            self._pending = ""
        self._discarding = False
        return text

    def _text(self, text: str) -> str:
        if not text:
            return ""
        if self._skip_lf:
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
        if "\r" in text:
            if text[-1] == "\r":
                self._skip_lf = True
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        cut = text.rfind("\n")
        if cut < 0:
            self._append_pending(text)
            return ""
        head, tail = text[: cut + 1], text[cut + 1 :]
        if self._discarding:
            nl = head.find("\n")
            head = self._pending + "\n" + head[nl + 1 :]
            self._discarding = False
        else:
            head = self._pending + head
        self._pending = ""
        self._append_pending(tail)
        return self._finish_block(head)

    def _append_pending(self, text: str) -> None:
        if self._discarding or not text:
            return
        self._pending += text
        if len(self._pending) > self.max_line:
            self._pending = self._pending[: self.max_line]
            self._discarding = True

    def _may_have_long_line(self, block: str) -> bool:
        """Cheap test: a line longer than the cap leaves some aligned window of a quarter
        of the cap without a newline, so only then is the exact (split) check needed."""
        w = max(self.max_line // 4, 1)
        return any(block.find("\n", k, k + w) < 0 for k in range(0, len(block) - w + 1, w))

    def _finish_block(self, block: str) -> str:
        cap = self.max_line
        if (
            len(block) > cap + 1
            and self._may_have_long_line(block)
            and (max(map(len, block.split("\n"))) > cap)
        ):
            block = "\n".join(line[:cap] for line in block.split("\n"))
        if "\x1b" in block:
            block = ANSI_RE.sub("", block)
        return block


__all__ = ["ANSI_RE", "MAX_LINE", "LineSplitter", "strip_prefix"]
