"""Guest console capture: `xl console` on a pty, with the xenconsoled log as a fallback.

The capture is attached while the domain is still paused (create paused -> attach ->
unpause) so the first byte the guest prints is seen.  Bytes are read incrementally with
short timeouts and handed to the caller; a raw copy goes to console.log, capped so a guest
that floods its console cannot fill our disk.

When the `xl console` client dies (ssh channel dropped, someone else took the single console
slot, the domain went away) the capture switches to tailing xenconsoled's per-guest log,
which xenconsoled writes independently of any client.  That log also recovers the tail a
crashing guest printed just before `on_crash="destroy"` removed it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

import pexpect

from xenpvh.errors import BrokenError
from xenpvh.host.base import Host
from xenpvh.toolstack.domain import Domain, check_domain_name, xl_domain_exists

MAX_LOG_BYTES = 64 * 1024 * 1024
# Bytes asked for per read: large enough to drain a fast console, small enough to bound
# the latency of one call.
READ_CHUNK = 64 * 1024
CONSOLED_LOG_DIR = "/var/log/xen/console"


class ConsoleSource(StrEnum):
    CLIENT = "xl-console"  # live pty client
    LOG = "xenconsoled-log"  # tail of /var/log/xen/console/guest-<name>.log
    ENDED = "ended"  # nothing more will come


def skip_ignoring_cr(data: bytes, n: int) -> int:
    """Index in `data` after its first `n` non-CR bytes (len(data) when it has fewer).

    The pty may add or drop carriage returns, so positions are compared on the CR-free
    byte count, which xenconsoled's raw log and the pty stream share.
    """
    if n <= 0:
        return 0
    seen = 0
    for i, b in enumerate(data):
        if b != 0x0D:
            seen += 1
            if seen == n:
                return i + 1
    return len(data)


class ConsoleCapture:
    """Reads one domain's console; use as a context manager or call start()/close().

    `read(timeout)` returns the bytes available now (b"" if none arrived within `timeout`)
    and switches sources transparently.  `ended` is True once the domain is gone and every
    byte of its log has been delivered.
    """

    def __init__(
        self,
        host: Host,
        domain: Domain,
        *,
        log_path: Path | None = None,
        max_log_bytes: int = MAX_LOG_BYTES,
        on_data: Callable[[bytes], None] | None = None,
        consoled_log_dir: str = CONSOLED_LOG_DIR,
        domain_alive: Callable[[], bool] | None = None,
        log_poll_interval: float = 0.5,
        attach_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.domain = domain
        check_domain_name(domain.name)
        self.log_path = log_path
        self.max_log_bytes = max_log_bytes
        self.on_data = on_data
        self.consoled_log = f"{consoled_log_dir}/guest-{domain.name}.log"
        self._domain_alive = domain_alive or self._xl_domain_alive
        self.log_poll_interval = log_poll_interval
        self.attach_timeout = attach_timeout

        self.source = ConsoleSource.CLIENT
        self.fallback_reason = ""
        self.bytes_total = 0
        self.bytes_logged = 0
        self.truncated = False
        self._noncr_seen = 0  # CR-free bytes delivered so far (to resync with the log)
        self._log_offset: int | None = None  # next raw byte of the xenconsoled log
        self._next_log_poll = 0.0
        self._child: pexpect.spawnbase.SpawnBase | None = None
        self._file: BinaryIO | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> ConsoleCapture:
        """Spawn `xl console` and wait until it holds the domain's console lock."""
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.log_path.open("wb")
        self._child = self.host.spawn(
            ["xl", "console", "-t", "pv", self.domain.name], timeout=self.attach_timeout
        )
        self._wait_attached()
        return self

    def _wait_attached(self) -> None:
        # xenconsole takes /var/lock/xenconsole.<domid> before it opens the pty; seeing the
        # lock is the earliest proof it is attached.  Output it prints meanwhile is kept.
        lock = f"/var/lock/xenconsole.{self.domain.domid}"
        deadline = time.monotonic() + self.attach_timeout
        while time.monotonic() < deadline:
            if self.host.run(["test", "-e", lock], timeout=10).ok:
                return
            if not self._client_read(0.1) and self._child is None:
                break
        if self._child is None:
            raise BrokenError(
                f"`xl console {self.domain.name}` exited at once ({self.fallback_reason})"
            )
        raise BrokenError(
            f"`xl console {self.domain.name}` did not take {lock} within {self.attach_timeout:g}s"
        )

    def close(self) -> None:
        if self._child is not None:
            # Closing a dead channel must not mask the run's real outcome.
            with contextlib.suppress(Exception):
                self._child.close()
            self._child = None
        if self._file is not None:
            if self.truncated:
                dropped = self.bytes_total - self.bytes_logged
                self._file.write(
                    f"\n[xenpvh: console.log truncated at {self.bytes_logged} bytes; "
                    f"{dropped} more bytes were not saved]\n".encode()
                )
            self._file.close()
            self._file = None

    def __enter__(self) -> ConsoleCapture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def ended(self) -> bool:
        return self.source is ConsoleSource.ENDED

    # -- reading ----------------------------------------------------------------------------

    def read(self, timeout: float = 0.1) -> bytes:
        if self.source is ConsoleSource.CLIENT:
            data = self._client_read(timeout)
            if data or self.source is ConsoleSource.CLIENT:
                return data
        if self.source is ConsoleSource.LOG:
            return self._log_read(timeout)
        return b""

    def __iter__(self):
        """Yield chunks until the console ended (callers usually prefer read())."""
        while not self.ended:
            data = self.read(0.2)
            if data:
                yield data

    def _client_read(self, timeout: float) -> bytes:
        child = self._child
        if child is None:
            return b""
        try:
            data = child.read_nonblocking(READ_CHUNK, timeout)
        except pexpect.TIMEOUT:
            return b""
        except (pexpect.EOF, OSError) as e:
            self._client_died(f"console client ended: {type(e).__name__}")
            return b""
        if not data:
            # SocketSpawn returns b"" on a closed channel instead of raising EOF.
            if not child.isalive():
                self._client_died("console client ended")
            return b""
        return self._deliver(data)

    def _client_died(self, why: str) -> None:
        if self._child is not None:
            with contextlib.suppress(Exception):
                self._child.close()
            self._child = None
        self.fallback_reason = why
        # Always consult the log: it may hold bytes the client never forwarded (the tail of
        # a crash) and, if the domain is still running, is now our only source.
        self.source = ConsoleSource.LOG
        self._next_log_poll = 0.0

    def _log_read(self, timeout: float) -> bytes:
        now = time.monotonic()
        if now < self._next_log_poll:
            time.sleep(min(timeout, self._next_log_poll - now))
            return b""
        self._next_log_poll = now + self.log_poll_interval
        # Ask whether the domain lives *before* reading, so a final read after its death
        # cannot miss bytes written between the two.
        alive = self._domain_alive()
        data = self._fetch_log()
        if data is None:
            if not alive:
                self.source = ConsoleSource.ENDED
            elif self._log_offset is None and "no log" not in self.fallback_reason:
                self.fallback_reason += f"; no xenconsoled log at {self.consoled_log}"
            return b""
        if not alive:
            self.source = ConsoleSource.ENDED
        return self._deliver(data) if data else b""

    def _fetch_log(self) -> bytes | None:
        """New bytes of the xenconsoled log, or None when it does not exist."""
        if self._log_offset is None:
            r = self.host.run(["cat", "--", self.consoled_log], timeout=60)
            if not r.ok:
                return None
            start = skip_ignoring_cr(r.stdout, self._noncr_seen)
            self._log_offset = len(r.stdout)
            return r.stdout[start:]
        # tail -c +N prints from byte N (1-based): only what is new.
        r = self.host.run(["tail", "-c", f"+{self._log_offset + 1}", "--", self.consoled_log])
        if not r.ok:
            return None
        self._log_offset += len(r.stdout)
        return r.stdout

    def _xl_domain_alive(self) -> bool:
        return xl_domain_exists(self.host, self.domain.name)

    def _deliver(self, data: bytes) -> bytes:
        self.bytes_total += len(data)
        self._noncr_seen += len(data) - data.count(b"\r")
        if self._file is not None:
            room = self.max_log_bytes - self.bytes_logged
            if room > 0:
                part = data[:room]
                self._file.write(part)
                self._file.flush()
                self.bytes_logged += len(part)
            if len(data) > max(room, 0):
                self.truncated = True
        if self.on_data is not None:
            self.on_data(data)
        return data


__all__ = [
    "CONSOLED_LOG_DIR",
    "MAX_LOG_BYTES",
    "ConsoleCapture",
    "ConsoleSource",
    "skip_ignoring_cr",
]
