"""Timestamps as the reports print them (always UTC)."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(epoch: float) -> str:
    """ISO 8601 with milliseconds and a Z: "2025-01-31T12:00:00.250Z"."""
    stamp = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return stamp.removesuffix("+00:00") + "Z"


def junit_timestamp(epoch: float) -> str:
    """JUnit's timestamp: ISO 8601 to the second without a zone (the Ant schema's form);
    the value is UTC."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S")


__all__ = ["iso_utc", "junit_timestamp"]
