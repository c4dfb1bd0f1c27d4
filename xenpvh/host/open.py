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
from typing import Any

from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.base import Host
from xenpvh.host.request import HostRequest

log = logging.getLogger(__name__)


@contextlib.contextmanager
def open_host(
    request: HostRequest, *, artifacts: Path | None = None, console: Any = None
) -> Iterator[Host]:
    """Yield a connected Host for `request`; a nested host this call booted is shut down at
    the end, one that was already up stays up.  `console` (a rich Console) only shows the
    nested host's progress; the library logs the same."""
    if request.nested:
        from xenpvh.build.qemu import check_choice
        from xenpvh.host.nested import NestedHost

        qemu = check_choice(request.qemu)
        running = running_nested_host(request.xen_image, qemu, console)
        if running is not None:
            try:
                yield running
            finally:
                running.close()
            return
        nested = NestedHost(
            console=console, artifacts=artifacts, xen_image=request.xen_image, qemu=qemu
        )
        with nested:
            yield nested
        return
    host: Host
    if request.spec == "local":
        from xenpvh.host.local import LocalHost

        host = LocalHost()
    else:
        from xenpvh.host.ssh import SSHHost

        if request.inventory is not None:
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


def running_nested_host(image: Path | None, qemu: str, console: Any = None) -> Any:
    """The nested host `xenpvh host nested up` left running, when it runs the Xen and the
    QEMU asked for; None otherwise (then the caller boots one of its own).
    XENPVH_NESTED_FRESH=1 always boots a fresh one."""
    from xenpvh.build.qemu import resolve_qemu
    from xenpvh.host.nested import NestedHost

    if os.environ.get("XENPVH_NESTED_FRESH") == "1":
        return None
    try:
        h = NestedHost.attach(console=console)
    except (BrokenError, BlockedError):  # none running, or its key files are gone
        return None
    if h.booted_xen != str(image or ""):
        return None
    wanted = resolve_qemu(qemu)
    if h.booted_qemu != str(wanted.path):
        return None
    h.qemu, h.qemu_binary = qemu, wanted
    log.info("nested host: using the one `xenpvh host nested up` started; it stays up")
    if console is not None:
        console.log(
            f"nested host: using the one `xenpvh host nested up` started "
            f"(pid {h.status().pid}); it stays up"
        )
    return h


__all__ = ["open_host", "running_nested_host"]
