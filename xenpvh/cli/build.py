"""`xenpvh build ...` subcommands: xen, qemu, freebsd, xtf and guestkit.

Each command draws the build's progress events (`xenpvh.cli.progress`) and prints its own
outcome (exit 0 built, 2 blocked, 3 broken): a blocked build names what is wrong with our
input (the patch and hunk that do not apply, the compile error's last lines and the log), so
the user never has to dig for it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from xenpvh.build.builder import build_xen
from xenpvh.build.freebsd import build_freebsd_cached
from xenpvh.build.guestkit import build_linux_guest_kit
from xenpvh.build.qemu import build_qemu, default_spec_path
from xenpvh.build.recipes import FreeBSDRecipe
from xenpvh.build.tree import TreeSpec
from xenpvh.build.xtf import build_xtf_cached, parse_tests
from xenpvh.cli.progress import ProgressView, default_console
from xenpvh.errors import BlockedError, BrokenError

EXIT_OK, EXIT_BLOCKED, EXIT_BROKEN = 0, 2, 3


def print_error(console: Console, kind: str, exc: BaseException) -> None:
    """`blocked: <why>` (or broken:), then the exception's notes (the build log's path).
    The message keeps its lines: a compile error's last lines are for reading."""
    style = "bold yellow" if kind == "blocked" else "bold magenta"
    console.print(f"[{style}]{kind}:[/{style}] {escape(str(exc))}", soft_wrap=True)
    for note in getattr(exc, "__notes__", ()):
        console.print(escape(str(note)), soft_wrap=True)


def report_failure(console: Console, exc: BlockedError | BrokenError) -> int:
    """Print why a build command stopped (blocked: our input, broken: the machinery); its
    exit code."""
    if isinstance(exc, BlockedError):
        print_error(console, "blocked", exc)
        return EXIT_BLOCKED
    print_error(console, "broken", exc)
    return EXIT_BROKEN


def build_xen_command(args: argparse.Namespace, console: Console | None = None) -> int:
    """`xenpvh build xen --tree SPEC [--patches DIR|FILE] [--config FRAG] [--rebuild]`."""
    console = console or default_console()
    try:
        patches = [args.patches] if args.patches else []
        spec = TreeSpec.from_cli(args.tree, patches, args.config)
        console.print(f"building Xen from {escape(spec.describe())}", soft_wrap=True)
        with ProgressView(console) as progress:
            built = build_xen(
                spec,
                jobs=int(getattr(args, "jobs", 2) or 2),
                with_tools=bool(getattr(args, "with_tools", False)),
                rebuild=bool(args.rebuild),
                progress=progress,
            )
    except (BlockedError, BrokenError) as exc:
        return report_failure(console, exc)
    console.print(escape(built.cache.describe()), soft_wrap=True)
    # One line per artifact, never folded: the paths are for copying.
    console.print(f"version  {escape(built.version)}", soft_wrap=True)
    names = sorted(built.artifacts, key=lambda n: (n != "image", n))
    for name in names:
        console.print(f"{name:<8} {escape(str(built.artifacts[name]))}", soft_wrap=True)
    console.print(f"{'log':<8} {escape(str(built.log))}", soft_wrap=True)
    return EXIT_OK


def build_qemu_command(args: argparse.Namespace, console: Console | None = None) -> int:
    """`xenpvh build qemu [--tree SPEC] [--patches P] [--rebuild]`: the nested host's QEMU."""
    console = console or default_console()
    try:
        patches = [args.patches] if args.patches else []
        spec = TreeSpec.from_cli(str(args.tree or default_spec_path()), patches)
        console.print(f"building QEMU from {escape(spec.describe())}", soft_wrap=True)
        with ProgressView(console) as progress:
            qemu = build_qemu(
                spec, jobs=int(args.jobs or 2), rebuild=bool(args.rebuild), progress=progress
            )
    except (BlockedError, BrokenError) as exc:
        return report_failure(console, exc)
    console.print(f"version  {escape(qemu.version)}", soft_wrap=True)
    console.print(f"image    {escape(str(qemu.path))}", soft_wrap=True)
    console.print(f"key      {qemu.build_key}", soft_wrap=True)
    return EXIT_OK


