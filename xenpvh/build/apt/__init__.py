"""Debian's apt for the build room: reading apt's source lists (`sources`), a private apt
tree for source and binary packages (`private`), package identities (`package`) and running
the apt tools (`run`)."""

from xenpvh.build.apt.package import DebianVersion, DebPackage
from xenpvh.build.apt.private import PrivateApt, unpack_source
from xenpvh.build.apt.run import reporting
from xenpvh.build.apt.sources import (
    Mirror,
    debian_mirror,
    os_codename,
    release_mirrors,
    release_update_mirrors,
    system_mirrors,
)

__all__ = [
    "DebPackage",
    "DebianVersion",
    "Mirror",
    "PrivateApt",
    "debian_mirror",
    "os_codename",
    "release_mirrors",
    "release_update_mirrors",
    "reporting",
    "system_mirrors",
    "unpack_source",
]
