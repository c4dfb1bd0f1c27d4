"""`xenpvh` command line: parsing, exit codes and the error boundary; nothing else.

Parsing only parses; `xenpvh.cli.commands` turns arguments into a request for the library
and presents what comes back.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import faulthandler
import json
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from xenpvh import __version__
from xenpvh.cli import commands as c
from xenpvh.cli import debian_guest, dev, host_lock
from xenpvh.cli import plan as nightly  # plan show|run, history, bisect
from xenpvh.cli.console import err_console, print_error
from xenpvh.errors import BlockedError, BrokenError, XenpvhError
from xenpvh.util.fs import atomic_write_text, cache_root

EXIT_PASS, EXIT_FAIL, EXIT_BLOCKED, EXIT_BROKEN, EXIT_BUG = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as shells report it


class Terminated(KeyboardInterrupt):
    """SIGTERM (CI runners, systemd, timeout(1)) taking the Ctrl-C path: the guest is
    destroyed, the nested host stopped and the verdict written before the command exits."""

    reason = "terminated (SIGTERM)"


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


EPILOG = """\
exit status:
  0  pass               every stage passed
  1  fail               the guest misbehaved (the verdict names the stage)
  2  blocked / usage    our input is wrong (bad profile, missing kernel, bad option)
  3  broken             infrastructure failed (host unreachable, QEMU died, xenstored dead)
  4  internal error     a bug of xenpvh; the traceback is in a log file (its path is printed)
  130 interrupted       Ctrl-C / SIGINT
  143 terminated        SIGTERM (cleaned up as after Ctrl-C)

environment:
  XDG_CACHE_HOME        build cache, nested host image and logs under $XDG_CACHE_HOME/xenpvh
                        (default ~/.cache/xenpvh)
  XDG_RUNTIME_DIR       where `host nested up` records the running nested host
  XENPVH_NESTED_FRESH=1 never reuse a nested host left up by `host nested up`
  XENPVH_FREEBSD_SRC    a FreeBSD source tree for the FreeBSD build's live test
  XENPVH_FREEBSD_KERNEL a FreeBSD kernel for the live tests (default: newest cached build)
  XENPVH_XTF_DIR        a built XTF tree (or a directory of test binaries) for the live tests
  XENPVH_QEMU_DEBUG     nested host: QEMU -d items (e.g. int,cpu_reset) -> qemu-debug.log

