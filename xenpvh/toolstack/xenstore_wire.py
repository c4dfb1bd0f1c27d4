"""The XenStore wire format, as xenstored speaks it on its unix socket (xs_wire.h).

A message is a header of four native (little-endian on x86) 32-bit words -- type, request
id, transaction id, payload length -- followed by the payload: for the requests we send,
a NUL-terminated path.  xenstored echoes the request id, answers a connection's requests
in order, and reports an error as type XS_ERROR with the errno's name ("ENOENT\\0").

Only what xenpvh reads with is here (no writes, no watches, no transactions): the framing
is ours (pyxs keeps its packets in private names, and its client has no deadlines), while the
XenStore semantics that pyxs publishes stay pyxs's -- its path rules (`pyxs.helpers.
check_path`), its errno decoding (`pyxs.helpers.error`) and its exception classes.
"""

from __future__ import annotations

import errno
import itertools
import os
import struct
import threading
from dataclasses import dataclass
from enum import IntEnum

from pyxs.exceptions import InvalidPath, PyXSError
from pyxs.helpers import check_path as pyxs_check_path
from pyxs.helpers import error as pyxs_error

# struct xsd_sockmsg: type, req_id, tx_id, len.
HEADER = struct.Struct("<IIII")
# XENSTORE_PAYLOAD_MAX: a longer message is not xenstored's.
PAYLOAD_MAX = 4096
# XENSTORE_ABS_PATH_MAX: the longest absolute path xenstored takes.
ABS_PATH_MAX = 3072
NUL = b"\0"


class XsOp(IntEnum):
    """enum xsd_sockmsg_type (Xen 4.x numbering; 20 was XS_RESTRICT, since removed)."""

    CONTROL = 0
    DIRECTORY = 1
    READ = 2
    GET_PERMS = 3
    WATCH = 4
    UNWATCH = 5
    TRANSACTION_START = 6
    TRANSACTION_END = 7
    INTRODUCE = 8
    RELEASE = 9
    GET_DOMAIN_PATH = 10
    WRITE = 11
    MKDIR = 12
    RM = 13
    SET_PERMS = 14
    WATCH_EVENT = 15
    ERROR = 16
    IS_DOMAIN_INTRODUCED = 17
    RESUME = 18
    SET_TARGET = 19
    RESTRICT = 20
    RESET_WATCHES = 21
    DIRECTORY_PART = 22


_KNOWN_OPS = frozenset(int(o) for o in XsOp)


class WireError(ValueError):
    """Bytes that are not a XenStore message (unknown type, payload too long)."""


class XenStoreError(PyXSError):
    """xenstored answered with XS_ERROR: `errno` and its name as sent."""

    def __init__(self, code: int, name: str) -> None:
        super().__init__(code, name)
        self.errno = code
        self.name = name

    def __str__(self) -> str:
        return f"{self.name} ({errno.errorcode.get(self.errno, '?')}: {_strerror(self.errno)})"


def _strerror(code: int) -> str:
    return os.strerror(code) if code else "unknown error"


@dataclass(frozen=True)
class Packet:
    """One message, either way."""

    op: int
    rq_id: int
    payload: bytes
    tx_id: int = 0

    def encode(self) -> bytes:
        if len(self.payload) > PAYLOAD_MAX:
            raise WireError(f"a {len(self.payload)}-byte payload (at most {PAYLOAD_MAX})")
        return HEADER.pack(self.op, self.rq_id, self.tx_id, len(self.payload)) + self.payload


@dataclass(frozen=True)
class Header:
    op: int
    rq_id: int
    tx_id: int
    size: int


def decode_header(data: bytes) -> Header:
    """The header at the start of `data` (HEADER.size bytes); WireError when it cannot be
    xenstored's (an unknown type or a payload over PAYLOAD_MAX)."""
    op, rq_id, tx_id, size = HEADER.unpack(data[: HEADER.size])
    if size > PAYLOAD_MAX:
        raise WireError(f"a {size}-byte reply (at most {PAYLOAD_MAX})")
    if op not in _KNOWN_OPS:
        raise WireError(f"unknown message type {op}")
    return Header(op, rq_id, tx_id, size)


def check_path(path: bytes) -> bytes:
    """`path` if xenstored takes it as an absolute node path; pyxs's InvalidPath otherwise.

    pyxs's rules (characters, length, no `//`, no trailing `/`) plus ours: absolute only (a
    relative path would be resolved against the relay's own domain, not the guest's) and no
    NUL inside (pyxs tolerates one at the end; the request adds its own)."""
    if not path.startswith(b"/") or NUL in path or len(path) > ABS_PATH_MAX:
        raise InvalidPath(path)
    return pyxs_check_path(path)


def request(op: XsOp, path: bytes, rq_id: int) -> Packet:
    """A request about one node: its path NUL-terminated, outside any transaction."""
    return Packet(int(op), rq_id, check_path(path) + NUL)


def reply_error(payload: bytes) -> XenStoreError:
    """The error an XS_ERROR reply carries (its payload is the errno's name)."""
    raw = payload.rstrip(NUL)
    code = pyxs_error(raw).args[0] if raw.startswith(b"E") else 0
    return XenStoreError(code, raw.decode("ascii", "replace"))


def names(payload: bytes) -> list[bytes]:
    """A DIRECTORY reply's child names (each NUL-terminated)."""
    return [n for n in payload.split(NUL) if n]


class RequestIds:
    """Request ids for one process: unique while they fit in 32 bits, then wrapping."""

    def __init__(self) -> None:
        self._count = itertools.count(1)
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            return next(self._count) % (1 << 32)


__all__ = [
    "ABS_PATH_MAX",
    "HEADER",
    "NUL",
    "PAYLOAD_MAX",
    "Header",
    "InvalidPath",
    "Packet",
    "RequestIds",
    "WireError",
    "XenStoreError",
    "XsOp",
    "check_path",
    "decode_header",
    "names",
    "reply_error",
    "request",
]
