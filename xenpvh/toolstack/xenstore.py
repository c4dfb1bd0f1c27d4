"""XenStore through a Host: pyxs speaking the wire protocol over a relay on the dom0.

pyxs wants a local unix socket or /dev/xen/xenbus.  We give it a connection whose transport
is a `Host.open_stream` to a tiny relay (python3 on the dom0, argv only) that splices its
stdin/stdout to xenstored's unix socket.  The same code then works for a nested host, an
ssh lab box and the dom0 you sit on.

pyxs has no timeouts: its router thread blocks in select() and every call waits on a
condition variable forever, so a dead xenstored would hang the run.  We therefore replace
the router with a synchronous one whose every receive has a deadline; expiry or a closed
relay raises BrokenError.  The wire format, path checks and error decoding stay pyxs's own.

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
from typing import Any

from pyxs._internal import NUL, Op, Packet, next_rq_id
from pyxs.client import Client
from pyxs.connection import PacketConnection
from pyxs.exceptions import InvalidOperation, InvalidPath, InvalidPayload, PyXSError
from pyxs.helpers import check_path, error

from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.base import ByteStream, Host

log = logging.getLogger(__name__)

XENSTORED_SOCKET = "/run/xenstored/socket"

# The relay: stdin -> socket, socket -> stdout, until either side closes.  Exit 3 when the
# socket cannot be reached so the failure is visible as an immediate end of stream.
RELAY = """\
import os, select, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError as e:
    sys.stderr.write("xenpvh-xs-relay: %s: %s\\n" % (sys.argv[1], e))
    sys.exit(3)
fds = [0, s.fileno()]
while True:
    r, _, _ = select.select(fds, [], [])
    if 0 in r:
        d = os.read(0, 65536)
        if not d:
            break
        s.sendall(d)
    if s.fileno() in r:
        d = s.recv(65536)
        if not d:
            break
        view = memoryview(d)
        while view:
            view = view[os.write(1, view):]
"""

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
# XENSTORE_PAYLOAD_MAX (xen/include/public/io/xs_wire.h): a longer reply means the stream
# is not xenstored's.
PAYLOAD_MAX = 4096
HEADER_SIZE = Packet._struct.size


def relay_argv(socket_path: str = XENSTORED_SOCKET, python: str = "python3") -> list[str]:
    return [python, "-c", RELAY, socket_path]


class _StreamTransport:
    """pyxs transport (send/recv/close/fileno) over a ByteStream, with a per-call deadline.

    Received bytes are buffered here: a deadline that expires inside a reply leaves them
    for the next call, so the stream never falls out of step."""

    def __init__(self, stream: ByteStream, owner: HostXenStoreConnection) -> None:
        self.stream = stream
        self.owner = owner
        self._buffer = bytearray()

    def fileno(self) -> int:
        raise OSError(errno.ENOTSUP, "a relayed XenStore connection has no local fd")

    def send(self, data: bytes) -> None:
        try:
            self.stream.sendall(bytes(data))
        except (BrokenError, OSError) as e:  # the relay's stream is gone (e.g. ssh dropped)
            raise RelayClosed(f"xenstore relay on {self.owner.path}: {e}") from e

    def peek(self, size: int) -> bytes:
        """The next `size` bytes, left in the buffer; waits for them up to the deadline."""
        while len(self._buffer) < size:
            left = self.owner.deadline - time.monotonic()
            if left <= 0:
                raise XenStoreTimeout(
                    f"xenstore on {self.owner.path}: no reply within {self.owner.timeout:g}s "
                    "(xenstored dead or relay stuck)"
                )
            self.stream.settimeout(left)
            try:
                chunk = self.stream.recv(max(size - len(self._buffer), 65536))
            except TimeoutError:
                continue  # the loop re-checks the deadline
            if not chunk:
                raise RelayClosed(
                    f"xenstore relay on {self.owner.path} closed the stream "
                    "(xenstored socket unreachable or python3 missing on the dom0)"
                )
            self._buffer += chunk
        return bytes(self._buffer[:size])

    def recv(self, size: int) -> bytes:
        data = self.peek(size)
        del self._buffer[:size]
        return data

    def close(self) -> None:
        self.stream.close()


class XenStoreTimeout(BrokenError):
    """No reply within the deadline: xenstored stopped, or only slow (a dom0 under load).
    One timeout does not tell which; the liveness probe asks again before it decides."""


class RelayClosed(BrokenError):
    """The relay's stream ended: xenstored's socket went away, or the connection to the host
    did (an ssh connection dropped).  One fresh connection tells which."""


class RelayGarbled(BrokenError):
    """The relay's stream carried bytes that are no xenstored reply: never reused."""


