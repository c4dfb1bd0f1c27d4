"""Exceptions that map onto verdicts.

`BlockedError` means our input is wrong (bad profile, missing kernel, unsupported Xen
version): never retried.  `BrokenError` means the infrastructure failed (host unreachable,
xenstored dead, QEMU died): retryable.  Guest misbehaviour is never an exception; it is a
`fail` verdict produced by the checker.
"""

from __future__ import annotations


class XenpvhError(Exception):
    """Base class for every error xenpvh raises on purpose."""


class BlockedError(XenpvhError):
    """Our input is wrong; the run cannot start.  Verdict `blocked`."""


class BrokenError(XenpvhError):
    """Infrastructure failure (host, toolstack, xenstored).  Verdict `broken`."""


class ProfileError(BlockedError):
    """A guest profile is malformed; the message names the file and key."""


class RenderError(BlockedError):
    """A value cannot be rendered safely (injection) or the Xen version is unsupported."""


class CommandFailed(BrokenError):
    """A command on a host exited non-zero where success was required."""

    def __init__(self, argv: list[str] | tuple[str, ...], exit_status: int, stderr: str) -> None:
        self.argv = tuple(argv)
        self.exit_status = exit_status
        self.stderr = stderr
        tail = stderr.strip().splitlines()[-5:]
        super().__init__(
            f"command {' '.join(self.argv)!r} exited {exit_status}: " + " | ".join(tail)
        )
