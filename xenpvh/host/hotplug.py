"""Lean hotplug scripts for hosts whose every fork is expensive (the nested host under TCG).

libxl runs a hotplug script per disk and vif when a domain is created and destroyed.  The
distribution's scripts (`/etc/xen/scripts/block`, `vif-bridge`) are general: bash, sourcing
half a dozen helpers, dozens of `xenstore-read`s, a loop over every loop device to refuse a
shared file.  Measured on the nested host (QEMU TCG) they take 3.3 s (`block add`) and 2.9 s
(`vif-bridge online`) of a 12 s `xl create`, and most of a 4.6 s `xl destroy`.

These do what a test guest needs and nothing more, with the same xenstore protocol: the
block script attaches a file-backed disk to a loop device and publishes
`physical-device` (hex major:minor) for blkback; the vif script enslaves the vif to the
bridge named in xenstore and writes `hotplug-status = connected`, which netback waits for.
Failures write `hotplug-error` and exit non-zero, so xl reports them as it reports the
distribution's.  A host opts in by declaring them (`NestedHost.hotplug_scripts`); lab boxes
keep their own.  POSIX sh, arguments quoted, no eval.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

BLOCK = r"""#!/bin/sh
# xenpvh lean block hotplug script (see xenpvh/host/hotplug.py): file-backed disks only.
dir=$XENBUS_PATH
fail() {
    xenstore-write "$dir/hotplug-error" "$*" "$dir/hotplug-status" error
    echo "xenpvh-block: $*" >&2
    exit 1
}
case "$1" in
add)
    params=$(xenstore-read "$dir/params") || fail "no $dir/params"
    mode=$(xenstore-read "$dir/mode") || mode=w
    if [ -b "$params" ]; then
        dev=$params
    else
        [ -f "$params" ] || fail "$params does not exist"
        if [ "$mode" = r ]; then
            dev=$(losetup --find --show --read-only -- "$params") || fail "losetup $params"
        else
            dev=$(losetup --find --show -- "$params") || fail "losetup $params"
        fi
    fi
    majmin=$(stat -L -c '%t:%T' -- "$dev") || fail "stat $dev"
    xenstore-write "$dir/node" "$dev" "$dir/physical-device" "$majmin" \
        "$dir/physical-device-path" "$dev" "$dir/hotplug-status" connected ||
        fail "xenstore-write $dir"
    ;;
remove)
    node=$(xenstore-read "$dir/node" 2>/dev/null) || exit 0
    case "$node" in
    /dev/loop*) losetup -d "$node" ;;
    esac
    ;;
esac
exit 0
"""

VIF_BRIDGE = r"""#!/bin/sh
# xenpvh lean vif hotplug script (see xenpvh/host/hotplug.py): bridge the vif.
dir=$XENBUS_PATH
fail() {
    xenstore-write "$dir/hotplug-error" "$*" "$dir/hotplug-status" error
    echo "xenpvh-vif: $*" >&2
    exit 1
}
case "$1" in
online|add)
    bridge=$(xenstore-read "$dir/bridge") || fail "no $dir/bridge"
    [ -e "/sys/class/net/$bridge/bridge" ] || fail "bridge $bridge does not exist"
    ip link set dev "$vif" master "$bridge" up || fail "cannot add $vif to $bridge"
    xenstore-write "$dir/hotplug-status" connected || fail "xenstore-write $dir"
    ;;
offline|remove)
    ip link set dev "$vif" down 2>/dev/null
    xenstore-rm "$dir/hotplug-status" 2>/dev/null
    ;;
esac
exit 0
"""


@dataclass(frozen=True)
class HotplugScript:
    """A script a host wants used for one device kind ("vbd" or "vif")."""

    kind: str
    name: str
    text: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def remote_path(self, root: str) -> str:
        """Content-addressed: a changed script never overwrites one a running domain uses."""
        return f"{root}/scripts/{self.digest}-{self.name}"


LEAN_SCRIPTS: tuple[HotplugScript, ...] = (
    HotplugScript("vbd", "block", BLOCK),
    HotplugScript("vif", "vif-bridge", VIF_BRIDGE),
)


def hotplug_scripts(host: object) -> tuple[HotplugScript, ...]:
    """The scripts a host declares (none unless it has a `hotplug_scripts` attribute)."""
    scripts = getattr(host, "hotplug_scripts", ())
    return tuple(scripts) if isinstance(scripts, tuple | list) else ()


__all__ = ["LEAN_SCRIPTS", "HotplugScript", "hotplug_scripts"]
