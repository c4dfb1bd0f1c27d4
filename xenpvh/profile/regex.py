"""Console patterns run on RE2, a linear-time engine: the console is hostile input.

Python's `re` backtracks: a profile pattern such as `(a+)+$` takes exponential time, and even
`\\d+\\d+x` or `\\S+ login:` take seconds to minutes on one long line a guest prints (measured
in `bench/regex.py`).  RE2 (PyPI `google-re2`) matches in time linear in the line whatever
the pattern, so no pattern in a profile can stall the checker.  Patterns RE2 cannot run
(look-arounds, back-references) are refused when the profile is loaded, naming the pattern.
"""

from __future__ import annotations

from typing import Any, Protocol

import re2

# A pattern longer than this is refused (named in the error): far above any stage marker.
MAX_PATTERN = 1024
# RE2's memory budget per compiled pattern (its default is 8 MiB).
MAX_PATTERN_MEMORY = 8 << 20

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # errors come back as exceptions, not lines on stderr
_OPTIONS.max_mem = MAX_PATTERN_MEMORY


class ConsoleRegex(Protocol):
    """What the checker uses of a compiled pattern (the `re.Pattern` subset RE2 offers)."""

    pattern: str
    groupindex: Any

    def search(self, text: str, /) -> Any: ...


class PatternError(ValueError):
    """A pattern cannot be used; the message says why (the loader adds file and key)."""


def compile_console_pattern(source: str) -> ConsoleRegex:
    """`source` compiled for matching console lines in linear time."""
    if len(source) > MAX_PATTERN:
        raise PatternError(f"{len(source)} characters; at most {MAX_PATTERN} are accepted")
    try:
        return re2.compile(source, options=_OPTIONS)  # type: ignore[no-any-return]
    except re2.error as e:
        why = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else e
        raise PatternError(
            f"not a pattern the linear-time engine (RE2) runs: {why} (look-arounds and "
            "back-references are not supported)"
        ) from None
    except (TypeError, OverflowError, RecursionError) as e:
        raise PatternError(str(e)) from None


__all__ = ["MAX_PATTERN", "ConsoleRegex", "PatternError", "compile_console_pattern"]
