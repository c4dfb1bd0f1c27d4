"""Make hostile guest text safe for XML/HTML: what XML 1.0 cannot hold becomes \\xNN."""

from __future__ import annotations

import re
from typing import Final

# Everything XML 1.0 forbids (C0 controls except TAB/LF/CR, surrogates, U+FFFE/FFFF) plus
# DEL and the C1 block, which terminals interpret as escape sequences.
_UNSAFE_RE: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def _escape(m: re.Match[str]) -> str:
    o = ord(m.group())
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def xml_safe(text: str, limit: int | None = None) -> str:
    """Replace XML-illegal characters by a visible escape; optionally cap the length."""
    if limit is not None and len(text) > limit:
        text = text[:limit] + f"... [{len(text) - limit} chars cut]"
    return _UNSAFE_RE.sub(_escape, text)
