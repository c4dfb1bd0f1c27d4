"""`xenpvh` command line: a thin front end that only composes the rooms.

Exit codes are the verdict's: 0 pass, 1 fail, 2 blocked or usage error, 3 broken.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from xenpvh.check.verdict import Verdict, VerdictValue
from xenpvh.errors import BlockedError, BrokenError, XenpvhError
from xenpvh.profile.domain import DomainSpec

EXIT_PASS, EXIT_FAIL, EXIT_BLOCKED, EXIT_BROKEN = 0, 1, 2, 3


def _err_console() -> Console:
    return Console(stderr=True, highlight=False)


# --------------------------------------------------------------------------- output


def print_verdict(verdict: Verdict, fmt: str, *, suite: str = "xenpvh", case: str = "boot") -> None:
    """Print a verdict in one of the three formats; json prints exactly one object."""
    if fmt == "json":
        sys.stdout.write(json.dumps(verdict.to_json_dict(), indent=2) + "\n")
        return
    if fmt == "junit":
        from xenpvh.report.junit import render_junit

        sys.stdout.write(render_junit(verdict, suite, case))
        return
    from xenpvh.frontend import render_timeline

    Console(highlight=False).print(render_timeline(verdict))


# --------------------------------------------------------------------------- commands


def cmd_check(args: argparse.Namespace) -> int:
    from xenpvh.check.checker import check_file
    from xenpvh.profile import load_profile

    profile = load_profile(args.profile)
    log = Path(args.log)
    if not log.is_file():
        raise BlockedError(f"console log {log} does not exist or is not a file")
    defaults = profile.point()
    disks = len(defaults.disks) if args.disks is None else args.disks
    vifs = len(defaults.vifs) if args.vifs is None else args.vifs
    if args.vcpus < 1 or disks < 0 or vifs < 0:
        raise BlockedError("--vcpus must be >= 1 and --disks/--vifs >= 0")
    verdict = check_file(log, profile, vcpus=args.vcpus, disks=disks, vifs=vifs)
    print_verdict(verdict, args.format, suite=f"xenpvh.{profile.name}", case=log.name)
    return verdict.exit_code


def cmd_profiles(args: argparse.Namespace) -> int:
    from xenpvh.profile import list_profiles

    profiles = list_profiles()
    if args.format == "json":
        out = [
            {
                "name": p.name,
                "description": p.description,
                "stages": [s.name for s in p.stages],
            }
            for p in profiles
        ]
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return EXIT_PASS
    con = Console(highlight=False)
    for p in profiles:
        con.print(f"[bold]{p.name}[/bold]  {p.description}")
        con.print("    stages: " + " → ".join(s.name for s in p.stages))
    return EXIT_PASS


def cmd_config_render(args: argparse.Namespace) -> int:
    from xenpvh.profile import load_profile

    profile = load_profile(args.profile)
    point = profile.point(vcpus=args.vcpus, memory_mb=args.memory, kernel=args.kernel)
    point = preview_point(point)
    if args.libvirt:
        from xenpvh.render.libvirt import render_libvirt_xml

        sys.stdout.write(render_libvirt_xml(point))
    else:
        from xenpvh.render.xl import render_xl_config

        sys.stdout.write(render_xl_config(point, args.xen))
    return EXIT_PASS


def preview_point(point: DomainSpec) -> DomainSpec:
    """Fill what a run decides at run time (guest kit paths, scratch disks) with the paths a
    run would use, so `config render` shows the config a boot really creates."""
    run_dir = "/var/lib/xenpvh/runs/RUN-ID"

    def kit(value: str | None) -> str | None:
        if value and value.startswith("@guestkit:"):
            return "/var/lib/xenpvh/kernels/guestkit-" + value.removeprefix("@guestkit:")
        return value

    disks = tuple(
        d if d.target else replace(d, target=f"{run_dir}/{d.vdev}.img", format="raw")
        for d in point.disks
    )
    return replace(point, kernel=kit(point.kernel) or "", ramdisk=kit(point.ramdisk), disks=disks)


def cmd_boot(args: argparse.Namespace) -> int:
    from xenpvh.frontend import boot_command

    return boot_command(args)


def cmd_run(args: argparse.Namespace) -> int:
    from xenpvh.frontend import run_command

    return run_command(args)


def cmd_host_nested(args: argparse.Namespace) -> int:
    from xenpvh.frontend import nested_command

    return nested_command(args)


def cmd_host_provision(args: argparse.Namespace) -> int:
    from xenpvh.frontend import provision_command

    return provision_command(args)


def cmd_build_xen(args: argparse.Namespace) -> int:
    from xenpvh.build.command import build_xen_command

    return build_xen_command(args)


def cmd_build_qemu(args: argparse.Namespace) -> int:
    from xenpvh.build.command import build_qemu_command

    return build_qemu_command(args)


def cmd_build_guestkit(args: argparse.Namespace) -> int:
    from xenpvh.build.command import guestkit_command

    return guestkit_command(args)


# --------------------------------------------------------------------------- parser


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


def _add_point_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", required=True, help="profile name (guestcfg/NAME.toml) or a path")
    p.add_argument("--vcpus", type=int, default=None, help="vCPUs (default: the profile's)")
    p.add_argument("--memory", type=int, default=None, metavar="MiB")
    p.add_argument("--kernel", default=None, help="guest kernel on this machine")
    p.add_argument("--ramdisk", default=None, help="guest ramdisk on this machine")
    p.add_argument("--cmdline-append", default="", help="extra guest kernel arguments")
    p.add_argument(
        "--attempts",
        type=_positive_int,
        default=3,
        metavar="N",
        help="runs spoilt by a known fault of the host itself (e.g. the nested host's TCG "
        "emulation) are retried, N attempts in all; every attempt's artifacts are kept "
        "(default 3)",
    )


def _add_qemu_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--qemu",
        default="patched",
        metavar="patched|system|PATH",
        help="nested host: the QEMU to run it on: 'patched' (default; xenpvh's build of "
        "Debian's QEMU with the nested-SVM interrupt fix, built and cached on first use), "
        "'system' (Debian's qemu-system-x86_64) or the path of a binary",
    )


def _add_host_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host",
        default="nested",
        help="nested (default: a Xen host under QEMU), local, ssh://user@host[:port], "
        "or a name from --inventory",
    )
    p.add_argument("--inventory", default=None, help="TOML inventory of lab hosts")
    p.add_argument("--identity", default=None, help="ssh private key for ssh:// hosts")
    p.add_argument("--known-hosts", default=None, help="known_hosts file for ssh:// hosts")
    p.add_argument("--xen-image", default=None, help="nested host: boot this Xen image instead")
    _add_qemu_arg(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xenpvh", description="Prove Xen PVH guests boot, stage by stage."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="check a saved console log against a profile")
    p.add_argument("log")
    p.add_argument("--profile", required=True)
    p.add_argument("--vcpus", type=int, required=True)
    p.add_argument("--disks", type=int, default=None, help="expected disks (default: profile)")
    p.add_argument("--vifs", type=int, default=None, help="expected vifs (default: profile)")
    p.add_argument("--format", choices=["text", "json", "junit"], default="text")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("profiles", help="list guest profiles and their stages")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_profiles)

    p = sub.add_parser("config", help="domain configuration")
    csub = p.add_subparsers(dest="config_command", required=True)
    r = csub.add_parser("render", help="print the xl config (or libvirt XML) of a profile point")
    r.add_argument("--profile", required=True)
    r.add_argument("--vcpus", type=int, default=None)
    r.add_argument("--memory", type=int, default=None)
    r.add_argument("--kernel", default=None)
    r.add_argument("--xen", default="4.17", help="target Xen version, e.g. 4.17 or 4.4")
    r.add_argument("--libvirt", action="store_true", help="libvirt domain XML instead")
    r.set_defaults(func=cmd_config_render)

    p = sub.add_parser("boot", help="boot one profile point on real Xen and check it")
    _add_point_args(p)
    _add_host_args(p)
    p.add_argument("--toolstack", choices=["xl", "libvirt"], default="xl")
    p.add_argument("--artifacts", default=None, help="directory for this run's artifacts")
    p.add_argument("--format", choices=["text", "json", "junit"], default="text")
    p.set_defaults(func=cmd_boot)

    p = sub.add_parser("run", help="build patched trees, then boot and check")
    _add_point_args(p)
    _add_host_args(p)
    p.add_argument("--toolstack", choices=["xl", "libvirt"], default="xl")
    p.add_argument("--xen-tree", default=None, help="debian:xen[=VERSION], git URL#ref, or a dir")
    p.add_argument("--xen-patches", default=None, help="patch series directory")
    p.add_argument("--xen-config", default=None, help="Kconfig fragment")
    p.add_argument("--kernel-tree", default=None, help="Linux guest kernel tree spec")
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--artifacts", default=None)
    p.add_argument("--format", choices=["text", "json", "junit"], default="text")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("host", help="Xen hosts")
    hsub = p.add_subparsers(dest="host_command", required=True)
    n = hsub.add_parser("nested", help="the nested Xen host under QEMU")
    n.add_argument("action", choices=["up", "down", "status", "ssh"])
    n.add_argument("--xen-image", default=None)
    _add_qemu_arg(n)
    n.add_argument("ssh_args", nargs=argparse.REMAINDER, help="with ssh: a command to run")
    n.set_defaults(func=cmd_host_nested)
    pr = hsub.add_parser("provision", help="provision a Debian 12 box into a Xen lab host")
    pr.add_argument("address", help="ssh://root@box[:port]")
    pr.add_argument("--identity", default=None)
    pr.add_argument("--known-hosts", default=None)
    pr.add_argument("--xen-artifact", default=None, help="a built Xen (cache id or path)")
    pr.set_defaults(func=cmd_host_provision)

    p = sub.add_parser("build", help="build patched source trees")
    bsub = p.add_subparsers(dest="build_command", required=True)
    b = bsub.add_parser("xen", help="build a Xen hypervisor")
    b.add_argument("--tree", default="debian:xen", help="debian:xen[=VERSION], git URL#ref, dir")
    b.add_argument("--patches", default=None)
    b.add_argument("--config", default=None)
    b.add_argument("--rebuild", action="store_true")
    b.add_argument("--jobs", type=int, default=2)
    b.add_argument("--with-tools", action="store_true", help="also build the tools (long)")
    b.set_defaults(func=cmd_build_xen)
    q = bsub.add_parser("qemu", help="build the nested host's patched qemu-system-x86_64")
    q.add_argument(
        "--tree",
        default=None,
        help="a tree spec (default: guestcfg/patches/qemu/nested.toml, Debian's qemu + fix)",
    )
    q.add_argument("--patches", default=None)
    q.add_argument("--rebuild", action="store_true")
    q.add_argument("--jobs", type=int, default=2)
    q.set_defaults(func=cmd_build_qemu)
    g = bsub.add_parser("guestkit", help="build the Linux guest kit (kernel + busybox initramfs)")
    g.add_argument("--cache-dir", default=None)
    g.set_defaults(func=cmd_build_guestkit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    err = _err_console()
    try:
        return int(args.func(args))
    except BlockedError as e:
        err.print(f"[bold red]blocked:[/bold red] {escape(str(e))}")
        return EXIT_BLOCKED
    except BrokenError as e:
        err.print(f"[bold red]broken:[/bold red] {escape(str(e))}")
        return EXIT_BROKEN
    except XenpvhError as e:
        err.print(f"[bold red]error:[/bold red] {escape(str(e))}")
        return EXIT_BLOCKED
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


__all__ = ["EXIT_BLOCKED", "EXIT_BROKEN", "EXIT_FAIL", "EXIT_PASS", "VerdictValue", "main"]
