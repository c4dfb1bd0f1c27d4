"""SocketRelay: a private local unix socket whose every connection is spliced to a new
stream on the Host, which is how the libvirt client reaches libvirtd's socket on the dom0."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from xenpvh.errors import BrokenError
from xenpvh.host.base import ByteStream


class SocketRelay:
    """A private local unix socket whose every connection is spliced to a new host stream.

    States: new -> listening (start) -> closed (close).  One accept thread; two pump threads
    per connection.  Closing shuts everything down, which also unblocks a libvirt call stuck
    on the socket (it sees EOF).
    """

    POLL = 0.5  # how often blocked pumps look at the stop flag

    def __init__(self, open_stream: Callable[[], ByteStream], *, label: str = "relay") -> None:
        self._open_stream = open_stream
        self.label = label
        self.state = "new"
        self.path = ""
        self._dir = ""
        self._server: socket.socket | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._peers: list[tuple[socket.socket, ByteStream]] = []
        self._threads: list[threading.Thread] = []
        self.errors: list[str] = []

    def start(self) -> str:
        if self.state != "new":
            raise BrokenError(f"{self.label}: cannot start a relay that is {self.state}")
        self._dir = tempfile.mkdtemp(prefix="xenpvh-libvirt-")
        os.chmod(self._dir, 0o700)  # only we may connect: the socket is root on the dom0
        self.path = os.path.join(self._dir, "libvirt-sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            srv.bind(self.path)
            srv.listen(4)
            srv.settimeout(self.POLL)
        except OSError:
            srv.close()
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self._server = srv
        self.state = "listening"
        self._spawn(self._accept_loop, "accept")
        return self.path

    def _spawn(self, fn: Callable[..., None], what: str, *args: Any) -> None:
        t = threading.Thread(target=fn, args=args, name=f"xenpvh-{self.label}-{what}", daemon=True)
        self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            try:
                stream = self._open_stream()
            except Exception as e:  # the client sees EOF; the reason is kept for errors
                self.errors.append(f"opening the host stream failed: {e}")
                conn.close()
                continue
            conn.settimeout(self.POLL)
            stream.settimeout(self.POLL)
            with self._lock:
                self._peers.append((conn, stream))
            self._spawn(self._to_host, "up", conn, stream)
            self._spawn(self._from_host, "down", conn, stream)

    def _to_host(self, conn: socket.socket, stream: ByteStream) -> None:
        self._pump(conn.recv, stream.sendall, "local -> host", conn, stream)

    def _from_host(self, conn: socket.socket, stream: ByteStream) -> None:
        self._pump(stream.recv, conn.sendall, "host -> local", conn, stream)

    def _pump(
        self,
        recv: Callable[[int], bytes],
        send: Callable[[bytes], object],
        direction: str,
        conn: socket.socket,
        stream: ByteStream,
    ) -> None:
        """Copy recv -> send until EOF, an error or close(); then hang up both sides."""
        try:
            while not self._stop.is_set():
                try:
                    data = recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                send(data)
        except Exception as e:
            self.errors.append(f"{direction}: {e}")
        finally:
            self._hangup(conn, stream)

    def _hangup(self, conn: socket.socket, stream: ByteStream) -> None:
        # Either side ending ends both: libvirt's RPC has no half-closed state worth keeping.
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            conn.close()
        with contextlib.suppress(Exception):
            stream.close()

    def close(self) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        self._stop.set()
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.close()
        with self._lock:
            peers, self._peers = self._peers, []
        for conn, stream in peers:
            self._hangup(conn, stream)
        # One shared bound: every pump notices the stop flag within POLL seconds.
        deadline = time.monotonic() + 2 * self.POLL + 1
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
