"""What the nested host's dom0 image is made of: its recipe.

A Debian 12 dom0 from Debian's packages only: the base packages a bootable systemd Debian
reachable over ssh needs, the xen_host role's package list (`role_packages`), the files
xenpvh writes into it and the ansible roles that configure it (`roles_digest`).
`ImageRecipe.key()` names the image's cache entry: it covers all of them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from xenpvh.build.debootstrap import packages_key
from xenpvh.errors import BlockedError
from xenpvh.provision import ANSIBLE_DIR

# Bump when the build steps change in a way the key would not otherwise see.
RECIPE_VERSION = 5

DEFAULT_SUITE = "bookworm"

# What the image needs before the roles run: a bootable systemd Debian reachable over ssh,
# with python3 for ansible.  Xen, libvirt and the bridge tools come from the xen_host role's
# package list (`role_packages()`), so the nested host gets exactly what a lab box gets;
# debootstrap installs them up front only so that the role's apt step finds them present.
BASE_PACKAGES: tuple[str, ...] = (
    "systemd-sysv",
    "openssh-server",
    "python3",
    "linux-image-amd64",
    "iproute2",
    "busybox",
    "e2fsprogs",
    "kmod",
    "udev",
    "dbus",
    # polkitd (libvirt-daemon-system) needs default-logind, which debootstrap cannot pick.
    "libpam-systemd",
    # what `xl`'s hotplug scripts and a debugging human expect in a dom0.
    "procps",
    "less",
    # the runner role's own packages (python3-venv, sudo): present before it runs.
    "python3-venv",
    "python3-packaging",
    "sudo",
)


def role_packages(ansible_dir: Path | None = None) -> tuple[str, ...]:
    """The Debian packages the xen_host role installs with its defaults (one source of truth
    for the package list of a lab box and of the nested image)."""
    defaults = (ansible_dir or ANSIBLE_DIR) / "roles/xen_host/defaults/main.yml"
    try:
        d = yaml.safe_load(defaults.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise BlockedError(f"cannot read the xen_host role's defaults {defaults}: {e}") from e
    names = list(d.get("xen_host_packages") or [])
    if d.get("xen_host_libvirt", True):
        names += list(d.get("xen_host_libvirt_packages") or [])
    names += list(d.get("xen_host_extra_packages") or [])
    bad = [
        n for n in names if not isinstance(n, str) or not re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", n)
    ]
    if bad:
        raise BlockedError(f"{defaults}: not Debian package names: {bad}")
    return tuple(names)


def roles_digest(ansible_dir: Path | None = None) -> str:
    """sha256 over every file of the ansible tree: a change in a role rebuilds the image."""
    root = ansible_dir or ANSIBLE_DIR
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        if rel.startswith(".") or "/." in rel or rel.endswith(".retry"):
            continue
        h.update(f"{rel}\0{f.stat().st_size}\0".encode())
        h.update(f.read_bytes())
    return h.hexdigest()


# Variables for site.yml when it provisions the image: no build tools in a dom0 that only
# boots guests; the runner role's toolkit install is for lab boxes (the nested host is
# driven from outside, over ssh).
IMAGE_ROLE_VARS: Mapping[str, object] = {
    "xenpvh_build_host": False,
    "xenpvh_runner_nightly": False,
}

HOSTNAME = "xenpvh-dom0"
DISK_SIZE = "3G"
DOM0_CMDLINE = "root=/dev/vda rw console=hvc0 net.ifnames=0"


@dataclass(frozen=True)
class ImageRecipe:
    """Everything that determines the image's content; its `key()` names the cache entry."""

    suite: str = DEFAULT_SUITE
    packages: tuple[str, ...] = field(default_factory=lambda: BASE_PACKAGES + role_packages())
    hostname: str = HOSTNAME
    disk_size: str = DISK_SIZE
    extra_files: Mapping[str, bytes] = field(default_factory=dict)
    # The ansible roles that configure the image (site.yml over the chroot connection).
    roles: str = field(default_factory=roles_digest)
    role_vars: Mapping[str, object] = field(default_factory=lambda: dict(IMAGE_ROLE_VARS))

    def files(self) -> dict[str, tuple[bytes, int]]:
        """Files written into the root tree: path → (content, mode)."""
        files: dict[str, tuple[bytes, int]] = {
            "etc/hostname": (f"{self.hostname}\n".encode(), 0o644),
            "etc/hosts": (
                f"127.0.0.1 localhost\n127.0.1.1 {self.hostname}\n".encode(),
                0o644,
            ),
            "etc/fstab": (b"/dev/vda / ext4 rw,errors=remount-ro 0 1\n", 0o644),
            "etc/ssh/sshd_config.d/xenpvh.conf": (
                b"PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                b"HostKey /etc/ssh/ssh_host_ed25519_key\nUseDNS no\n",
                0o644,
            ),
            # A tty-less dom0 should not wait on a getty for the hypervisor console.
            "etc/systemd/system/serial-getty@hvc0.service": (b"", 0o644),
        }
        files.update({k: (v, 0o644) for k, v in self.extra_files.items()})
        return files

    def key(self) -> str:
        h = hashlib.sha256()
        h.update(f"recipe={RECIPE_VERSION}\nsuite={self.suite}\nsize={self.disk_size}\n".encode())
        h.update(("packages=" + ",".join(sorted(self.packages)) + "\n").encode())
        h.update(f"roles={self.roles}\n".encode())
        h.update(("role_vars=" + json.dumps(dict(self.role_vars), sort_keys=True) + "\n").encode())
        for path, (content, mode) in sorted(self.files().items()):
            h.update(f"file={path}:{mode:o}:{len(content)}\n".encode())
            h.update(content)
        return h.hexdigest()[:24]

    def packages_key(self) -> str:
        """Names the cached package tarball: only suite and package list shape it."""
        return packages_key(self.suite, self.packages, {})


__all__ = [
    "BASE_PACKAGES",
    "DEFAULT_SUITE",
    "DISK_SIZE",
    "DOM0_CMDLINE",
    "HOSTNAME",
    "IMAGE_ROLE_VARS",
    "RECIPE_VERSION",
    "ImageRecipe",
    "role_packages",
    "roles_digest",
]