class HostXenStoreConnection(PacketConnection):
    """A pyxs PacketConnection whose transport is a relay started through a Host."""

    def __init__(
        self, host: Host, *, socket_path: str = XENSTORED_SOCKET, timeout: float = 10.0
    ) -> None:
        self.host = host
        self.socket_path = socket_path
        self.path = f"{host.name}:{socket_path}"
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        # The deadline of the operation in progress (set by XenStore._operation).
        self.operation_deadline: float | None = None
        # rq_ids of the requests in flight: a reply with another one is a late answer to a
        # call that timed out, and is skipped.
        self.expected: set[int] = set()
        self.relays = 0  # relays started
        self.late_replies = 0  # replies skipped (their call had timed out)

    def create_transport(self) -> _StreamTransport:
        self.relays += 1
        return _StreamTransport(self.host.open_stream(relay_argv(self.socket_path)), self)

    def expect(self, rq_ids: set[int]) -> None:
        self.expected = set(rq_ids)

    def recv(self) -> Packet:
        """The reply to a request in flight; replies to earlier (timed-out) requests are
        skipped.  A reply is consumed whole or not at all."""
        transport = self.transport
        if transport is None:
            raise RelayClosed(f"xenstore relay on {self.path} is not open")
        while True:
            header = transport.peek(HEADER_SIZE)
            op, rq_id, tx_id, size = Packet._struct.unpack(header)
            if size > PAYLOAD_MAX:
                raise RelayGarbled(
                    f"xenstore relay on {self.path}: a {size}-byte reply (at most "
                    f"{PAYLOAD_MAX}): the stream is not xenstored's"
                )
            data = transport.recv(HEADER_SIZE + size)
            try:
                packet = Packet(op, data[HEADER_SIZE:], rq_id, tx_id)
            except (InvalidOperation, InvalidPayload) as e:
                raise RelayGarbled(
                    f"xenstore relay on {self.path}: not a xenstored reply: {e!r}"
                ) from e
            if rq_id in self.expected:
                self.expected.discard(rq_id)
                return packet
            self.late_replies += 1
            log.debug("xenstore on %s: skipped a late reply (rq_id %d)", self.path, rq_id)

    def arm(self) -> None:
        """Start the deadline of one request/response exchange; within an operation it is
        the operation's, counted from its first call."""
        deadline = time.monotonic() + self.timeout
        if self.operation_deadline is not None:
            deadline = min(deadline, self.operation_deadline)
        self.deadline = deadline


class _Reply:
    def __init__(self, connection: HostXenStoreConnection) -> None:
        self.connection = connection

    def get(self) -> Any:
        return self.connection.recv()


