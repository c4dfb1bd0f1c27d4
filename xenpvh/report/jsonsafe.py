"""Turn whatever a verdict's meta holds into plain JSON values (never a TypeError)."""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import PurePath
from typing import Final

log = logging.getLogger(__name__)

JSONValue = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]

# Deeper structures are a bug or hostile; they are cut to their string form.
MAX_DEPTH: Final = 32


def json_safe(value: object) -> JSONValue:
    """A JSON-serialisable copy of `value`: containers recurse, known types convert, any
    other object becomes its str().  Non-finite floats become strings ("nan", "inf"), which
    strict JSON parsers would reject as numbers."""
    return _safe(value, 0, set())


def _safe(value: object, depth: int, seen: set[int]) -> JSONValue:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, enum.Enum):
        return _safe(value.value, depth, seen)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if depth >= MAX_DEPTH or id(value) in seen:
        return _text(value)
    seen = seen | {id(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _safe(getattr(value, f.name), depth + 1, seen)
            for f in dataclasses.fields(value)
        }
    if isinstance(value, Mapping):
        return {str(k): _safe(v, depth + 1, seen) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(v, depth + 1, seen) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_safe(v, depth + 1, seen) for v in value), key=str)
    return _text(value)


def _text(value: object) -> str:
    try:
        return str(value)
    except Exception as e:  # a broken __str__ must not lose the whole report
        log.debug("unprintable %s in report meta: %s", type(value).__name__, e)
        return f"<unprintable {type(value).__name__}>"


__all__ = ["JSONValue", "json_safe"]
