"""The `libvirt` driver class: the connection to libvirtd (relayed over the Host, every call
under a deadline) and the Toolstack protocol on top of it."""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import libvirt

from xenpvh.errors import BlockedError, BrokenError, XenpvhError
from xenpvh.host.base import Host
from xenpvh.profile.domain import DomainSpec
from xenpvh.render.libvirt import render_libvirt_xml
from xenpvh.toolstack.base import Domain, Prepared, check_domain_name
from xenpvh.toolstack.console import MAX_LOG_BYTES, ConsoleCapture
from xenpvh.toolstack.libvirt.domain_xml import caps_os_types, os_machine, xml_name
from xenpvh.toolstack.libvirt.errors import (
    LibvirtCallError,
    quiet_error_handler,
    translate,
    version_string,
)
from xenpvh.toolstack.libvirt.relay import SocketRelay
from xenpvh.toolstack.xenstore import relay_argv
from xenpvh.toolstack.xl import Xl, parse_info
from xenpvh.toolstack.xl import version_string as xl_version_string
from xenpvh.util.fs import atomic_write_bytes
from xenpvh.util.progress import Note, ProgressSink, emit

logger = logging.getLogger(__name__)

T = TypeVar("T")

LIBVIRT_SOCKET = "/var/run/libvirt/libvirt-sock"
# PVH in libvirt's libxl driver: machine 'xenpvh' exists from libvirt 4.10 on Xen >= 4.10.
MIN_LIBVIRT = 4_010_000
MIN_XEN = (4, 10)
PVH_MACHINE = "xenpvh"
# Host-side log excerpts are bounded: a runaway log must not fill the artifacts.
LOG_TAIL_BYTES = 1024 * 1024


def _release(holder: dict[str, Any]) -> None:
    """Close a connection and its relay without waiting on a possibly wedged libvirtd."""
    conn, relay = holder.pop("conn", None), holder.pop("relay", None)
    if relay is not None:
        relay.close()  # first: EOF unblocks anything still waiting on the connection
    if conn is not None:
        t = threading.Thread(target=lambda: _close_quietly(conn), daemon=True)
        t.start()
        t.join(5)


