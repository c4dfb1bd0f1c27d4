"""Console sources: a guest's console read from Xen's own serial line, made the guest's again.

On Xen's serial line every line a guest writes through Xen (HYPERVISOR_console_io, the HVM
debug port) is printed by `guest_printk()` (xen/drivers/char/console.c): Xen buffers the
guest's text until its newline, drops the characters that are not `isprint()` (so a colour
code's ESC goes and its `[0;32m` stays), and starts the line with `printk_start_of_line()`:
the prefix `(d<domid>) `, then -- with `console_timestamps=` -- one of
`[YYYY-MM-DD HH:MM:SS] `, `[YYYY-MM-DD HH:MM:SS.mmm] `, `[%5u.%06u] ` (seconds since boot)
or `[%016x] ` (raw cycles).  Xen's own lines carry `(XEN) ` instead; the hardware domain's
direct output and other domains' `(dM) ` lines interleave.

`XenSerialFilter` takes such a stream and gives back the guest's console as `xl console`
would have shown it: the guest's lines without Xen's prefix and timestamp (times come from
the guest's own stamps, as on its xl console: Xen's clock and the guest's do not mix),
colour-code remnants removed; every other line is host evidence (`host_lines`, bounded).

Limits: Xen cuts a guest line longer than its 200-character buffer into several lines, and a
guest's unfinished line (a `login: ` prompt) reaches the serial line only with its newline;
neither can be undone here.
"""

from __future__ import annotations

import re
from collections import deque

XL = "xl"  # the guest's own console (xl console, virsh console, a console log)
XEN_SERIAL = "xen-serial"  # Xen's serial line: guest lines prefixed (dN)
CONSOLE_SOURCES = (XL, XEN_SERIAL)

HOST_LINES_MAX = 2000  # Xen / other-domain lines kept as host evidence
_LINE_MAX = 64 * 1024  # bytes kept of one serial line (the checker caps lines the same)

_PREFIX = re.compile(rb"\((?:XEN|d(\d{1,5}))\) ")
_XEN_STAMP = re.compile(
    rb"\[(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{3})?|(?P<boot>[ \d]{5,}\.\d{6})|[0-9a-f]{16})\] "
)
# What a guest's SGR colour code ("\x1b[0;32m") is once Xen dropped its ESC.
_SGR_REMNANT = re.compile(rb"\[\d+(?:;\d+)*m")


class XenSerialFilter:
    """Xen serial bytes in, the guest's console bytes out (whole lines; see module doc).

    `domid=None` follows the first guest domain (not dom0) that prints a prefixed line.
    """

    def __init__(self, domid: int | None = None) -> None:
        if domid is not None and (isinstance(domid, bool) or domid < 0):
            raise ValueError(f"domid must be an integer >= 0, got {domid!r}")
        self.domid = domid
        self.host_lines: deque[str] = deque(maxlen=HOST_LINES_MAX)
        self._pending = b""
        self._xen_stamps = False  # Xen's own lines carry `console_timestamps=` stamps

    def feed(self, data: bytes) -> bytes:
        """Consume serial bytes; return the guest's complete lines among them."""
        data = self._pending + data
        cut = data.rfind(b"\n")
        if cut < 0:
            self._pending = data[:_LINE_MAX]
            return b""
        self._pending = data[cut + 1 :][:_LINE_MAX]
        return b"".join(self._line(line) for line in data[: cut + 1].split(b"\n")[:-1])

    def flush(self) -> bytes:
        """End of stream: the unfinished last line, if it is the guest's (no newline)."""
        rest, self._pending = self._pending, b""
        return self._line(rest)[:-1] if rest else b""

    def _line(self, raw: bytes) -> bytes:
        """One serial line (without "\\n"): the guest's line with "\\n", or b"" (host)."""
        line = raw[:-1] if raw.endswith(b"\r") else raw  # the UART driver sends CR LF
        m = _PREFIX.match(line)
        if m is not None and m.group(1) is not None:
            dom = int(m.group(1))
            if self.domid is None and dom != 0:
                self.domid = dom
            if dom == self.domid:
                return self._guest(line[m.end() :]) + b"\n"
        elif m is not None and _XEN_STAMP.match(line, m.end()) is not None:
            self._xen_stamps = True
        self.host_lines.append(line.decode("utf-8", "replace")[:512])
        return b""

    def _guest(self, text: bytes) -> bytes:
        stamp = _XEN_STAMP.match(text)
        # Xen's boot-time stamp `[%5u.%06u] ` looks like Linux's own printk stamp: it is
        # Xen's when Xen's own lines carry stamps, or when a second stamp (the guest's)
        # follows it.  The date and raw forms are Xen's alone.
        if stamp is not None and (
            stamp.group("boot") is None
            or self._xen_stamps
            or _XEN_STAMP.match(text, stamp.end()) is not None
        ):
            text = text[stamp.end() :]
        if b"m" in text and b"[" in text:
            text = _SGR_REMNANT.sub(b"", text)
        return text


__all__ = [
    "CONSOLE_SOURCES",
    "HOST_LINES_MAX",
    "XEN_SERIAL",
    "XL",
    "XenSerialFilter",
]
