"""The Host protocol: where commands run and files go.

Every toolstack reaches Xen through a Host, so the same Xl/Libvirt/XenStore code drives a
nested QEMU host, an ssh lab box and the dom0 you sit on.  Arguments are always argv lists;
implementations that must pass through a shell quote them with `shlex.join` — never a
string built from unquoted input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from pexpect.spawnbase import SpawnBase

from xenpvh.errors import BlockedError, CommandFailed


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_status: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def check(self) -> CommandResult:
        if self.exit_status != 0:
            raise CommandFailed(self.argv, self.exit_status, self.err)
        return self


class ByteStream(Protocol):
    """A bidirectional byte pipe to a remote process's stdin/stdout (socket-like)."""

    def sendall(self, data: bytes) -> None: ...
    def recv(self, n: int) -> bytes: ...
    def settimeout(self, timeout: float | None) -> None: ...
    def close(self) -> None: ...


@runtime_checkable
class Host(Protocol):
    """A machine running Xen's dom0 (or a build host)."""

    name: str

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 120.0,
        input: bytes | None = None,
        check: bool = False,
    ) -> CommandResult:
        """Run argv to completion.  Raises BrokenError on transport failure or timeout."""
        ...

    def put(self, local: Path, remote: str, *, mode: int | None = None) -> bool:
        """Copy a file to the host; returns False when the remote copy already had the same
        sha256 and nothing was transferred."""
        ...

    def put_bytes(self, data: bytes, remote: str, *, mode: int = 0o644) -> None: ...

    def get(self, remote: str, local: Path) -> None: ...

    def spawn(self, argv: Sequence[str], *, timeout: float = 30.0) -> SpawnBase:
        """Start argv on a pty (a console client) and return a bytes-mode pexpect object."""
        ...

    def open_stream(self, argv: Sequence[str]) -> ByteStream:
        """Start argv with stdin/stdout connected to a byte pipe (no pty)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class EmulationFault:
    """A console signature that, on this host, is the host's fault rather than the guest's.

    A nested host under QEMU/TCG emulates SVM in software, and that emulation has bugs a
    real CPU does not: a guest that crashes with such a signature there says nothing about
    the guest, so its run is `broken` (infrastructure, retryable), not `fail`.  Real hosts
    declare none, so the same line on a lab box stays a guest failure.
    """

    name: str
    pattern: str  # a regular expression matched against console lines: the trigger
    why: str
    # A judge of `xenpvh.check.faults` that must confirm the fault from the whole console
    # once the trigger matched; None: the trigger alone decides.
    confirm: str | None = None


def emulation_faults(host: object) -> tuple[EmulationFault, ...]:
    """The faults a host declares (none unless it has an `emulation_faults` attribute)."""
    faults = getattr(host, "emulation_faults", ())
    return tuple(faults) if isinstance(faults, tuple | list) else ()


def argv_list(argv: Sequence[str]) -> list[str]:
    """A command as the list of strings every Host runs; BlockedError for a shell string or
    an empty command."""
    if isinstance(argv, str | bytes) or not argv:
        raise BlockedError(f"a command must be a non-empty argv list, not {argv!r}")
    return [str(a) for a in argv]
