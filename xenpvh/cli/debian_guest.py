"""`xenpvh build debian-guest`: build (or find) the Debian 12 guest and say where it is."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from xenpvh.build.debian_guest import DebianGuestBuilder
from xenpvh.cli.build import report_failure
from xenpvh.cli.progress import ProgressView, default_console
from xenpvh.errors import BlockedError, BrokenError

EXIT_OK = 0


def add_parser(bsub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `build debian-guest` under the `build` subcommands."""
    g = bsub.add_parser(
        "debian-guest",
        help="build the Debian 12 guest disk (systemd, Debian's kernel, PVH GRUB)",
    )
    g.add_argument("--format", choices=["text", "json"], default="text")
    g.set_defaults(func=debian_guest_command)


def debian_guest_command(args: argparse.Namespace, console: Console | None = None) -> int:
    console = console or default_console()
    try:
        with ProgressView(console) as progress:
            report = DebianGuestBuilder(progress=progress).ensure()
    except (BlockedError, BrokenError) as exc:
        return report_failure(console, exc)
    guest = report.guest
    rows = {
        "key": guest.key,
        "cache": "hit" if report.cache_hit else "built",
        "seconds": f"{report.seconds:.1f}",
        "kernel": str(guest.kernel),
        "initrd": str(guest.ramdisk),
        "grub": str(guest.grub),
        "disk": f"{guest.disk} ({guest.disk.stat().st_blocks * 512 / 1e6:.0f} MB allocated)",
        "packed": f"{guest.disk_pack} ({guest.disk_pack.stat().st_size / 1e6:.0f} MB)",
        "release": guest.kernel_release,
    }
    if getattr(args, "format", "text") == "json":
        print(json.dumps({**rows, "versions": guest.versions}))
        return EXIT_OK
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for k, v in rows.items():
        table.add_row(k, escape(v))
    Console(highlight=False).print(table)
    return EXIT_OK


__all__ = ["add_parser", "debian_guest_command"]
