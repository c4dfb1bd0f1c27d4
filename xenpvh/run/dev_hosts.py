"""Reaching the host of the developer's loop and of its kept guests.

A dev loop's nested host outlives the command (a kept guest lives in it), so one left up by
`xenpvh host nested up` is used, or one is started and left up.  `attach`, `destroy`, `ps` and
`host lock` only reach a host that is there already.  Kept guests are found through their
records (`xenpvh.run.keep`): the one on this machine says where the guest's host is.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xenpvh.build.qemu import check_choice
from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.base import Host
from xenpvh.host.nested import NestedHost
from xenpvh.host.open import open_host, running_nested_host
from xenpvh.host.request import HostRequest
from xenpvh.run import keep
from xenpvh.run.devloop import DevEventSink, GuestReaped
from xenpvh.run.keep import KeptGuest
from xenpvh.util.progress import Note, ProgressSink, emit


@contextlib.contextmanager
def reach_host(request: HostRequest, progress: ProgressSink | None = None) -> Iterator[Host]:
    """A host that is there already: a nested host must be up (`xenpvh host nested up`);
    nothing is booted for a lock, an attach or a listing."""
    if not request.nested:
        with open_host(request, progress=progress) as h:
            yield h
        return
    try:
        nested = NestedHost.attach(progress=progress)
    except BrokenError:
        raise BlockedError(
            "no nested host is up (`xenpvh host nested up` starts one; guests kept on an "
            "earlier one ended with it)"
        ) from None
    try:
        yield nested
    finally:
        nested.close()


@contextlib.contextmanager
def dev_host(request: HostRequest, progress: ProgressSink | None = None) -> Iterator[Host]:
    """The host of a dev loop.  The nested host must outlive the command (a kept guest lives
    in it), so one `xenpvh host nested up` left running is used, or such a one is started
    here and left up."""
    if not request.nested:
        with open_host(request, progress=progress) as h:
            yield h
        return
    qemu = check_choice(request.qemu)
    nested = running_nested_host(request.xen_image, qemu, progress)
    if nested is None:
        try:
            other: NestedHost | None = NestedHost.attach()
        except (BrokenError, BlockedError):
            other = None
        if other is not None:
            other.close()
            raise BlockedError(
                "a nested host is up with another Xen or QEMU than asked for; "
                "`xenpvh host nested down` it first, or ask for the same --qemu/--xen-image"
            )
        emit(
            progress,
            Note(
                "nested host: none is up; starting one that stays up for later runs and kept "
                "guests (`xenpvh host nested down` stops it)"
            ),
        )
        started = NestedHost(progress=progress, xen_image=request.xen_image, qemu=qemu)
        started.up(detach=True)
        started.close()  # its ssh connection; the host itself stays up
        nested = running_nested_host(request.xen_image, qemu, progress)
        if nested is None:
            raise BrokenError("the nested host just started cannot be reached")
    try:
        yield nested
    finally:
        nested.close()


def kept_host_request(record: KeptGuest, fallback: HostRequest | None = None) -> HostRequest:
    """How to reach the host of a kept guest: its record's spec and ssh files, the
    `fallback`'s files where the record names none."""
    spec = record.host_spec or {}

    def path(name: str) -> Path | None:
        value = spec.get(name) or (getattr(fallback, name) if fallback is not None else None)
        return Path(value) if value else None

    return HostRequest(
        spec=str(spec.get("spec") or "nested"),
        inventory=path("inventory"),
        identity=path("identity"),
        known_hosts=path("known_hosts"),
    )


@contextlib.contextmanager
def reach_kept(
    run: str,
    host: HostRequest | None,
    *,
    files: HostRequest | None = None,
    progress: ProgressSink | None = None,
) -> Iterator[tuple[Host, KeptGuest]]:
    """(host, record) of the kept guest `run` (a run id or its domain): on `host` when given,
    else where this machine's record says it is (ssh files from `files` where the record
    names none)."""
    record = None if host is not None else keep.find_local(run)
    if record is None:
        assert host is not None
        request = host
    else:
        request = kept_host_request(record, files)
    try:
        with reach_host(request, progress) as h:
            if record is None:
                record = keep.find_on_host(h, run)
            yield h, record
    except BlockedError:
        if record is not None and request.nested:
            # The nested host is down: the guests kept in it are gone with it.
            keep.remove_local(record.run_id)
            raise BlockedError(
                f"kept guest {record.domain} is gone: the nested host it ran in is down "
                "(record removed)"
            ) from None
        raise


@dataclass
class KeptListing:
    """The kept guests found on the hosts asked, and the hosts that could not be asked."""

    guests: list[tuple[KeptGuest, bool]] = field(default_factory=list)  # (record, ours)
    problems: list[str] = field(default_factory=list)  # "spec: why"


def kept_hosts(host: HostRequest | None) -> list[HostRequest]:
    """The hosts to list kept guests of: `host`, or each host this machine's records name."""
    if host is not None:
        return [host]
    targets: dict[str, HostRequest] = {}
    for rec in keep.local_records():
        key = json.dumps(rec.host_spec or {}, sort_keys=True)
        targets.setdefault(key, kept_host_request(rec))
    return list(targets.values())


def list_kept(
    targets: Sequence[HostRequest],
    *,
    on_event: DevEventSink | None = None,
    progress: ProgressSink | None = None,
) -> KeptListing:
    """The kept guests on `targets`; expired ones are reaped first (`GuestReaped` events) and
    records of guests gone from their host are dropped from this machine."""
    listing = KeptListing()
    seen_local = {r.run_id for r in keep.local_records()}
    for request in targets:
        try:
            with reach_host(request, progress) as host:
                for rec in keep.reap_expired(host):
                    if on_event is not None:
                        on_event(GuestReaped(rec))
                on_host = keep.host_records(host)
        except BlockedError as e:
            if request.nested:
                on_host = []  # the nested host is down: its guests ended with it
            else:
                listing.problems.append(f"{request.spec}: {e}")
                continue
        except BrokenError as e:
            listing.problems.append(f"{request.spec}: {e}")
            continue
        ids = {r.run_id for r in on_host}
        for rec in keep.local_records():
            if (rec.host_spec or {}).get("spec") == request.spec and rec.run_id not in ids:
                keep.remove_local(rec.run_id)  # reaped or destroyed elsewhere
        listing.guests += [(r, r.run_id in seen_local) for r in on_host]
    return listing


__all__ = [
    "KeptListing",
    "dev_host",
    "kept_host_request",
    "kept_hosts",
    "list_kept",
    "reach_host",
    "reach_kept",
]