With --format json exactly one JSON object is printed on stdout, whatever the outcome
(`dev --format json`: one per run, a line each).
"""


def _version() -> str:
    return __version__


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors keep the promise of `--format json` (one object on
    stdout) and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        if _wants_json(sys.argv[1:]):
            _print_json({"verdict": "blocked", "reason": f"usage: {message}", "stages": []})
            sys.exit(EXIT_BLOCKED)
        super().error(message)


def _wants_json(argv: Sequence[str]) -> bool:
    argv = list(argv)
    return "--format=json" in argv or any(
        a == "--format" and i + 1 < len(argv) and argv[i + 1] == "json" for i, a in enumerate(argv)
    )


def _print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="xenpvh",
        description="Proves Xen PVH guests boot: builds, boots on real Xen and checks every "
        "boot stage on the guest console.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"xenpvh {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("check", help="check a saved console log against a profile")
    p.add_argument("log", help="console log file, or - for standard input")
    p.add_argument("--profile", required=True)
    p.add_argument("--vcpus", type=_positive_int, default=None, help="default: the profile's")
    p.add_argument("--disks", type=_count, default=None, help="expected disks (default: profile)")
    p.add_argument("--vifs", type=_count, default=None, help="expected vifs (default: profile)")
    p.add_argument(
        "--strict-devices",
        action="store_true",
        help="fail devices the console cannot show (proven only by XenStore in a live run)",
    )
    p.add_argument(
        "--console-source",
        choices=["xl", "xen-serial"],
        default="xl",
        help="xen-serial: the log is Xen's serial line (guest lines prefixed '(dN) ')",
    )
    p.add_argument(
        "--domid", type=_count, default=None, help="xen-serial: the guest's domid (default: first)"
    )
    p.add_argument("--format", choices=["text", "json", "junit"], default="text")
    p.set_defaults(func=c.cmd_check)

    p = sub.add_parser("profiles", help="list guest profiles and their stages")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=c.cmd_profiles)

    p = sub.add_parser("config", help="domain configuration")
    csub = p.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    r = csub.add_parser("render", help="print the xl config (or libvirt XML) of a profile point")
    r.add_argument("--profile", required=True)
    r.add_argument("--vcpus", type=_positive_int, default=None)
    r.add_argument("--memory", type=_positive_int, default=None)
    r.add_argument("--kernel", default=None)
    r.add_argument("--xen", default="4.17", help="target Xen version, e.g. 4.17 or 4.4")
    r.add_argument("--libvirt", action="store_true", help="libvirt domain XML instead")
    r.set_defaults(func=c.cmd_config_render)

    for name, helptext, builds in (
        ("boot", "boot one profile point on real Xen and check it", False),
        ("run", "build patched trees, then boot and check on what was built", True),
    ):
        p = sub.add_parser(
            name, help=helptext, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        _add_point_args(p)
        _add_host_args(p)
        p.add_argument("--toolstack", choices=["xl", "libvirt"], default="xl")
        p.add_argument("--artifacts", default=None, help="directory for this run's artifacts")
        p.add_argument("--format", choices=["text", "json", "junit"], default="text")
        if builds:
            p.add_argument("--xen-tree", default=None, help="debian:xen[=VER], git URL#ref, dir")
            p.add_argument("--xen-patches", default=None, help="patch series directory")
            p.add_argument("--xen-config", default=None, help="Kconfig fragment")
            p.add_argument("--kernel-tree", default=None, help="Linux guest kernel tree spec")
            p.add_argument("--rebuild", action="store_true")
        dev.add_lock_wait_args(p)
        p.set_defaults(func=c.cmd_boot, builds=builds)
    # The developer's loop: dev, attach, destroy, ps (xenpvh/cli/dev.py).
    dev.add_parsers(sub, _Parser, _add_point_args, _add_host_args)

    p = sub.add_parser("host", help="Xen hosts")
    hsub = p.add_subparsers(dest="host_command", required=True, parser_class=_Parser)
    n = hsub.add_parser("nested", help="the nested Xen host under QEMU")
    nsub = n.add_subparsers(dest="action", required=True, parser_class=_Parser)
    for action, helptext in (
        ("up", "boot it and leave it running (later boots reuse it)"),
        ("down", "shut it down"),
        ("status", "is it running?"),
    ):
        a = nsub.add_parser(action, help=helptext)
        a.add_argument("--xen-image", default=None, help="boot this Xen image instead")
        _add_qemu_arg(a)
        a.set_defaults(func=c.cmd_host_nested)
    a = nsub.add_parser("ssh", help="ssh into its dom0 (pinned host key); -- COMMAND runs one")
    a.add_argument("ssh_args", nargs="*", help="a command to run (after --)")
    a.set_defaults(func=c.cmd_host_nested)
    pr = hsub.add_parser("provision", help="provision a Debian 12 box into a Xen lab host")
    pr.add_argument("address", help="ssh://root@box[:port]")
    pr.add_argument("--identity", default=None)
    pr.add_argument("--known-hosts", default=None)
    pr.add_argument("--xen-artifact", default=None, help="a built Xen (cache id or path)")
    pr.add_argument(
        "--extra-vars",
        "-e",
        action="append",
        default=[],
        metavar="KEY=VALUE|@FILE.json",
        help="role variables, as ansible-playbook -e (repeatable)",
    )
    pr.add_argument("--log", default=None, help="ansible's output (default: under the cache)")
    pr.add_argument("--format", choices=["text", "json"], default="text")
    pr.set_defaults(func=c.cmd_host_provision)
    host_lock.add_host_lock_parsers(hsub)  # host lock|unlock|who

    p = sub.add_parser("build", help="build patched source trees")
    bsub = p.add_subparsers(dest="build_command", required=True, parser_class=_Parser)
    b = bsub.add_parser("xen", help="build a Xen hypervisor")
    b.add_argument("--tree", default="debian:xen", help="debian:xen[=VERSION], git URL#ref, dir")
    b.add_argument("--patches", default=None)
    b.add_argument("--config", default=None)
    b.add_argument("--rebuild", action="store_true")
    b.add_argument("--jobs", type=_positive_int, default=2)
    b.add_argument("--with-tools", action="store_true", help="also build the tools (long)")
    b.set_defaults(func=c.cmd_build_xen)
    q = bsub.add_parser("qemu", help="build the nested host's patched qemu-system-x86_64")
    q.add_argument(
        "--tree",
        default=None,
        help="a tree spec (default: guestcfg/patches/qemu/nested.toml, Debian's qemu + fixes)",
    )
    q.add_argument("--patches", default=None)
    q.add_argument("--rebuild", action="store_true")
    q.add_argument("--jobs", type=_positive_int, default=2)
    q.set_defaults(func=c.cmd_build_qemu)
    f = bsub.add_parser("freebsd", help="cross-build a FreeBSD kernel (clang/lld), cached")
    f.add_argument("--tree", required=True, help="a FreeBSD source tree (with tools/build)")
    f.add_argument("--kernconf", default="GENERIC", help="kernel config in sys/amd64/conf")
    f.add_argument("--config", default=None, help="kernel config lines added to --kernconf")
    f.add_argument("--modules", action="store_true", help="also build the modules (long)")
    f.add_argument("--rebuild", action="store_true")
    f.add_argument("--jobs", type=_positive_int, default=2)
    f.set_defaults(func=c.cmd_build_freebsd)
    x = bsub.add_parser("xtf", help="build Xen Test Framework tests from an XTF checkout, cached")
    x.add_argument("--tree", required=True, help="an XTF checkout (only read: built in a copy)")
    x.add_argument("--tests", default=None, help="test names (tests/NAME), comma-separated")
    x.add_argument("--rebuild", action="store_true")
    x.add_argument("--jobs", type=_positive_int, default=2)
    x.set_defaults(func=c.cmd_build_xtf)
    g = bsub.add_parser("guestkit", help="build the Linux guest kit (kernel + busybox initramfs)")
    g.add_argument("--cache-dir", default=None)
    g.set_defaults(func=c.cmd_build_guestkit)

    debian_guest.add_parser(bsub)

    nightly.register(sub, _Parser)
    return parser


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number, at least `minimum` (named in the error)."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {n}")
        return n

    return parse


_positive_int = _int_at_least(1)
_count = _int_at_least(0)


def _add_point_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", required=True, help="profile name (guestcfg/NAME.toml) or a path")
    p.add_argument("--vcpus", type=_positive_int, default=None, help="default: the profile's")
    p.add_argument("--memory", type=_positive_int, default=None, metavar="MiB")
    p.add_argument("--kernel", default=None, help="guest kernel on this machine")
    p.add_argument("--ramdisk", default=None, help="guest ramdisk on this machine")
    p.add_argument("--cmdline-append", default="", help="extra guest kernel arguments")
    p.add_argument(
        "--attempts",
        type=_positive_int,
        default=3,
        metavar="N",
        help="runs spoilt by a known fault of the host itself (e.g. Debian's QEMU under the "
        "nested host) are retried, N attempts in all; every attempt's artifacts are kept "
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


def _bug_log(exc: BaseException) -> Path:
    """Write the traceback of a bug of ours where it can be found again."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = cache_root() / "logs" / f"crash-{stamp}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(traceback.format_exception(exc))
    atomic_write_text(path, f"xenpvh {_version()} {' '.join(sys.argv)}\n{text}")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    with contextlib.suppress(ValueError):  # not the main thread (an embedding program)
        signal.signal(signal.SIGTERM, _on_sigterm)
        # `kill -USR1 <pid>`: every thread's stack on stderr, the process goes on (a run
        # that seems stuck on a slow host can be looked into without ending it).
        faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)
    parser = build_parser()
    args = parser.parse_args(argv)
    err = err_console()
    as_json = getattr(args, "format", None) == "json"

    def fail_json(verdict: str, reason: str) -> None:
        if as_json:
            _print_json({"verdict": verdict, "reason": reason, "failed_stage": None, "stages": []})

    try:
        return int(args.func(args))
    except BlockedError as e:
        print_error(err, "blocked", e)
        fail_json("blocked", str(e))
        return EXIT_BLOCKED
    except BrokenError as e:
        print_error(err, "broken", e)
        fail_json("broken", str(e))
        return EXIT_BROKEN
    except XenpvhError as e:
        print_error(err, "blocked", e)
        fail_json("blocked", str(e))
        return EXIT_BLOCKED
    except Terminated:
        print_error(err, "terminated", "SIGTERM")
        fail_json("broken", "terminated (SIGTERM)")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print_error(err, "interrupted", "Ctrl-C")
        fail_json("broken", "interrupted")
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug of ours: never the exit code of a verdict
        where = _bug_log(e)
        print_error(err, "internal error", f"{type(e).__name__}: {e} (traceback in {where})")
        fail_json("error", f"internal error: {type(e).__name__}: {e}; traceback in {where}")
        return EXIT_BUG


__all__ = [
    "EXIT_BLOCKED",
    "EXIT_BROKEN",
    "EXIT_BUG",
    "EXIT_FAIL",
    "EXIT_PASS",
    "build_parser",
    "main",
]
