"""The relay that carries XenStore packets from xenpvh to xenstored on a Host.

A `Host.open_stream` runs a tiny relay (python3 on the dom0, argv only) that splices its
stdin/stdout to xenstored's unix socket; `HostXenStoreConnection` sends packets down it and
receives replies with a deadline.

A call that timed out does not cost its relay.  Replies are matched to requests by rq_id
(xenstored echoes it) and a partly received reply stays buffered, so the stream is still in
step after a timeout and the late answer is skipped when it comes (why that matters: see
`xenpvh.toolstack.xenstore`).
"""

from __future__ import annotations

import contextlib
import logging
import time

from xenpvh.errors import BrokenError
from xenpvh.host.base import ByteStream, Host
from xenpvh.toolstack.xenstore_wire import HEADER, Packet, WireError, decode_header

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


def relay_argv(socket_path: str = XENSTORED_SOCKET, python: str = "python3") -> list[str]:
    return [python, "-c", RELAY, socket_path]


class _StreamTransport:
    """send/peek/recv/close over a ByteStream, with the connection's deadline.

    Received bytes are buffered here: a deadline that expires inside a reply leaves them
    for the next call, so the stream never falls out of step."""

    def __init__(self, stream: ByteStream, owner: HostXenStoreConnection) -> None:
        self.stream = stream
        self.owner = owner
        self._buffer = bytearray()

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


class HostXenStoreConnection:
    """Packets to and from xenstored through a relay started through a Host."""

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
        self.transport: _StreamTransport | None = None

    @property
    def is_connected(self) -> bool:
        return self.transport is not None

    def connect(self) -> None:
        if self.transport is None:
            self.relays += 1
            stream = self.host.open_stream(relay_argv(self.socket_path))
            self.transport = _StreamTransport(stream, self)

    def close(self) -> None:
        transport, self.transport = self.transport, None
        if transport is not None:
            with contextlib.suppress(OSError):
                transport.close()

    def send(self, packet: Packet) -> None:
        if self.transport is None:
            raise RelayClosed(f"xenstore relay on {self.path} is not open")
        self.transport.send(packet.encode())

    def expect(self, rq_ids: set[int]) -> None:
        self.expected = set(rq_ids)

    def recv(self) -> Packet:
        """The reply to a request in flight; replies to earlier (timed-out) requests are
        skipped.  A reply is consumed whole or not at all."""
        transport = self.transport
        if transport is None:
            raise RelayClosed(f"xenstore relay on {self.path} is not open")
        while True:
            try:
                header = decode_header(transport.peek(HEADER.size))
            except WireError as e:
                raise RelayGarbled(
                    f"xenstore relay on {self.path}: {e}: the stream is not xenstored's"
                ) from e
            data = transport.recv(HEADER.size + header.size)
            packet = Packet(header.op, header.rq_id, data[HEADER.size :], header.tx_id)
            rq_id = header.rq_id
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


__all__ = [
    "RELAY",
    "XENSTORED_SOCKET",
    "HostXenStoreConnection",
    "RelayClosed",
    "RelayGarbled",
    "XenStoreTimeout",
    "relay_argv",
]