def build_freebsd_command(args: argparse.Namespace, console: Console | None = None) -> int:
    """`xenpvh build freebsd --tree PATH [--kernconf NAME] [--config FRAG] [--rebuild]`:
    cross-build a FreeBSD/amd64 kernel on this machine with Debian's clang/lld, cached."""
    console = console or default_console()
    try:
        fragment = None
        if args.config:
            try:
                fragment = Path(args.config).read_text()
            except OSError as exc:
                raise BlockedError(f"--config {args.config}: {exc.strerror}") from exc
        recipe = FreeBSDRecipe(
            "cross", kernconf=args.kernconf, jobs=int(args.jobs or 2), modules=args.modules
        )
        console.print(
            f"building FreeBSD {escape(recipe.conf_name(fragment is not None))} "
            f"from {escape(str(args.tree))}",
            soft_wrap=True,
        )
        with ProgressView(console) as progress:
            built = build_freebsd_cached(
                Path(args.tree),
                recipe=recipe,
                fragment=fragment,
                rebuild=bool(args.rebuild),
                progress=progress,
            )
    except (BlockedError, BrokenError) as exc:
        return report_failure(console, exc)
    console.print(escape(built.report.describe()), soft_wrap=True)
    console.print(f"kernel   {escape(str(built.kernel))}", soft_wrap=True)
    console.print(f"log      {escape(str(built.log))}", soft_wrap=True)
    return EXIT_OK


def build_xtf_command(args: argparse.Namespace, console: Console | None = None) -> int:
    """`xenpvh build xtf --tree PATH [--tests a,b] [--rebuild]`: XTF's tests, built in a
    copy of the user's checkout, cached; prints where the test binaries are."""
    console = console or default_console()
    try:
        src = Path(args.tree)
        tests = parse_tests(args.tests, src.resolve())
        console.print(
            f"building XTF {escape(', '.join(tests) or 'all tests')} from {escape(str(src))}",
            soft_wrap=True,
        )
        with ProgressView(console) as progress:
            built = build_xtf_cached(
                src,
                tests=tests,
                jobs=int(args.jobs or 2),
                rebuild=bool(args.rebuild),
                progress=progress,
            )
    except (BlockedError, BrokenError) as exc:
        return report_failure(console, exc)
    console.print(escape(built.report.describe()), soft_wrap=True)
    console.print(
        f"tests    {escape(str(built.tests))} ({len(built.names)} binaries)", soft_wrap=True
    )
    console.print(f"log      {escape(str(built.log))}", soft_wrap=True)
    return EXIT_OK


def guestkit_command(args: argparse.Namespace, console: Console | None = None) -> int:
    """`xenpvh build guestkit [--cache-dir DIR]`: build (or find) the Linux guest kit and
    print where its kernel and initramfs are."""
    console = console or default_console()
    cache_dir = getattr(args, "cache_dir", None)
    try:
        with ProgressView(console) as progress:
            kit = build_linux_guest_kit(Path(cache_dir) if cache_dir else None, progress=progress)
    except (BlockedError, BrokenError) as exc:
        return report_failure(console, exc)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("key", kit.key)
    table.add_row("kernel", f"{kit.kernel} ({kit.kernel_package})")
    table.add_row("initrd", f"{kit.ramdisk} ({kit.busybox_package})")
    table.add_row("release", kit.kernel_release)
    table.add_row("modules", " ".join(kit.modules))
    console.print(table)
    return EXIT_OK


__all__ = [
    "EXIT_BLOCKED",
    "EXIT_BROKEN",
    "EXIT_OK",
    "build_freebsd_command",
    "build_qemu_command",
    "build_xen_command",
    "build_xtf_command",
    "guestkit_command",
    "print_error",
    "report_failure",
]