class SyncRouter:
    """Stands in for pyxs.Router: one request in flight, answered synchronously.

    We never use watches, so there is nothing to multiplex and no thread is needed.
    """

    def __init__(self, connection: HostXenStoreConnection) -> None:
        self.connection = connection

    @property
    def is_connected(self) -> bool:
        return self.connection.is_connected

    def start(self) -> None:
        self.connection.connect()

    def terminate(self) -> None:
        self.connection.close()

    def send(self, packet: Any) -> _Reply:
        self.connection.arm()
        self.connection.expect({packet.rq_id})
        self.connection.send(packet)
        return _Reply(self.connection)


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
        self._client = Client(router=SyncRouter(self.connection))  # type: ignore[arg-type]
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
            self._client.connect()
            self._open = True
            self._stale = False
            self._unanswered = 0

    def close(self) -> None:
        # An explicit close ends the XenStore: nothing reopens it behind its user's back (a
        # probe thread still running after the run's exit stack closed it would leak a relay).
        self._stale = False
        if self._open:
            self._client.close()
            self._open = False

    def _call(self, fn: Any, *args: Any) -> Any:
        with self._operation(RETRY_BUDGET):
            try:
                return self._call_locked(fn, *args)
            except RelayClosed:
                self._reopen()
                return self._call_locked(fn, *args)

    def _reopen(self) -> None:
        """A fresh relay after the last one's stream ended (reads are safe to repeat)."""
        self.close()
        try:
            self.open()
        except PyXSError as e:
            raise BrokenError(f"xenstore on {self.connection.path}: reconnecting: {e}") from e

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

    def _call_locked(self, fn: Any, *args: Any) -> Any:
        self._ensure_open()
        try:
            result = fn(*args)
        except BrokenError as e:
            self._failed(e)
            raise
        except InvalidPath as e:
            raise BlockedError(f"xenstore path {args!r} is not a valid XenStore path") from e
        except PyXSError as e:
            self._unanswered = 0  # xenstored answered, with an error
            if e.args and e.args[0] == errno.ENOENT:
                return None
            raise BrokenError(f"xenstore: {fn.__name__}{args!r} failed: {e}") from e
        self._unanswered = 0
        return result

    @staticmethod
    def _path(path: str | bytes) -> bytes:
        p = path.encode() if isinstance(path, str) else path
        if not p.startswith(b"/"):
            raise BlockedError(f"xenstore path {path!r} must be absolute")
        return p

    def read(self, path: str | bytes) -> bytes | None:
        """The node's value, or None when it does not exist."""
        return self._call(self._client.read, self._path(path))

    def ls(self, path: str | bytes) -> list[str]:
        """Names of the node's children ([] when it does not exist)."""
        names = self._call(self._client.list, self._path(path))
        return [n.decode("ascii", "replace") for n in names or []]

    def _many(self, op: int, paths: list[str]) -> list[bytes | None]:
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

    def _many_locked(self, op: int, paths: list[str]) -> list[bytes | None]:
        self._ensure_open()
        out: list[bytes | None] = []
        try:
            for start in range(0, len(paths), BATCH):
                chunk = paths[start : start + BATCH]
                packets = []
                for p in chunk:
                    raw = self._path(p)
                    check_path(raw)
                    packets.append(Packet(op, raw + NUL, next_rq_id()))
                self.connection.arm()
                self.connection.expect({pk.rq_id for pk in packets})
                for pk in packets:
                    self.connection.send(pk)
                replies = {}
                for _ in packets:
                    r = self.connection.recv()
                    replies[r.rq_id] = r
                self._unanswered = 0
                for pk, p in zip(packets, chunk, strict=True):
                    r = replies[pk.rq_id]  # recv() returns each expected rq_id once
                    if r.op == Op.ERROR:
                        e = error(r.payload.rstrip(NUL))
                        if e.args[0] != errno.ENOENT:
                            raise BrokenError(f"xenstore: {p!r}: {e}")
                        out.append(None)
                    else:
                        out.append(r.payload.rstrip(NUL))
        except BrokenError as e:
            self._failed(e)  # late replies are skipped by rq_id if the relay is kept
            raise
        except InvalidPath as e:
            raise BlockedError(f"xenstore path {e.args!r} is not a valid XenStore path") from e
        except PyXSError as e:
            self._discard()
            raise BrokenError(f"xenstore: batch failed: {e}") from e
        return out

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
            vals = self._many(Op.READ, level)
            kids = self._many(Op.DIRECTORY, level) if depth < max_depth else [None] * len(level)
            nxt: list[str] = []
            for node, value, names in zip(level, vals, kids, strict=True):
                if value is None:
                    continue  # vanished while we walked
                values[node] = value
                base = node if node != "/" else ""
                kid_names = (
                    [n.decode("ascii", "replace") for n in names.split(NUL)] if names else []
                )
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
        v = self.read(path)
        if v is None:
            return None
        try:
            return int(v.strip(b"\0").decode() or "-1")
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
                be = be_raw.decode("ascii", "replace").strip("\0") if be_raw else ""
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
    "SyncRouter",
    "XenStore",
    "XenStoreTimeout",
    "relay_argv",
]
