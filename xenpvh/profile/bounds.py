"""Upper bounds on what a profile or a request may ask of a host, named in the error when
exceeded: far above any real PVH test guest, far below what would take a host down or make
a run pointless.  One home, so the profile loader, a profile point and a request agree."""

from __future__ import annotations

MAX_VCPUS = 512
MAX_MEMORY_MB = 1024 * 1024  # 1 TiB
# The whole guest command line; Linux's COMMAND_LINE_SIZE on x86 is 2048, FreeBSD's smaller.
MAX_CMDLINE = 4096

__all__ = ["MAX_CMDLINE", "MAX_MEMORY_MB", "MAX_VCPUS"]
