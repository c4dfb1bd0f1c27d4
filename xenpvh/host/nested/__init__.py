"""NestedHost: a real Xen host that xenpvh boots itself under QEMU on this machine.

QEMU's multiboot loader starts Xen (an ELF image) with the Debian dom0 kernel and initrd as
modules; the dom0 runs from the cached image (`image.py`) with `snapshot=on`, so every boot
starts pristine.  Once ssh answers (with the image's pinned host key) and `xl list` works,
the host is `ready` and every Host call is delegated to an SSHHost on the forwarded port.

Warm start (default): the first up() of a configuration boots cold once and saves the ready
machine (`savevm` into a qcow2 overlay of the image, kept beside it in the cache); later
up() calls resume a throw-away copy of it with `-loadvm` (~5-10 s instead of ~75 s+ cold).
If resuming fails, up() boots cold.  `warm=False` always boots cold.

States: absent → booting → ready → stopping → stopped, and failed from booting/ready.
A QEMU process never outlives the process that started it (PR_SET_PDEATHSIG, atexit and the
context manager), unless `up(detach=True)`: then a state file lets a later process find it.

One concept per module: `qemu` (the QEMU command line, accelerator, TCG faults), `process`
(starting, watching and stopping that QEMU), `ready` (waiting for ssh and `xl list`),
`record` (states and the state file), `warm` (the saved machine state), `reap` (stale run
dirs), `hang` (a machine hung under a command), `delegate` (the Host calls, over the dom0's
ssh) and `host` (NestedHost itself).  What a nested host does while it boots goes to its
progress sink (`xenpvh.util.progress`), never to a terminal.
"""

from xenpvh.host.nested.host import NestedHost
from xenpvh.host.nested.qemu import (
    DEFAULT_XEN_CMDLINE,
    QEMU,
    TCG_FAULTS,
    QemuConfig,
    detect_accel,
    free_port,
    ssh_banner_ready,
)
from xenpvh.host.nested.ready import BootTimes
from xenpvh.host.nested.reap import RUN_DIR_PREFIX, reap_stale_run_dirs
from xenpvh.host.nested.record import NestedRecord, NestedState, NestedStatus, state_dir
from xenpvh.host.nested.warm import WARM_KEEP, WARM_SNAPSHOT, WARM_VERSION, prune_warm

__all__ = [
    "DEFAULT_XEN_CMDLINE",
    "QEMU",
    "RUN_DIR_PREFIX",
    "TCG_FAULTS",
    "WARM_KEEP",
    "WARM_SNAPSHOT",
    "WARM_VERSION",
    "BootTimes",
    "NestedHost",
    "NestedRecord",
    "NestedState",
    "NestedStatus",
    "QemuConfig",
    "detect_accel",
    "free_port",
    "prune_warm",
    "reap_stale_run_dirs",
    "ssh_banner_ready",
    "state_dir",
]
