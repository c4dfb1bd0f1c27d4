"""Open the host a request names, and always release it.

`nested` boots a Xen host under QEMU for the session (or reuses the one `xenpvh host nested
up` left running, when it runs the Xen and the QEMU asked for); `local` is this machine's
dom0; anything else is an ssh address or an inventory name.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from xenpvh.build.qemu import check_choice, resolve_qemu
from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.base import Host
from xenpvh.host.local import LocalHost
from xenpvh.host.nested import NestedHost
from xenpvh.host.request import HostRequest
from xenpvh.host.ssh import SSHHost
from xenpvh.util.progress import Note, ProgressSink, emit

log = logging.getLogger(__name__)


@contextlib.contextmanager
def open_host(
    request: HostRequest,
    *,
    artifacts: Path | None = None,
    progress: ProgressSink | None = None,
) -> Iterator[Host]:
    """Yield a connected Host for `request`; a nested host this call booted is shut down at
    the end, one that was already up stays up.  `progress` gets what the nested host does
    while it boots (the library logs the same)."""
    if request.nested:
        qemu = check_choice(request.qemu)
        running = running_nested_host(request.xen_image, qemu, progress)
        if running is not None:
            try:
                yield running
            finally:
                running.close()
            return
        nested = NestedHost(
            progress=progress, artifacts=artifacts, xen_image=request.xen_image, qemu=qemu
        )
        with nested:
            yield nested
        return
    host: Host
    if request.spec == "local":
        host = LocalHost()
    elif request.inventory is not None:
        host = SSHHost.from_inventory(request.inventory, request.spec)
    else:
        # ssh://user@host[:port], user@host[:port], host, or a ~/.ssh/config alias
        # (ProxyJump included); host keys are verified.
        host = SSHHost.from_spec(
            request.spec, identity=request.identity, known_hosts=request.known_hosts
        )
    try:
        yield host
    finally:
        host.close()


def running_nested_host(
    image: Path | None, qemu: str, progress: ProgressSink | None = None
) -> NestedHost | None:
    """The nested host `xenpvh host nested up` left running, when it runs the Xen and the
    QEMU asked for; None otherwise (then the caller boots one of its own).
    XENPVH_NESTED_FRESH=1 always boots a fresh one."""
    if os.environ.get("XENPVH_NESTED_FRESH") == "1":
        return None
    try:
        h = NestedHost.attach(progress=progress)
    except (BrokenError, BlockedError):  # none running, or its key files are gone
        return None
    if h.booted_xen != str(image or ""):
        return None
    wanted = resolve_qemu(qemu, progress=progress)
    if h.booted_qemu != str(wanted.path):
        return None
    h.qemu, h.qemu_binary = qemu, wanted
    log.info("nested host: using the one `xenpvh host nested up` started; it stays up")
    emit(
        progress,
        Note(
            f"nested host: using the one `xenpvh host nested up` started "
            f"(pid {h.status().pid}); it stays up"
        ),
    )
    return h


__all__ = ["open_host", "running_nested_host"]
