"""XenStore through a Host: the wire protocol (`xenstore_wire`) over a relay on the dom0.

The transport is a `Host.open_stream` to a tiny relay (python3 on the dom0, argv only;
`xenstore_relay`) that splices its stdin/stdout to xenstored's unix socket.  The same code
then works for a nested host, an ssh lab box and the dom0 you sit on.

Every receive has a deadline (a dead xenstored must not hang the run); expiry or a closed
relay raises BrokenError.  Requests are synchronous and only read (no watches), so no router
thread is needed.  (pyxs served here once; its client has no timeouts, and using it took its
private names, so the few wire facts we need are our own, in `xenstore_wire`.)

A call that timed out does not cost its relay.  Replies are matched to requests by rq_id
(xenstored echoes it) and a partly received reply stays buffered, so the stream is still in
step after a timeout and the late answer is skipped when it comes.  Starting a fresh relay
instead costs a python3 start on the dom0 and, after a dropped ssh connection, a new
handshake: measured on the nested host while a guest booted, 11-22 s for the reconnect and
3-6.5 s to a fresh relay's first answer -- more than a call's 10 s, so a client that
replaced its relay after every timeout never got an answer again (issue 12).  Only a relay
that left `STALE_AFTER` calls in a row unanswered is replaced.

Deadlines count from an operation's first call: `device_states` or `dump` make many calls,
and all of them share one deadline, so a xenstored that answers each request just in time
cannot stretch an operation to N x the timeout.  Calls from several threads (the run's
liveness probe, its device check, the early dump) are serialised on one lock.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.base import Host
from xenpvh.toolstack.xenstore_relay import (
    RELAY,
    XENSTORED_SOCKET,
    HostXenStoreConnection,
    RelayClosed,
    RelayGarbled,
    XenStoreTimeout,
    relay_argv,
)
from xenpvh.toolstack.xenstore_wire import (
    NUL,
    InvalidPath,
    Packet,
    RequestIds,
    XenStoreError,
    XsOp,
    names,
    reply_error,
    request,
)

log = logging.getLogger(__name__)


# XenbusState values (xen/include/public/io/xenbus.h).
XENBUS_STATES = {
    0: "Unknown",
    1: "Initialising",
    2: "InitWait",
    3: "Initialised",
    4: "Connected",
    5: "Closing",
    6: "Closed",
    7: "Reconfiguring",
    8: "Reconfigured",
}
CONNECTED = 4
# Requests per pipelined batch: small enough that replies never fill the relay's pipes.
BATCH = 64
# A dump walks a subtree level by level (tens of round trips on a slow dom0): its deadline
# is this many timeouts from its first call.
DUMP_BUDGET = 3.0
# A call whose relay's stream ended is tried once more on a fresh relay, within this many
# timeouts from its first try.
RETRY_BUDGET = 2.0
# A relay that left this many calls in a row unanswered is replaced (a stuck ssh channel,
# or a relay whose python3 never started); fewer is a slow dom0, and a fresh relay would
# only cost it more.
STALE_AFTER = 3
_rq_ids = RequestIds()


class XenStoreRefused(BrokenError):
    """xenstored answered a request with an error other than ENOENT (EACCES, EIO...)."""


@dataclass(frozen=True)
class DeviceState:
    kind: str  # "vbd" | "vif"
    devid: str
    frontend_path: str
    frontend_state: int | None  # None: node missing
    backend_path: str
    backend_state: int | None

    @property
    def connected(self) -> bool:
        return self.frontend_state == CONNECTED and self.backend_state == CONNECTED

    def describe(self) -> str:
        return (
            f"{self.kind} {self.devid}: frontend {self.frontend_path}/state="
            f"{_state_name(self.frontend_state)}, backend {self.backend_path}/state="
            f"{_state_name(self.backend_state)}"
        )


def _state_name(s: int | None) -> str:
    if s is None:
        return "missing"
    return f"{s} ({XENBUS_STATES.get(s, 'invalid')})"


class XenStore:
    """XenStore of one host.  Use as a context manager; every call has a deadline."""

    def __init__(
        self, host: Host, *, socket_path: str = XENSTORED_SOCKET, timeout: float = 10.0
    ) -> None:
        self.connection = HostXenStoreConnection(host, socket_path=socket_path, timeout=timeout)
        self._open = False
        # Closed after an error left the stream unusable: the next call opens a fresh
        # relay (a timeout on a slow dom0 must not make every later call fail).
        self._stale = False
        self._unanswered = 0  # calls in a row that timed out on the current relay
        self._lock = threading.RLock()

    @contextlib.contextmanager
    def _operation(self, calls: float = 1.0) -> Iterator[None]:
        """One operation (one call, or many): one thread at a time, one deadline counted
        from its first call, `calls` x the timeout (an operation inside another shares the
        outer one's)."""
        with self._lock:
            outer = self.connection.operation_deadline is not None
            if not outer:
                budget = self.connection.timeout * calls
                self.connection.operation_deadline = time.monotonic() + budget
            try:
                yield
            finally:
                if not outer:
                    self.connection.operation_deadline = None

    def __enter__(self) -> XenStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if not self._open:
            self.connection.connect()
            self._open = True
            self._stale = False
            self._unanswered = 0

    def close(self) -> None:
        # An explicit close ends the XenStore: nothing reopens it behind its user's back (a
        # probe thread still running after the run's exit stack closed it would leak a relay).
        self._stale = False
        if self._open:
            self.connection.close()
            self._open = False

    def _reopen(self) -> None:
        """A fresh relay after the last one's stream ended (reads are safe to repeat)."""
        self.close()
        self.open()

    def _ensure_open(self) -> None:
        if self._stale:
            self._reopen()
        if not self._open:
            raise BrokenError("XenStore is not open (use it as a context manager)")

    def _discard(self) -> None:
        """The stream is unusable (ended, garbled, or silent too long): never reuse it; the
        next call starts a fresh relay."""
        self.close()
        self._stale = True

    def _failed(self, error: BrokenError) -> None:
        """A call failed: a timeout keeps the relay (its stream stays in step, and a late
        answer is skipped) until `STALE_AFTER` calls in a row went unanswered; anything
        else discards it."""
        if isinstance(error, XenStoreTimeout):
            self._unanswered += 1
            if self._unanswered < STALE_AFTER:
                return
        self._discard()

    @staticmethod
    def _path(path: str | bytes) -> bytes:
        p = path.encode() if isinstance(path, str) else path
        if not p.startswith(b"/"):
            raise BlockedError(f"xenstore path {path!r} must be absolute")
        return p

    def read(self, path: str | bytes) -> bytes | None:
        """The node's value, or None when it does not exist."""
        return self._many(XsOp.READ, [path])[0]

    def ls(self, path: str | bytes) -> list[str]:
        """Names of the node's children ([] when it does not exist)."""
        listing = self._many(XsOp.DIRECTORY, [path])[0]
        return [n.decode("ascii", "replace") for n in names(listing or b"")]

    def _many(self, op: XsOp, paths: list[str | bytes]) -> list[bytes | None]:
        """One op on many paths, pipelined: send a batch, then read its replies.

        Walking a subtree one round trip at a time through ssh and a relay on a slow dom0
        costs seconds; xenstored answers a connection's requests in order, so a batch
        shares one round trip (and one deadline).
        """
        with self._operation(RETRY_BUDGET):
            try:
                return self._many_locked(op, paths)
            except RelayClosed:
                self._reopen()
                return self._many_locked(op, paths)

    def _many_locked(self, op: XsOp, paths: list[str | bytes]) -> list[bytes | None]:
        requests = [self._request(op, p) for p in paths]  # blocked before anything is sent
        self._ensure_open()
        out: list[bytes | None] = []
        try:
            for start in range(0, len(requests), BATCH):
                chunk = requests[start : start + BATCH]
                self.connection.arm()
                self.connection.expect({pk.rq_id for pk in chunk})
                for pk in chunk:
                    self.connection.send(pk)
                replies = {}
                for _ in chunk:
                    r = self.connection.recv()
                    replies[r.rq_id] = r
                self._unanswered = 0
                for pk in chunk:
                    out.append(self._answer(pk, replies[pk.rq_id]))  # each rq_id came once
        except XenStoreRefused:
            raise  # xenstored answered: the stream is in step, the relay stays
        except BrokenError as e:
            self._failed(e)  # late replies are skipped by rq_id if the relay is kept
            raise
        return out

    def _request(self, op: XsOp, path: str | bytes) -> Packet:
        try:
            return request(op, self._path(path), _rq_ids.next())
        except InvalidPath as e:
            raise BlockedError(f"xenstore path {path!r} is not a valid XenStore path") from e

    def _answer(self, sent: Packet, reply: Packet) -> bytes | None:
        """The reply's payload (a value: without its writer's NUL terminator); None for
        ENOENT; BrokenError for another error (xenstored answered: the relay stays)."""
        if reply.op == XsOp.ERROR:
            error: XenStoreError = reply_error(reply.payload)
            if error.errno == errno.ENOENT:
                return None
            raise XenStoreRefused(f"xenstore: {XsOp(sent.op).name} {sent.payload!r}: {error}")
        if reply.op != sent.op:
            raise RelayGarbled(
                f"xenstore relay on {self.connection.path}: a {reply.op} reply to a "
                f"{XsOp(sent.op).name}: the stream is out of step"
            )
        # Most writers store C strings: a trailing NUL is their terminator, not the value.
        return reply.payload.rstrip(NUL)

    def dump(self, path: str | bytes, *, max_nodes: int = 4000, max_depth: int = 16) -> str:
        """`path = "value"` lines for the subtree (like `xenstore-ls -f`), bounded.

        Walked level by level with pipelined requests, printed depth-first.
        """
        with self._operation(DUMP_BUDGET):
            return self._dump(path, max_nodes=max_nodes, max_depth=max_depth)

    def _dump(self, path: str | bytes, *, max_nodes: int, max_depth: int) -> str:
        root = self._path(path).decode().rstrip("/") or "/"
        values: dict[str, bytes] = {}
        children: dict[str, list[str]] = {}
        level, depth, truncated = [root], 0, False
        while level:
            room = max_nodes - len(values)
            if len(level) > room:
                level, truncated = level[:room], True
            vals = self._many(XsOp.READ, list(level))
            kids = (
                self._many(XsOp.DIRECTORY, list(level))
                if depth < max_depth
                else [None] * len(level)
            )
            nxt: list[str] = []
            for node, value, listing in zip(level, vals, kids, strict=True):
                if value is None:
                    continue  # vanished while we walked
                values[node] = value
                base = node if node != "/" else ""
                kid_names = [n.decode("ascii", "replace") for n in names(listing or b"")]
                children[node] = [f"{base}/{n}" for n in kid_names]
                nxt.extend(children[node])
            if truncated:
                break
            level, depth = nxt, depth + 1
        if root not in values:
            return f"{root}  [does not exist]\n"
        lines: list[str] = []
        stack = [root]
        while stack:
            node = stack.pop()
            if node in values:
                lines.append(f"{node} = {_quote(values[node])}")
                stack.extend(reversed(children.get(node, [])))
        if truncated:
            lines.append(f"[xenpvh: dump stopped after {max_nodes} nodes]")
        return "\n".join(lines) + "\n"

    def state(self, path: str) -> int | None:
        """A XenbusState node's number; None when missing, -1 when it holds no number."""
        v = self.read(path)
        if v is None:
            return None
        try:
            return int(v.decode("ascii", "replace").strip() or "-1")
        except ValueError:
            return -1

    def alive(self) -> None:
        """A cheap liveness probe (dom0's name): BrokenError naming the host when xenstored
        does not answer within the deadline."""
        self.read("/local/domain/0/name")

    def device_states(self, domid: int) -> list[DeviceState]:
        """Frontend and backend state of every vbd and vif of the domain (one deadline)."""
        with self._operation():
            return self._device_states(domid)

    def _device_states(self, domid: int) -> list[DeviceState]:
        out: list[DeviceState] = []
        for kind in ("vbd", "vif"):
            base = f"/local/domain/{int(domid)}/device/{kind}"
            for devid in sorted(self.ls(base), key=_devid_key):
                fe = f"{base}/{devid}"
                be_raw = self.read(f"{fe}/backend")
                be = be_raw.decode("ascii", "replace") if be_raw else ""
                out.append(
                    DeviceState(
                        kind=kind,
                        devid=devid,
                        frontend_path=fe,
                        frontend_state=self.state(f"{fe}/state"),
                        backend_path=be,
                        backend_state=self.state(f"{be}/state") if be.startswith("/") else None,
                    )
                )
        return out

    def console_tty(self, domid: int) -> str | None:
        v = self.read(f"/local/domain/{int(domid)}/console/tty")
        return v.decode("ascii", "replace") if v else None

    def domain_dump(self, domid: int) -> str:
        """The domain's own subtree plus its backends in dom0 (for artifacts)."""
        with self._operation(DUMP_BUDGET):
            return self._domain_dump(domid)

    def _domain_dump(self, domid: int) -> str:
        parts = [self.dump(f"/local/domain/{int(domid)}")]
        for kind in ("vbd", "vif", "console"):
            p = f"/local/domain/0/backend/{kind}/{int(domid)}"
            if self.read(p) is not None:
                parts.append(self.dump(p))
        return "".join(parts)


def _devid_key(d: str) -> tuple[int, str]:
    return (int(d), d) if d.isdigit() else (1 << 30, d)


def _quote(v: bytes) -> str:
    s = v.decode("ascii", "backslashreplace")
    s = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in s)
    return '"' + s.replace('"', '\\"') + '"'


__all__ = [
    "CONNECTED",
    "RELAY",
    "STALE_AFTER",
    "XENBUS_STATES",
    "XENSTORED_SOCKET",
    "DeviceState",
    "HostXenStoreConnection",
    "RelayClosed",
    "RelayGarbled",
    "XenStore",
    "XenStoreRefused",
    "XenStoreTimeout",
    "relay_argv",
]
