"""A lease on a whole Xen host, stored on the host itself.

Whoever holds it (a developer with `xenpvh host lock`, a nightly plan's pool) keeps other
owners' sessions and plans off the box: they wait for it or refuse, naming the holder.

The lease is one JSON line in `<root>/host-lease`.  Every change (take, renew, release) is a
compare-and-swap run on the host in ONE command, under `flock` of `<root>/host-lease.mutex`:
the new text is written only if the file still holds exactly the text the caller read, so of
two acquirers racing for a free or expired lease exactly one wins, and a release never removes
a lease someone else took meanwhile.  The file is replaced by rename, so reads need no lock.

Times are the host's clock: a reader learns the host's `date +%s` with the lease and judges
expiry against it, so machines with skewed clocks agree on who holds the box.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.base import Host

log = logging.getLogger(__name__)

LOCK_ROOT = "/var/lib/xenpvh"
LEASE_NAME = "host-lease"
# A lease is data on the host: read at most this much of it, and bound what is shown.  An
# owner or reason longer than MAX_FIELD is refused, so a lease of ours always fits.
MAX_LEASE_BYTES = 8192
MAX_FIELD = 200
# Seconds the compare-and-swap waits for the host-side mutex before giving up.
MUTEX_WAIT = 30

# Reads the host's clock, the lease's sha256 and its first $2 bytes in one round trip ($1:
# the lease file).  A snapshot copy makes digest and text belong to the same file.
READ_SCRIPT = (
    "date +%s || exit 1\n"
    "t=$(mktemp) || exit 1\n"
    'if cat -- "$1" > "$t" 2>/dev/null; then\n'
    '  sha256sum < "$t" | cut -c1-64; head -c "$2" -- "$t"\n'
    "else echo none; fi\n"
    'rm -f -- "$t"\n'
)
# Compare-and-swap, run under flock ($1 lease, $2 expected sha256 or "none", $3 new text,
# "" = remove).  Exit 3 when the file no longer holds what the caller read.
CAS_SCRIPT = (
    'if [ -e "$1" ]; then cur=$(sha256sum < "$1" | cut -c1-64); else cur=none; fi\n'
    '[ "$cur" = "$2" ] || exit 3\n'
    'if [ -z "$3" ]; then rm -f -- "$1"; exit 0; fi\n'
    'tmp="$1.$$.part"\n'
    'printf "%s\\n" "$3" > "$tmp" && mv -f -- "$tmp" "$1"\n'
)
# Makes the lease's directory, then runs the CAS under the host-side mutex.
LOCKED_SCRIPT = 'mkdir -p -- "$1" && exec flock -w "$2" -- "$3" sh -c "$4" sh "$5" "$6" "$7"'
# Consecutive lost races after which acquire() gives up (something rewrites the lease
# faster than we can read it).
MAX_RACES = 50
CONFLICT = 3


@dataclass(frozen=True)
class HostLease:
    """Who holds a host, why, and until when (the host's clock, epoch seconds).  `pid` 0: not
    tied to a process (`xenpvh host lock`); it holds until it expires or is unlocked."""

    host: str
    owner: str
    reason: str
    since: float
    expires: float
    pid: int
    machine: str
    # The holder's kernel boot id: a pid is only judged on the same machine and boot.
    boot_id: str = ""

    def to_text(self) -> str:
        """The one-line JSON stored on the host (canonical: the CAS compares it exactly)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_text(cls, text: str) -> HostLease:
        """Parse a stored lease; ValueError for anything that is not one."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kw: dict[str, object] = {}
        for name in fields:
            if name not in data:
                if name == "boot_id":
                    continue
                raise ValueError(f"no {name!r}")
            value = data[name]
            if name in ("since", "expires"):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"{name} is not a number")
                if not math.isfinite(value):
                    raise ValueError(f"{name} is not finite")
                value = float(value)
            elif name == "pid":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError("pid is not a process id")
            elif not isinstance(value, str):
                raise ValueError(f"{name} is not a string")
            kw[name] = value
        return cls(**kw)  # type: ignore[arg-type]

    def describe(self, now: float | None = None) -> str:
        """'OWNER (REASON) until HH:MM:SS UTC, in N min' — safe to print: the fields are data
        from the host, so control characters are escaped and lengths bounded."""
        now = time.time() if now is None else now
        left = self.expires - now
        until = time.strftime("%H:%M:%S UTC", time.gmtime(self.expires))
        who = _shown(self.owner)
        if self.pid:
            who += f" (pid {self.pid} on {_shown(self.machine)})"
        return f"{who}, reason {_shown(self.reason)!r}, until {until} ({_span(left)} left)"


class HostBusy(BlockedError):
    """Another owner holds the host's lease."""

    def __init__(self, lease: HostLease, *, waited: float = 0.0, now: float | None = None):
        self.lease = lease
        waited_text = f" (waited {waited:.0f}s)" if waited > 0 else ""
        super().__init__(
            f"host {_shown(lease.host)} is locked by {lease.describe(now)}{waited_text}; "
            "wait for it (--wait-host SECONDS) or ask the owner "
            f"(`xenpvh host who {_shown(lease.host)}`)"
        )


class LeaseLost(BrokenError):
    """Our lease is no longer on the host (expired and taken, or force-unlocked)."""


# -- the machine we run on -----------------------------------------------------------------


def this_machine() -> str:
    return socket.gethostname()


def this_boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def default_owner() -> str:
    """`user@machine`: what a lease names when the caller gives no owner."""
    user = os.environ.get("USER") or os.environ.get("LOGNAME")
    if not user:
        import pwd

        try:
            user = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            user = str(os.getuid())
    return f"{user}@{this_machine()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_is_dead(lease: HostLease) -> bool:
    """True when the lease's process ran on this machine (same boot) and is gone."""
    if lease.pid <= 0 or lease.machine != this_machine():
        return False
    if lease.boot_id and lease.boot_id != this_boot_id():
        # Another boot, or another machine of the same name: its pid means nothing here,
        # so the lease holds until it expires.
        return False
    return not _pid_alive(lease.pid)


def held_by_this_process(lease: HostLease) -> bool:
    return (
        lease.pid == os.getpid()
        and lease.machine == this_machine()
        and lease.boot_id == this_boot_id()
    )


# -- reading and swapping on the host -------------------------------------------------------


@dataclass(frozen=True)
class _Reading:
    host_now: float  # the host's clock at the read
    local_now: float  # ours at the read
    digest: str  # sha256 of the lease file, "none" when there is none
    lease: HostLease | None  # parsed; None when there is none or it is not a lease

    def host_time(self) -> float:
        """The host's clock now, estimated from the read."""
        return self.host_now + (time.time() - self.local_now)


def _lease_path(root: str) -> str:
    return f"{root.rstrip('/')}/{LEASE_NAME}"


def _root(root: str | None) -> str:
    """`root`, or the module's LOCK_ROOT as it is now (tests point it elsewhere)."""
    return LOCK_ROOT if root is None else root


def _digest(text: str) -> str:
    """The sha256 of the file a lease text is stored as."""
    return hashlib.sha256((text + "\n").encode()).hexdigest()


def _read(host: Host, root: str | None) -> _Reading:
    path = _lease_path(_root(root))
    local = time.time()
    r = host.run(["sh", "-c", READ_SCRIPT, "sh", path, str(MAX_LEASE_BYTES)], timeout=60)
    lines = r.out.split("\n", 2)
    if not r.ok or len(lines) < 2 or not lines[0].strip().isdigit():
        raise BrokenError(
            f"host {host.name}: cannot read its lease {path}: "
            f"exit {r.exit_status}: {r.err.strip()[-300:]}"
        )
    digest = lines[1].strip()
    text = lines[2].rstrip("\n") if len(lines) > 2 else ""
    lease: HostLease | None = None
    if digest != "none":
        try:
            lease = HostLease.from_text(text)
        except ValueError as e:
            # Not a lease to honour, but say so: someone or something wrote it.
            log.warning(
                "host %s: %s holds no valid lease (%s); treating it as free", host.name, path, e
            )
    return _Reading(float(lines[0]), local, digest, lease)


def _swap(host: Host, root: str | None, expected: str, new: str) -> bool:
    """Replace the lease file whose sha256 is `expected` ("none": no file) by `new` ("":
    remove it), atomically on the host.  False when the file held something else."""
    root = _root(root)
    path = _lease_path(root)
    r = host.run(
        [
            "sh",
            "-c",
            LOCKED_SCRIPT,
            "sh",
            root,
            str(MUTEX_WAIT),
            f"{path}.mutex",
            CAS_SCRIPT,
            path,
            expected,
            new,
        ],
        timeout=MUTEX_WAIT + 60,
    )
    if r.exit_status == CONFLICT:
        return False
    if not r.ok:
        raise BrokenError(
            f"host {host.name}: cannot change its lease {path} (is flock(1) installed?): "
            f"exit {r.exit_status}: {r.err.strip()[-300:]}"
        )
    return True


def _free(reading: _Reading) -> bool:
    """No valid lease, an expired one, or one whose process died on this machine."""
    lease = reading.lease
    if lease is None:
        return True
    if lease.expires <= reading.host_now:
        return True
    return holder_is_dead(lease)


# -- the API ---------------------------------------------------------------------------------


def read_lease(host: Host, *, root: str | None = None) -> HostLease | None:
    """Who holds the host: its lease, or None when it is free (no lease, an expired one, or
    one whose process died on this machine)."""
    reading = _read(host, root)
    return None if _free(reading) else reading.lease


def acquire(
    host: Host,
    *,
    owner: str,
    reason: str,
    ttl: float,
    wait: float = 0.0,
    poll: float = 5.0,
    on_wait: Callable[[HostLease], None] | None = None,
    pid: int | None = None,
    root: str | None = None,
) -> HostLease:
    """Take the host's lease for `ttl` seconds.  A free host, an expired lease and one whose
    process died on this machine are taken at once; otherwise wait up to `wait` seconds
    (polling every `poll`, calling `on_wait` with the holder's lease each time), then raise
    HostBusy naming the holder.  `pid` 0 ties the lease to no process (default: ours)."""
    if not owner or not math.isfinite(ttl) or ttl <= 0:
        raise BlockedError(
            f"a host lease needs an owner and a ttl > 0 (owner {owner!r}, ttl {ttl})"
        )
    if wait < 0 or not math.isfinite(wait):
        raise BlockedError(f"wait must be >= 0 seconds, not {wait}")
    for what, value in (("owner", owner), ("reason", reason)):
        if len(value) > MAX_FIELD:
            raise BlockedError(
                f"a host lease's {what} is {len(value)} characters; at most "
                f"{MAX_FIELD} are accepted"
            )
    pid = os.getpid() if pid is None else pid
    started = time.monotonic()
    races = 0
    while True:
        reading = _read(host, root)
        if _free(reading):
            now = reading.host_time()
            lease = HostLease(
                host=host.name,
                owner=owner,
                reason=reason,
                since=round(now, 3),
                expires=round(now + ttl, 3),
                pid=pid,
                machine=this_machine(),
                boot_id=this_boot_id(),
            )
            if _swap(host, root, reading.digest, lease.to_text()):
                if reading.lease is not None:
                    log.info(
                        "host %s: took over the lease of %s",
                        host.name,
                        reading.lease.describe(reading.host_now),
                    )
                log.info("host %s: leased to %s", host.name, owner)
                return lease
            races += 1
            if races >= MAX_RACES:
                raise BrokenError(
                    f"host {host.name}: its lease changed under us {races} times in a row"
                )
            continue  # another acquirer won the race: read who, then decide again
        holder = reading.lease
        assert holder is not None
        waited = time.monotonic() - started
        if waited >= wait:
            raise HostBusy(holder, waited=waited if wait > 0 else 0.0, now=reading.host_now)
        if on_wait is not None:
            on_wait(holder)
        time.sleep(max(0.0, min(poll, wait - waited)))


def release(host: Host, lease: HostLease, *, root: str | None = None) -> None:
    """Remove `lease` from the host, if it is still the one there (never someone else's)."""
    if not _swap(host, root, _digest(lease.to_text()), ""):
        log.info("host %s: the lease of %s was no longer there", host.name, _shown(lease.owner))


def renew(host: Host, lease: HostLease, ttl: float, *, root: str | None = None) -> HostLease:
    """Extend our `lease` to `ttl` seconds from now; LeaseLost when it is no longer ours."""
    if not math.isfinite(ttl) or ttl <= 0:
        raise BlockedError(f"a host lease needs a ttl > 0, not {ttl}")
    reading = _read(host, root)
    new = dataclasses.replace(lease, expires=round(reading.host_time() + ttl, 3))
    if not _swap(host, root, _digest(lease.to_text()), new.to_text()):
        raise LeaseLost(
            f"host {_shown(host.name)}: the lease of {_shown(lease.owner)} is gone "
            "(expired and taken, or unlocked by force)"
        )
    return new


def force_release(host: Host, *, root: str | None = None) -> HostLease | None:
    """Remove whatever lease the host holds (an admin's unlock --force); returns it."""
    while True:
        reading = _read(host, root)
        if reading.digest == "none":
            return None
        if _swap(host, root, reading.digest, ""):
            return reading.lease


def check(
    host: Host,
    *,
    owner: str,
    wait: float = 0.0,
    poll: float = 5.0,
    on_wait: Callable[[HostLease], None] | None = None,
    root: str | None = None,
) -> HostLease | None:
    """What a session does before it creates a domain: return when the host is free, leased
    to `owner`, or leased by this very process (a plan's pool leases its host, then runs
    sessions on it) — that lease, else None; while another holds it, wait up to `wait`
    seconds, then raise HostBusy naming the holder.  Takes nothing."""
    started = time.monotonic()
    while True:
        reading = _read(host, root)
        holder = None if _free(reading) else reading.lease
        if holder is None or holder.owner == owner or held_by_this_process(holder):
            return holder
        waited = time.monotonic() - started
        if waited >= wait:
            raise HostBusy(holder, waited=waited if wait > 0 else 0.0, now=reading.host_now)
        if on_wait is not None:
            on_wait(holder)
        time.sleep(max(0.0, min(poll, wait - waited)))


def _shown(text: str) -> str:
    """A field from the host, safe to print: printable, bounded."""
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[:MAX_FIELD])
    return text


def _span(seconds: float) -> str:
    if seconds <= 0:
        return "expired"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


__all__ = [
    "LOCK_ROOT",
    "HostBusy",
    "HostLease",
    "LeaseLost",
    "acquire",
    "check",
    "default_owner",
    "force_release",
    "held_by_this_process",
    "holder_is_dead",
    "read_lease",
    "release",
    "renew",
]
