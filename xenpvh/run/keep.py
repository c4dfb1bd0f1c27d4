"""Kept guests: a failed run's domain left running for a developer to look inside.

A run asked to keep its guest on `fail` (`KeepPolicy`) does not destroy it: its run lease on
the host is rewritten to expire when the keep does (so the sweep of every later run leaves it
alone until then, and reaps it after), and a record (`KeptGuest`) is written twice:

- on the host, `<root>/runs/<run id>/kept.json`: what `xenpvh ps --host H` lists for every
  user of the box, removed with the run dir;
- on this machine, `~/.cache/xenpvh/kept/<run id>.json`: how to reach the host again
  (`xenpvh attach RUN`, `xenpvh destroy RUN` without naming the host) and where the run's
  artifacts and console log are.

`end()` destroys a kept guest, removes its run dir and both records; `reap_expired()` does it
for every kept guest of a host whose keep ran out (the commands that touch a host call it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xenpvh.errors import BlockedError, BrokenError, XenpvhError
from xenpvh.host.base import Host
from xenpvh.run import lease
from xenpvh.run.lease import DOMAIN_PREFIX, RUN_ID
from xenpvh.run.remote import REMOTE_ROOT
from xenpvh.toolstack.base import xl_domain_exists
from xenpvh.toolstack.console import CONSOLED_LOG_DIR
from xenpvh.toolstack.registry import get_toolstack
from xenpvh.util.fs import atomic_write_text, cache_root

log = logging.getLogger(__name__)

KEPT_NAME = "kept.json"
DEFAULT_KEEP_FOR = 2 * 3600.0
MAX_KEEP_FOR = 7 * 24 * 3600.0
MAX_RECORD_BYTES = 16384
KEPT_FIND = ("-mindepth", "2", "-maxdepth", "2", "-name", KEPT_NAME)
KEPT_FIND += ("-exec", "head", "-v", "-c", str(MAX_RECORD_BYTES), "--", "{}", "+")


@dataclass(frozen=True)
class KeepPolicy:
    """Keep the guest of a `fail` for `keep_for` seconds.  `host_spec` says how to reach
    the host again (the HostRequest's fields, as strings), `owner` who kept it."""

    keep_for: float = DEFAULT_KEEP_FOR
    owner: str = ""
    host_spec: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class KeptGuest:
    run_id: str
    domain: str
    domid: int | None
    host: str  # the host's name (as runs report it)
    host_spec: dict[str, str | None]  # how to open it again (HostRequest fields)
    toolstack: str
    owner: str
    since: float
    expires: float
    artifacts: str  # the run's artifacts directory on the machine that ran it
    console_log: str
    profile: str = ""
    failed_stage: str | None = None
    reason: str = ""
    remote_root: str = REMOTE_ROOT

    @property
    def run_dir(self) -> str:
        return f"{self.remote_root}/runs/{self.run_id}"

    def expired(self, now: float | None = None) -> bool:
        return self.expires <= (time.time() if now is None else now)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> KeptGuest:
        """Parse a record; ValueError for anything that is not one (records on a host are
        data: the run id and domain must look like ours before they name anything)."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        rec = cls(**kw)
        if not isinstance(rec.run_id, str) or not RUN_ID.fullmatch(rec.run_id):
            raise ValueError(f"run id {rec.run_id!r} is not one of ours")
        if rec.domain != f"{DOMAIN_PREFIX}{rec.run_id}":
            raise ValueError(f"domain {rec.domain!r} does not belong to run {rec.run_id}")
        for name in ("since", "expires"):
            value = getattr(rec, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} is not a number")
        if not isinstance(rec.host_spec, dict) or not isinstance(rec.remote_root, str):
            raise ValueError("host_spec/remote_root malformed")
        if not rec.remote_root.startswith("/") or ".." in rec.remote_root.split("/"):
            raise ValueError(f"remote root {rec.remote_root!r} is not an absolute path")
        return rec


@dataclass(frozen=True)
class KeptEvent:
    """A run kept its failed guest (emitted by the run instead of destroying it)."""

    guest: KeptGuest


# -- keeping --------------------------------------------------------------------------------


def keep(host: Host, record: KeptGuest) -> None:
    """Leave the guest of `record` running: its lease now expires with the keep, and the
    record is written on the host and in the local index."""
    # lease.write_lease sets expires = now + timeout + LEASE_SLACK: the keep's end exactly.
    lease.write_lease(
        host,
        record.run_dir,
        domain=record.domain,
        run_id=record.run_id,
        timeout=record.expires - time.time() - lease.LEASE_SLACK,
        # The dev process ends while its guest lives on: only the keep's expiry ends it.
        detached=True,
    )
    host.put_bytes(record.to_json().encode(), f"{record.run_dir}/{KEPT_NAME}")
    save_local(record)
    log.info("kept %s on %s until %s", record.domain, record.host, time.ctime(record.expires))


def keep_if_alive(host: Host, record: KeptGuest) -> bool:
    """Keep the failed guest of `record` (see `keep`); False when it is gone already or the
    keep cannot be recorded (the run then destroys it as usual)."""
    try:
        if not xl_domain_exists(host, record.domain):
            log.info("run %s: the failed guest is gone already; nothing to keep", record.run_id)
            return False
        keep(host, record)
    except Exception as e:
        log.warning("run %s: cannot keep the guest (%s); destroying it", record.run_id, e)
        return False
    return True


def end(host: Host, record: KeptGuest) -> bool:
    """Destroy a kept guest, remove its run dir on the host and both records.  True when a
    domain was destroyed (False: it had gone already)."""
    toolstack = get_toolstack(record.toolstack or "xl", host)
    try:
        gone = toolstack.destroy(record.domain)
    finally:
        with contextlib.suppress(Exception):
            close = getattr(toolstack, "close", None)
            if callable(close):
                close()
    console_log = f"{CONSOLED_LOG_DIR}/guest-{record.domain}.log"
    host.run(["rm", "-rf", "--", record.run_dir, console_log], check=True)
    remove_local(record.run_id)
    return bool(gone)


def host_records(host: Host, remote_root: str | None = None) -> list[KeptGuest]:
    """The kept guests recorded on `host` (every owner's)."""
    runs = f"{(remote_root or REMOTE_ROOT).rstrip('/')}/runs"
    r = host.run(["find", runs, *KEPT_FIND], timeout=60)
    out: list[KeptGuest] = []
    header = re.compile(rf"^==> {re.escape(runs)}/([^/]+)/{re.escape(KEPT_NAME)} <==$")
    current: str | None = None
    body: list[str] = []
    for line in [*r.out.splitlines(), "==> <end> <=="]:
        if line.startswith("==> ") and line.endswith(" <=="):
            if current is not None:
                try:
                    rec = KeptGuest.from_json("\n".join(body))
                except (ValueError, TypeError) as e:
                    log.warning("host %s: kept record of %s unreadable: %s", host.name, current, e)
                else:
                    if rec.run_id == current:
                        out.append(rec)
            m = header.match(line)
            current, body = (m.group(1) if m else None), []
        elif current is not None:
            body.append(line)
    return sorted(out, key=lambda k: k.since)


def reap_expired(host: Host, remote_root: str | None = None) -> list[KeptGuest]:
    """End every kept guest on `host` whose keep ran out; returns them."""
    reaped = []
    on_host = host_records(host, remote_root)
    for rec in on_host:
        if rec.expired():
            try:
                end(host, rec)
            except XenpvhError as e:
                log.warning("reaping kept guest %s failed: %s", rec.domain, e)
                continue
            reaped.append(rec)
    # Records here of this host's guests that it no longer has (a run's sweep ended them
    # when their lease ran out, or someone destroyed them from elsewhere).
    there = {r.run_id for r in on_host} - {r.run_id for r in reaped}
    for rec in local_records():
        if rec.host == host.name and rec.run_id not in there:
            remove_local(rec.run_id)
    return reaped


# -- the local index ------------------------------------------------------------------------


def index_dir() -> Path:
    return cache_root("kept")


def save_local(record: KeptGuest) -> Path:
    d = index_dir()
    d.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(d / f"{record.run_id}.json", record.to_json())


def remove_local(run_id: str) -> None:
    if RUN_ID.fullmatch(run_id):
        (index_dir() / f"{run_id}.json").unlink(missing_ok=True)


def local_records() -> list[KeptGuest]:
    out = []
    for p in sorted(index_dir().glob("*.json")):
        try:
            out.append(KeptGuest.from_json(p.read_text()))
        except (OSError, ValueError, TypeError) as e:
            log.warning("kept-guest record %s unreadable: %s", p, e)
    return sorted(out, key=lambda k: k.since)


def find_local(name: str) -> KeptGuest:
    """The local record of a run id or domain name (`xenpvh-<run id>`); BlockedError naming
    what is known when there is none."""
    run_id = name.removeprefix(DOMAIN_PREFIX)
    if not RUN_ID.fullmatch(run_id):
        raise BlockedError(
            f"{name!r} is neither a run id (YYYYMMDD-HHMMSS-xxxxxx) nor a domain "
            f"{DOMAIN_PREFIX}<run id>"
        )
    path = index_dir() / f"{run_id}.json"
    try:
        return KeptGuest.from_json(path.read_text())
    except FileNotFoundError:
        known = ", ".join(r.run_id for r in local_records()) or "none"
        raise BlockedError(
            f"no kept guest {name} recorded on this machine (kept here: {known}); "
            "give --host to look on a host"
        ) from None
    except (OSError, ValueError, TypeError) as e:
        raise BrokenError(f"kept-guest record {path} unreadable: {e}") from e


def find_on_host(host: Host, name: str, remote_root: str | None = None) -> KeptGuest:
    run_id = name.removeprefix(DOMAIN_PREFIX)
    for rec in host_records(host, remote_root):
        if rec.run_id == run_id:
            return rec
    raise BlockedError(f"host {host.name} has no kept guest {name}")


def describe_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def as_dict(record: KeptGuest) -> dict[str, Any]:
    return dataclasses.asdict(record)


__all__ = [
    "DEFAULT_KEEP_FOR",
    "KEPT_NAME",
    "MAX_KEEP_FOR",
    "KeepPolicy",
    "KeptEvent",
    "KeptGuest",
    "as_dict",
    "end",
    "find_local",
    "find_on_host",
    "host_records",
    "index_dir",
    "keep",
    "keep_if_alive",
    "local_records",
    "reap_expired",
    "remove_local",
    "save_local",
]
