"""XenStore over the relay: the real relay (python3 -c RELAY via LocalHost.open_stream)
talks to a fake xenstored that speaks the real wire protocol (xs_wire.h) on a unix socket."""

from __future__ import annotations

import errno
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.local import LocalHost
from xenpvh.toolstack import xenstore_wire as wire
from xenpvh.toolstack.xenstore import (
    STALE_AFTER,
    DeviceState,
    XenStore,
    XenStoreRefused,
    XenStoreTimeout,
)

HEADER = struct.Struct("<IIII")  # type, req_id, tx_id, len
XS_DIRECTORY, XS_READ, XS_ERROR = 1, 2, 16


class FakeXenstored:
    """A threaded xenstored: DIRECTORY and READ over a flat {path: value} store."""

    def __init__(
        self, path: Path, store: dict[str, bytes], *, mute: bool = False, delay: float = 0.0
    ) -> None:
        self.path = path
        self.store = store
        self.mute = mute  # accept and read requests but never answer (a hung xenstored)
        self.delay = delay  # seconds before each answer (a xenstored that barely keeps up)
        self.drop_next = 0  # connections to close at their next request (a dropped link)
        self.split = 0.0  # seconds between a reply's header and its payload
        self.garble_next = 0  # replies whose header claims more than XENSTORE_PAYLOAD_MAX
        self.connections = 0
        self.refuse: set[str] = set()  # paths answered with EACCES
        self.requests: list[tuple[int, bytes]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _children(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        out: list[str] = []
        for p in self.store:
            if p.startswith(prefix):
                name = p[len(prefix) :].split("/")[0]
                if name not in out:
                    out.append(name)
        return out

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    @staticmethod
    def _recv(conn: socket.socket, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def _client(self, conn: socket.socket) -> None:
        with conn:
            try:
                while True:
                    op, rq, tx, size = HEADER.unpack(self._recv(conn, HEADER.size))
                    payload = self._recv(conn, size) if size else b""
                    self.requests.append((op, payload))
                    if self.mute:
                        continue
                    if self.drop_next:
                        self.drop_next -= 1
                        return  # closes the connection without an answer
                    time.sleep(self.delay)
                    path = payload.rstrip(b"\0").decode()
                    if path in self.refuse:
                        rop, body = XS_ERROR, b"EACCES\0"
                    elif op == XS_READ and path in self.store:
                        rop, body = op, self.store[path]
                    elif op == XS_READ and self._children(path):
                        rop, body = op, b""  # xenstored creates parents with empty values
                    elif op == XS_DIRECTORY and (path in self.store or self._children(path)):
                        kids = self._children(path)
                        rop, body = op, b"".join(k.encode() + b"\0" for k in kids)
                    elif op in (XS_READ, XS_DIRECTORY):
                        rop, body = XS_ERROR, b"ENOENT\0"
                    else:
                        rop, body = XS_ERROR, b"EINVAL\0"
                    if self.garble_next:
                        self.garble_next -= 1
                        conn.sendall(HEADER.pack(rop, rq, tx, 100000) + body)
                        continue
                    conn.sendall(HEADER.pack(rop, rq, tx, len(body)))
                    if self.split:
                        time.sleep(self.split)
                    conn.sendall(body)
            except (EOFError, OSError):
                return

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def guest_store(domid: int = 7, *, vbd_state: bytes = b"4", vif_fe: bytes = b"4") -> dict:
    fe = f"/local/domain/{domid}/device"
    be = "/local/domain/0/backend"
    return {
        "/local": b"",
        "/local/domain": b"",
        f"/local/domain/{domid}": b"",
        f"/local/domain/{domid}/name": b"xenpvh-t",
        f"/local/domain/{domid}/console/tty": b"/dev/pts/3",
        f"{fe}/vbd/51712/backend": f"{be}/vbd/{domid}/51712".encode(),
        f"{fe}/vbd/51712/state": vbd_state,
        f"{fe}/vif/0/backend": f"{be}/vif/{domid}/0".encode(),
        f"{fe}/vif/0/state": vif_fe,
        f"{be}/vbd/{domid}/51712/state": b"4",
        f"{be}/vbd/{domid}/51712/params": b"/var/lib/xenpvh/runs/x/xvda.img",
        f"{be}/vif/{domid}/0/state": b"4",
    }


@pytest.fixture
def sockdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp paths can be longer.
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="xs-"))
    yield d
    for p in d.iterdir():
        p.unlink()
    d.rmdir()


@pytest.fixture
def xenstored(sockdir: Path) -> Iterator[FakeXenstored]:
    srv = FakeXenstored(sockdir / "socket", guest_store())
    yield srv
    srv.close()


def test_read_ls_and_missing_nodes(xenstored: FakeXenstored) -> None:
    with XenStore(LocalHost(), socket_path=str(xenstored.path)) as xs:
        assert xs.read("/local/domain/7/name") == b"xenpvh-t"
        assert xs.read("/local/domain/7/nope") is None
        assert xs.ls("/local/domain/7/device") == ["vbd", "vif"]
        assert xs.ls("/local/domain/99") == []
    # Both ops really crossed the wire, NUL-terminated as xenstored expects.
    assert (XS_READ, b"/local/domain/7/name\0") in xenstored.requests


def test_device_states_connected(xenstored: FakeXenstored) -> None:
    with XenStore(LocalHost(), socket_path=str(xenstored.path)) as xs:
        states = xs.device_states(7)
        assert xs.console_tty(7) == "/dev/pts/3"
    assert states == [
        DeviceState(
            "vbd",
            "51712",
            "/local/domain/7/device/vbd/51712",
            4,
            "/local/domain/0/backend/vbd/7/51712",
            4,
        ),
        DeviceState(
            "vif", "0", "/local/domain/7/device/vif/0", 4, "/local/domain/0/backend/vif/7/0", 4
        ),
    ]
    assert all(s.connected for s in states)


def test_device_stuck_is_described(sockdir: Path) -> None:
    srv = FakeXenstored(sockdir / "socket", guest_store(vif_fe=b"1"))
    try:
        with XenStore(LocalHost(), socket_path=str(srv.path)) as xs:
            vif = next(s for s in xs.device_states(7) if s.kind == "vif")
    finally:
        srv.close()
    assert not vif.connected
    assert vif.describe() == (
        "vif 0: frontend /local/domain/7/device/vif/0/state=1 (Initialising), "
        "backend /local/domain/0/backend/vif/7/0/state=4 (Connected)"
    )


def test_dump_is_recursive_and_bounded(xenstored: FakeXenstored) -> None:
    with XenStore(LocalHost(), socket_path=str(xenstored.path)) as xs:
        full = xs.domain_dump(7)
        small = xs.dump("/local/domain/7", max_nodes=3)
    assert '/local/domain/7/device/vbd/51712/state = "4"' in full
    assert '/local/domain/0/backend/vif/7/0/state = "4"' in full
    assert small.count("\n") == 4 and "dump stopped after 3 nodes" in small


def test_hung_xenstored_hits_the_deadline(sockdir: Path) -> None:
    srv = FakeXenstored(sockdir / "socket", guest_store(), mute=True)
    try:
        xs = XenStore(LocalHost(), socket_path=str(srv.path), timeout=1.0)
        with xs:
            t0 = time.monotonic()
            with pytest.raises(XenStoreTimeout, match="no reply within 1s"):
                xs.read("/local/domain/7/name")
            assert time.monotonic() - t0 < 3
            # A timeout keeps the relay: once xenstored answers again (only slow, not
            # dead), so does XenStore, on the same relay.
            first = srv.connections
            srv.mute = False
            assert xs.read("/local/domain/7/name") is not None
            assert srv.connections == first
            # STALE_AFTER calls in a row unanswered: that relay is replaced.
            srv.mute = True
            for _ in range(STALE_AFTER):
                with pytest.raises(XenStoreTimeout):
                    xs.read("/local/domain/7/name")
            srv.mute = False
            assert xs.read("/local/domain/7/name") is not None
            assert srv.connections == first + 1
            # Closed by its user after a timeout, it stays closed: no relay behind its back.
            srv.mute = True
            with pytest.raises(XenStoreTimeout):
                xs.read("/local/domain/7/name")
            xs.close()
            srv.mute = False
            with pytest.raises(BrokenError, match="not open"):
                xs.read("/local/domain/7/name")
            assert srv.connections == first + 1
    finally:
        srv.close()


@pytest.mark.parametrize("late", ["delay", "split"])
def test_a_late_reply_is_skipped_and_the_relay_kept(sockdir: Path, late: str) -> None:
    """xenstored answers after the call's deadline (a loaded dom0): the call times out, and
    the next call on the same relay skips the late answer and gets its own -- no fresh
    relay, whose start would cost the slow dom0 more than the call's deadline.  `split`:
    the deadline expires between the reply's header and its payload, and the header stays
    buffered, so the stream stays in step."""
    srv = FakeXenstored(sockdir / "socket", guest_store())
    setattr(srv, late, 1.5)
    try:
        with XenStore(LocalHost(), socket_path=str(srv.path), timeout=1.0) as xs:
            with pytest.raises(XenStoreTimeout):
                xs.read("/local/domain/7/name")
            setattr(srv, late, 0.0)
            assert xs.read("/local/domain/7/console/tty") == b"/dev/pts/3"
            assert [d.devid for d in xs.device_states(7)] == ["51712", "0"]
            assert xs.connection.late_replies == 1
            assert srv.connections == 1 and xs.connection.relays == 1
    finally:
        srv.close()


def test_a_garbled_reply_discards_the_relay(xenstored: FakeXenstored) -> None:
    """A header claiming more than XENSTORE_PAYLOAD_MAX bytes: that stream is not
    xenstored's; the call is broken, and the next one runs on a fresh relay."""
    with XenStore(LocalHost(), socket_path=str(xenstored.path), timeout=2.0) as xs:
        xenstored.garble_next = 1
        with pytest.raises(BrokenError, match="not xenstored's"):
            xs.read("/local/domain/7/name")
        assert xs.read("/local/domain/7/name") == b"xenpvh-t"
        assert xenstored.connections == 2


def test_unreachable_socket_is_broken(sockdir: Path) -> None:
    with (
        XenStore(LocalHost(), socket_path=str(sockdir / "absent"), timeout=5) as xs,
        pytest.raises(BrokenError, match=r"relay .* closed the stream"),
    ):
        xs.read("/local")


def test_bad_path_is_blocked(xenstored: FakeXenstored) -> None:
    with XenStore(LocalHost(), socket_path=str(xenstored.path)) as xs:
        with pytest.raises(BlockedError):
            xs.read("relative/path")
        with pytest.raises(BlockedError):
            xs.read("/local/domain/7/$(reboot)")


def test_dump_of_a_wide_tree_spans_several_batches(sockdir: Path) -> None:
    store = {f"/local/domain/3/data/k{i:03d}": f"v{i}".encode() for i in range(150)}
    srv = FakeXenstored(sockdir / "socket", store)
    try:
        with XenStore(LocalHost(), socket_path=str(srv.path)) as xs:
            out = xs.dump("/local/domain/3").splitlines()
    finally:
        srv.close()
    assert out[:3] == [
        '/local/domain/3 = ""',
        '/local/domain/3/data = ""',
        '/local/domain/3/data/k000 = "v0"',
    ]
    assert out[-1] == '/local/domain/3/data/k149 = "v149"' and len(out) == 152
    # 150 leaves: READs and DIRECTORYs of one level went out in batches of at most 64.
    assert sum(1 for op, _ in srv.requests if op == XS_READ) == 152


def test_hung_xenstored_bounds_a_dump(sockdir: Path) -> None:
    srv = FakeXenstored(sockdir / "socket", guest_store(), mute=True)
    try:
        with XenStore(LocalHost(), socket_path=str(srv.path), timeout=1.0) as xs:
            t0 = time.monotonic()
            with pytest.raises(BrokenError, match="no reply within 1s"):
                xs.dump("/local/domain/7")
            assert time.monotonic() - t0 < 3
    finally:
        srv.close()


def test_a_slow_xenstored_cannot_stretch_an_operation(sockdir: Path) -> None:
    """Every request answered within the timeout, but the operation's calls share one
    deadline counted from its first call: device_states (7 requests at 0.6 s) ends at 2 s."""
    srv = FakeXenstored(sockdir / "socket", guest_store(), delay=0.6)
    try:
        with XenStore(LocalHost(), socket_path=str(srv.path), timeout=2.0) as xs:
            assert xs.read("/local/domain/7/name") == b"xenpvh-t"  # one call: in time
            t0 = time.monotonic()
            with pytest.raises(BrokenError, match="no reply within 2s"):
                xs.device_states(7)
            assert time.monotonic() - t0 < 3.0
    finally:
        srv.close()


def test_alive_probe(xenstored: FakeXenstored, sockdir: Path) -> None:
    xenstored.store["/local/domain/0/name"] = b"Domain-0"
    with XenStore(LocalHost(), socket_path=str(xenstored.path)) as xs:
        xs.alive()
    mute = FakeXenstored(sockdir / "mute", guest_store(), mute=True)
    try:
        with (
            XenStore(LocalHost(), socket_path=str(mute.path), timeout=0.5) as xs,
            pytest.raises(BrokenError, match=r"no reply within 0\.5s"),
        ):
            xs.alive()
    finally:
        mute.close()


def test_a_dropped_relay_is_replaced_once_and_a_dead_xenstored_still_broken(
    xenstored: FakeXenstored, sockdir: Path
) -> None:
    """The relay's stream ends (the ssh connection dropped): one fresh relay answers, and
    the run goes on; when the fresh one ends too (xenstored gone), it is broken."""
    with XenStore(LocalHost(), socket_path=str(xenstored.path), timeout=5) as xs:
        assert xs.read("/local/domain/7/name") == b"xenpvh-t"
        xenstored.drop_next = 1
        assert xs.read("/local/domain/7/name") == b"xenpvh-t"
        assert xenstored.connections == 2
        assert [d.devid for d in xs.device_states(7)] == ["51712", "0"]
        # The link is gone on our side (a write fails, as over a dropped ssh connection).
        xs.connection.transport.stream.close()
        assert xs.read("/local/domain/7/name") == b"xenpvh-t"
        assert xenstored.connections == 3
        xenstored.drop_next = 2
        with pytest.raises(BrokenError, match="closed the stream"):
            xs.read("/local/domain/7/name")


def test_a_state_value_with_its_writers_nul_is_read_as_the_number(sockdir: Path) -> None:
    """A frontend that wrote the C string's terminator ("4\\0"): still Connected."""
    srv = FakeXenstored(sockdir / "socket", guest_store(vbd_state=b"4\0"))
    try:
        with XenStore(LocalHost(), socket_path=str(srv.path)) as xs:
            vbd = next(s for s in xs.device_states(7) if s.kind == "vbd")
            value = xs.read("/local/domain/7/device/vbd/51712/state")
    finally:
        srv.close()
    assert vbd.frontend_state == 4 and vbd.connected
    assert value == b"4"


def test_a_relative_backend_path_is_not_read_as_a_state(sockdir: Path) -> None:
    """The frontend's `backend` node is the guest's to write: a relative path there would
    resolve against dom0's home (/local/domain/0) and could name any node; it is never
    read, and the device's backend state counts as missing."""
    store = guest_store()
    store["/local/domain/7/device/vif/0/backend"] = b"backend/vif/7/0"
    srv = FakeXenstored(sockdir / "socket", store)
    try:
        with XenStore(LocalHost(), socket_path=str(srv.path)) as xs:
            vif = next(s for s in xs.device_states(7) if s.kind == "vif")
    finally:
        srv.close()
    assert (vif.backend_path, vif.backend_state) == ("backend/vif/7/0", None)
    assert not vif.connected and "state=missing" in vif.describe()
    assert not any(p.startswith(b"backend") for _, p in srv.requests)


def test_an_error_answer_is_broken_and_keeps_the_relay(xenstored: FakeXenstored) -> None:
    """xenstored refusing a read (EACCES) is broken, but it answered: the stream is in step
    and the next call uses the same relay."""
    xenstored.refuse.add("/local/domain/7/name")
    with XenStore(LocalHost(), socket_path=str(xenstored.path)) as xs:
        with pytest.raises(XenStoreRefused, match="EACCES"):
            xs.read("/local/domain/7/name")
        assert xs.read("/local/domain/7/console/tty") == b"/dev/pts/3"
        assert xenstored.connections == 1


# -- the wire format by itself --------------------------------------------------------------


def test_wire_header_and_ops_are_xs_wire_h() -> None:
    pk = wire.request(wire.XsOp.READ, b"/local/domain/0/name", 9)
    raw = pk.encode()
    assert raw == HEADER.pack(XS_READ, 9, 0, 21) + b"/local/domain/0/name\0"
    header = wire.decode_header(raw)
    assert (header.op, header.rq_id, header.tx_id, header.size) == (XS_READ, 9, 0, 21)
    assert (wire.XsOp.DIRECTORY, wire.XsOp.ERROR, wire.XsOp.DIRECTORY_PART) == (1, 16, 22)


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (HEADER.pack(XS_READ, 1, 0, wire.PAYLOAD_MAX + 1), "4097-byte reply"),
        (HEADER.pack(23, 1, 0, 0), "unknown message type 23"),
    ],
)
def test_wire_rejects_what_xenstored_never_sends(header: bytes, why: str) -> None:
    with pytest.raises(wire.WireError, match=why):
        wire.decode_header(header)
    with pytest.raises(wire.WireError, match="at most 4096"):
        wire.Packet(XS_READ, 1, b"x" * (wire.PAYLOAD_MAX + 1)).encode()


@pytest.mark.parametrize(
    "path",
    [b"relative", b"/a//b", b"/a/", b"/a b", b"/a$(x)", b"/" + b"a" * wire.ABS_PATH_MAX, b""],
)
def test_wire_refuses_paths_xenstored_would(path: bytes) -> None:
    with pytest.raises(wire.InvalidPath):
        wire.check_path(path)


def test_wire_accepts_node_paths() -> None:
    for path in (b"/", b"/local/domain/7/device/vbd/51712", b"/tool/x_y-z@1"):
        assert wire.check_path(path) == path


def test_wire_error_and_directory_payloads() -> None:
    e = wire.reply_error(b"ENOENT\0")
    assert (e.errno, e.name) == (errno.ENOENT, "ENOENT")
    assert wire.reply_error(b"ENOTANERRNO\0").errno == 0
    assert wire.names(b"vbd\0vif\0") == [b"vbd", b"vif"]
    assert wire.names(b"") == []


def test_wire_request_ids_are_unique_and_fit_32_bits() -> None:
    ids = wire.RequestIds()
    got = [ids.next() for _ in range(1000)]
    assert len(set(got)) == 1000 and all(0 <= i < 1 << 32 for i in got)