def _close_quietly(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.close()


class Libvirt:
    """libvirt's libxl driver on one Host.

    `connect` replaces the relay + `xen+unix://` connection (unit tests pass a factory for
    libvirt's `test:///default` driver).  `timeout` bounds every libvirt call and every
    `xl`/host command; starting a domain gets `create_timeout` (hotplug scripts are slow on
    a TCG dom0).
    """

    name = "libvirt"

    def __init__(
        self,
        host: Host,
        *,
        socket_path: str = LIBVIRT_SOCKET,
        timeout: float = 60.0,
        create_timeout: float = 180.0,
        connect: Callable[[], Any] | None = None,
        progress: ProgressSink | None = None,
    ) -> None:
        self.host = host
        self.socket_path = socket_path
        self.timeout = timeout
        self.create_timeout = create_timeout
        self.progress = progress
        self.xl = Xl(host, timeout=timeout, create_timeout=create_timeout)
        self._connect = connect
        # Held in a dict so the finalizer can release it without a reference to self.
        self._held: dict[str, Any] = {}
        self._finalizer = weakref.finalize(self, _release, self._held)
        self._last_name: str | None = None

    # -- connection -------------------------------------------------------------------------

    def _log(self, msg: str) -> None:
        logger.info("libvirt: %s", msg)
        emit(self.progress, Note(f"libvirt {msg}"))

    @property
    def uri(self) -> str:
        relay = self._held.get("relay")
        return f"xen+unix:///system?socket={relay.path}" if relay else "(not connected)"

    def connection(self) -> Any:
        """The open connection (opened on first use, reopened after a failure)."""
        # Process-global and cheap: (re)asserted on every use, so another library that
        # installed its own handler cannot make us print to stderr.
        libvirt.registerErrorHandler(quiet_error_handler, None)
        conn = self._held.get("conn")
        if conn is not None:
            return conn
        if self._connect is not None:
            conn = self._call("open", self._connect, reconnect=False)
        else:
            conn = self._open_relayed()
        self._held["conn"] = conn
        return conn

    def _open_relayed(self) -> Any:
        self._log(f"relaying {self.host.name}:{self.socket_path}")
        relay = SocketRelay(
            lambda: self.host.open_stream(relay_argv(self.socket_path)), label="libvirt-relay"
        )
        relay.start()
        self._held["relay"] = relay
        uri = f"xen+unix:///system?socket={relay.path}"
        try:
            conn = self._call("open", lambda: libvirt.open(uri), reconnect=False)
        except XenpvhError as e:
            self._held.pop("relay", None)
            relay.close()
            raise BrokenError(f"{e}{self._diagnose()}") from e
        self._log(f"connected: {uri}")
        return conn

    def _diagnose(self) -> str:
        """Why the daemon may be unreachable, in words a human can act on."""
        hints: list[str] = []
        try:
            if not self.host.run(["test", "-S", self.socket_path], timeout=self.timeout).ok:
                hints.append(f"{self.socket_path} does not exist on {self.host.name}")
            st = self.host.run(["systemctl", "is-active", "libvirtd"], timeout=self.timeout)
            hints.append(f"libvirtd is {st.out.strip() or 'unknown'}")
            # libvirtd exits when its libxl driver cannot initialise (e.g. it finds no CPU
            # model for the host's features); the journal says why in one line.
            log = self.host.run(
                ["journalctl", "-u", "libvirtd", "-n", "50", "--no-pager", "-o", "cat"],
                timeout=self.timeout,
            ).out
            errors = [ln for ln in log.splitlines() if "error" in ln.lower() or "fail" in ln]
            if errors:
                hints.append("libvirtd journal: " + " | ".join(errors[-3:]))
        except XenpvhError as e:
            hints.append(f"host check failed: {e}")
        return f" ({'; '.join(hints)})" if hints else ""

    def close(self) -> None:
        _release(self._held)

    def __enter__(self) -> Libvirt:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self,
        what: str,
        fn: Callable[..., T],
        *args: Any,
        timeout: float | None = None,
        reconnect: bool = True,
    ) -> T:
        """fn(*args) in a worker thread with a deadline; libvirt errors are translated."""
        limit = self.timeout if timeout is None else timeout
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["value"] = fn(*args)
            except BaseException as e:  # handed to the caller's thread
                box["error"] = e

        t = threading.Thread(target=work, name=f"xenpvh-libvirt-{what}", daemon=True)
        t.start()
        t.join(limit)
        if t.is_alive():
            # The connection is unusable now; dropping the relay makes the stuck call end.
            if reconnect:
                _release(self._held)
            raise BrokenError(
                f"libvirt {what} on {self.host.name} did not answer within {limit:g}s "
                "(libvirtd wedged or the relay died)"
            )
        err = box.get("error")
        if err is not None:
            if isinstance(err, libvirt.libvirtError):
                if reconnect and self._dead(err):
                    _release(self._held)
                raise translate(what, err) from err
            raise err
        return box["value"]  # type: ignore[no-any-return]

    @staticmethod
    def _dead(err: libvirt.libvirtError) -> bool:
        return err.get_error_code() in (libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_NO_CONNECT) or (
            err.get_error_domain() == libvirt.VIR_FROM_RPC
        )

    def lookup(self, name: str) -> Any | None:
        """The libvirt domain called `name`, or None when libvirt does not know it."""
        conn = self.connection()
        try:
            return self._call(f"lookupByName({name})", conn.lookupByName, check_domain_name(name))
        except LibvirtCallError as e:
            if e.code == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    # -- host facts -------------------------------------------------------------------------

    def versions(self) -> tuple[str, int, str]:
        """(Xen version "4.17.5", libvirtd's version number, capabilities XML)."""
        conn = self.connection()
        hv = version_string(self._call("getVersion", conn.getVersion))
        lib = self._call("getLibVersion", conn.getLibVersion)
        caps = self._call("getCapabilities", conn.getCapabilities)
        return hv, lib, caps

    # -- Toolstack protocol -----------------------------------------------------------------

    def prepare(self, spec: DomainSpec) -> Prepared:
        """Render the domain XML and check this libvirtd can build PVH guests at all."""

        xml = render_libvirt_xml(spec)  # RenderError (blocked) before touching the host
        conn = self.connection()
        driver = self._call("getType", conn.getType)
        hv, lib, caps = self.versions()
        where = f"libvirtd on {self.host.name}"
        if lib < MIN_LIBVIRT:
            raise BlockedError(
                f"{where} is {version_string(lib)}: PVH needs libvirt >= 4.10 (machine xenpvh)"
            )
        # libvirt's libxl driver reports Xen's release as 0 ("4.17.0" on 4.17.5): the exact
        # version comes from `xl info`, libvirt's must agree on major.minor.
        info_text = self.xl.info_text()
        xen = xl_version_string(parse_info(info_text))
        if hv.split(".")[:2] != xen.split(".")[:2]:
            raise BrokenError(f"{where} reports Xen {hv} but `xl info` says {xen}")
        major, minor = (int(x) for x in xen.split(".")[:2])
        if (major, minor) < MIN_XEN:
            raise BlockedError(f"{where} drives Xen {xen}: PVHv2 needs Xen >= 4.10")
        if PVH_MACHINE not in caps_os_types(caps):
            raise BlockedError(
                f"{where} ({driver} driver) offers no '{PVH_MACHINE}' guest type in its "
                f"capabilities (has: {', '.join(sorted(caps_os_types(caps))) or 'none'})"
            )
        info = f"libvirt {version_string(lib)}, driver {driver}, Xen {hv}\n{info_text}"
        return Prepared(config=xml, filename="domain.xml", xen_version=xen, host_info=info)

    def create(
        self, cfg_remote_path: str, paused: bool = True, *, name: str | None = None
    ) -> Domain:
        """Define the uploaded domain XML and start it (paused by default).

        A domain that was defined but failed to start is undefined again before the error
        propagates, so nothing is left behind in libvirt's config store.
        """
        xml = self.host.run(["cat", "--", cfg_remote_path], timeout=self.timeout, check=True).out
        in_xml = xml_name(xml, where=cfg_remote_path)
        if name is None:
            name = in_xml
        check_domain_name(name)
        if in_xml != name:
            raise BlockedError(f"{cfg_remote_path} defines domain {in_xml!r}, expected {name!r}")
        conn = self.connection()
        self._last_name = name
        self._log(f"define + start{' paused' if paused else ''} {name}")
        dom = self._call(f"defineXML({name})", conn.defineXML, xml)
        flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
        try:
            self._call(
                f"createWithFlags({name})", dom.createWithFlags, flags, timeout=self.create_timeout
            )
            domid = self._call(f"ID({name})", dom.ID)
        except BaseException:
            with contextlib.suppress(Exception):
                self.destroy(name)
            raise
        if domid is None or domid < 0:
            raise BrokenError(f"libvirt started {name} but reports no domain id ({domid!r})")
        return Domain(name=name, domid=int(domid))

    def _require(self, name: str) -> Any:
        dom = self.lookup(name)
        if dom is None:
            raise BrokenError(f"libvirt on {self.host.name} knows no domain {name!r}")
        return dom

    def live_xml(self, name: str) -> str:
        dom = self._require(name)
        return self._call(f"XMLDesc({name})", dom.XMLDesc, 0)

    def verify_pvh(self, name: str) -> None:
        """BlockedError unless the domain is PVH in libvirt's live XML *and* in libxl.

        The live XML says what libvirt asked for; `xl list -l` says what libxl built.
        """
        os_type, machine = os_machine(self.live_xml(name))
        if PVH_MACHINE not in (os_type, machine):
            raise BlockedError(
                f"domain {name}: libvirt's live XML has <os><type machine={machine!r}>"
                f"{os_type}</type>, not {PVH_MACHINE}; this libvirtd does not build PVH guests"
            )
        t = self.xl.domain_type(name)
        if t != "pvh":
            raise BlockedError(
                f"domain {name} was built as type {t!r}, not 'pvh', by libvirt's libxl driver "
                f"on {self.host.name} (live XML asked for {os_type}/{machine})"
            )

    def console(
        self, domain: Domain, *, log_path: Path, max_log_bytes: int = MAX_LOG_BYTES
    ) -> ConsoleCapture:
        # libvirt's libxl domains get a xenconsoled console like xl's: the same capture
        # (and its xenconsoled-log fallback) serves both drivers.
        return ConsoleCapture(self.host, domain, log_path=log_path, max_log_bytes=max_log_bytes)

    def unpause(self, name: str) -> None:
        dom = self._require(name)
        self._call(f"resume({name})", dom.resume)

    def destroy(self, name: str, *, wait: float = 30.0) -> bool:
        """Destroy and undefine; True when anything was destroyed or undefined.

        Idempotent.  Afterwards `xl` is asked too: a domain libvirt lost track of (libvirtd
        restarted mid-run) is still a libxl domain and must not outlive the run.
        """
        check_domain_name(name)
        done = False
        dom = self.lookup(name)
        if dom is not None:
            if self._call(f"isActive({name})", dom.isActive):
                done |= self._tolerate(f"destroy({name})", dom.destroy)
            if self._call(f"isPersistent({name})", dom.isPersistent):
                done |= self._tolerate(f"undefine({name})", dom.undefine)
        if self.xl.destroy(name, wait=wait):
            done = True
        return done

    def _tolerate(self, what: str, fn: Callable[[], object]) -> bool:
        """Run a teardown step; a domain that vanished meanwhile is not an error."""
        try:
            self._call(what, fn)
        except LibvirtCallError as e:
            if e.code in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
                return False
            raise
        return True

    def list_names(self) -> list[str]:
        """Every domain libvirt knows, running or only defined."""
        conn = self.connection()
        doms = self._call("listAllDomains", conn.listAllDomains, 0)
        return [self._call("name", d.name) for d in doms]

    def sweep(self, prefix: str = "xenpvh-", *, keep: tuple[str, ...] = ()) -> list[str]:
        """Destroy + undefine stale `<prefix>*` domains known to libvirt, then the ones only
        xl knows (an earlier xl run or a libvirtd that lost them); returns their names."""
        if not prefix:
            raise BlockedError("sweep needs a non-empty name prefix")
        gone: list[str] = []
        for n in self.list_names():
            if n.startswith(prefix) and n not in keep and self.destroy(n):
                gone.append(n)
        gone += [n for n in self.xl.sweep(prefix, keep=keep) if n not in gone]
        return gone

    def collect(self, artifacts: Path) -> dict[str, Path]:
        """Hypervisor log, libvirt's view of the domain and libvirtd's logs (best effort per
        item; the items that failed are named in one BrokenError after the rest is saved)."""
        out: dict[str, Path] = {}
        problems: list[str] = []

        def save(key: str, filename: str, get: Callable[[], str | bytes]) -> None:
            try:
                data = get()
            except XenpvhError as e:
                problems.append(f"{filename}: {e}")
                return
            p = artifacts / filename
            p.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(p, data.encode() if isinstance(data, str) else data)
            out[key] = p

        save("xl-dmesg", "xl-dmesg.txt", self.xl.dmesg)
        save("xl-info", "xl-info.txt", self.xl.info_text)
        save("libvirt-capabilities", "libvirt-capabilities.xml", lambda: self.versions()[2])
        name = self._last_name
        if name is not None:
            save("domain-live", "domain-live.xml", lambda: self.live_xml(name))
            save(
                "libvirt-libxl-log",
                "libvirt-libxl.log",
                lambda: self._tail(f"/var/log/libvirt/libxl/{name}.log"),
            )
        save(
            "libvirtd-journal",
            "libvirtd-journal.txt",
            lambda: self._host_out(
                ["journalctl", "-u", "libvirtd", "-n", "200", "--no-pager", "-o", "short-iso"]
            ),
        )
        if problems:
            raise BrokenError("collect: " + "; ".join(problems))
        return out

    def _tail(self, path: str) -> bytes:
        return self._host_out(["tail", "-c", str(LOG_TAIL_BYTES), "--", path]).encode()

    def _host_out(self, argv: list[str]) -> str:
        return self.host.run(argv, timeout=self.timeout, check=True).out[-LOG_TAIL_BYTES:]
