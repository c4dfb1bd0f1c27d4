"""The `libvirt` driver: libvirt's libxl ("xen") driver in the dom0, reached through a Host.

libvirt's libxl driver only loads in a privileged libvirtd on the real dom0, so the client
side (libvirt-python, here) talks to that daemon over its unix socket.  We reach the socket
the same way for every Host: `host.open_stream` starts a tiny relay on the dom0 (python3,
argv only) spliced to `/var/run/libvirt/libvirt-sock`, and `SocketRelay` offers it as a
private unix socket here (0700 directory) that `xen+unix:///system?socket=...` connects to.
No shell string is built and ssh host keys stay verified by the Host itself.

libvirt-python calls block without a bound (a wedged libvirtd or a dead relay hangs them), so
every call runs in a worker thread with a deadline; on expiry the connection is torn down
(which unblocks the worker) and BrokenError is raised.  libvirt's default error handler
prints every error to stderr; a silent one is registered instead -- errors still arrive as
exceptions.

Run order (xenpvh.run.boot): prepare -> sweep -> create (define + start paused) ->
verify_pvh -> console -> unpause -> ... -> collect -> destroy (destroy + undefine, always).
libvirt's libxl domains are ordinary libxl domains, so the console (`xl console` over a
pty, xenconsoled log fallback), the PVH proof (`xl list -l` c_info.type) and XenStore are
shared with the xl driver.

One concept per module: `relay` (SocketRelay), `errors` (libvirt errors as xenpvh's),
`domain_xml` (reading libvirt's XML) and `driver` (the Libvirt class).
"""

from xenpvh.toolstack.libvirt.domain_xml import caps_os_types, os_machine, xml_name
from xenpvh.toolstack.libvirt.driver import (
    LIBVIRT_SOCKET,
    LOG_TAIL_BYTES,
    MIN_LIBVIRT,
    MIN_XEN,
    PVH_MACHINE,
    Libvirt,
)
from xenpvh.toolstack.libvirt.errors import (
    LibvirtCallError,
    LibvirtInputError,
    translate,
    version_string,
)
from xenpvh.toolstack.libvirt.relay import SocketRelay

__all__ = [
    "LIBVIRT_SOCKET",
    "LOG_TAIL_BYTES",
    "MIN_LIBVIRT",
    "MIN_XEN",
    "PVH_MACHINE",
    "Libvirt",
    "LibvirtCallError",
    "LibvirtInputError",
    "SocketRelay",
    "caps_os_types",
    "os_machine",
    "translate",
    "version_string",
    "xml_name",
]
