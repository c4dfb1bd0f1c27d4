"""Front-end glue shared by the CLI and the pytest plugin: host selection, the live stage
checklist and the text timeline.  Composition only; every decision lives in the rooms.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from xenpvh.check.checker import EventKind, StageEvent
from xenpvh.check.hostconsole import HostExpectation, check_hypervisor, read_expect_file
from xenpvh.check.verdict import StageResult, StageStatus, Verdict, VerdictValue
from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.base import Host

_STATUS_STYLE = {
    StageStatus.PASSED: ("✔", "green"),
    StageStatus.FAILED: ("✘", "bold red"),
    StageStatus.NOT_REACHED: ("·", "dim"),
}
_VERDICT_STYLE = {
    VerdictValue.PASS: "bold green",
    VerdictValue.FAIL: "bold red",
    VerdictValue.BROKEN: "bold magenta",
    VerdictValue.BLOCKED: "bold yellow",
}
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str, limit: int = 200) -> str:
    """Guest output is hostile: never let it drive the user's terminal (escapes, bells)."""
    text = _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fmt_t(t: float | None) -> str:
    return "" if t is None else f"{t:8.2f}s"


def render_timeline(verdict: Verdict) -> Group:
    """The readable stage timeline of `xenpvh check` / `xenpvh boot` (text format)."""
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("", width=1)
    table.add_column("stage")
    table.add_column("t", justify="right")
    table.add_column("evidence / detail", overflow="fold")
    for s in verdict.stages:
        mark, style = _STATUS_STYLE[s.status]
        what = s.detail if s.status != StageStatus.PASSED and s.detail else s.evidence
        table.add_row(
            Text(mark, style=style),
            Text(s.name, style=style),
            _fmt_t(s.t),
            Text(terminal_safe(what)),
        )
    head = Text.assemble(
        ("verdict: ", "bold"),
        (str(verdict.verdict), _VERDICT_STYLE[verdict.verdict]),
        (f"  (stage {verdict.failed_stage})" if verdict.failed_stage else "", "bold"),
    )
    parts: list[Any] = [table, head, Text("reason: ") + Text(terminal_safe(verdict.reason, 400))]
    artifacts = verdict.meta.get("artifacts") if verdict.meta else None
    if artifacts:
        parts.append(Text(f"artifacts: {artifacts}"))
    return Group(*parts)


class LiveChecklist:
    """Draws the live stage checklist from run and stage events (see xenpvh.run.events)."""

    def __init__(self, stages: list[str], console: Console) -> None:
        self.stages = stages
        self.status: dict[str, tuple[str, float | None, str]] = {
            s: ("waiting", None, "") for s in stages
        }
        self.run_state = "starting"
        self.console = console
        self.started = time.monotonic()
        self._live = Live(self._render(), console=console, refresh_per_second=4, transient=False)

    def __enter__(self) -> LiveChecklist:
        if self.console.is_terminal:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.console.is_terminal:
            self._live.update(self._render())
            self._live.__exit__(None, None, None)

    def _render(self) -> Table:
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(width=1)
        table.add_column()
        table.add_column(justify="right")
        table.add_column(overflow="fold")
        elapsed = time.monotonic() - self.started
        table.add_row("", Text(f"run: {self.run_state}", style="bold"), f"{elapsed:7.1f}s", "")
        for s in self.stages:
            st, t, line = self.status[s]
            mark, style = {
                "passed": ("✔", "green"),
                "failed": ("✘", "bold red"),
                "in progress": ("…", "cyan"),
            }.get(st, ("·", "dim"))
            table.add_row(
                Text(mark, style=style),
                Text(s, style=style),
                _fmt_t(t),
                Text(terminal_safe(line, 100)),
            )
        return table

    def __call__(self, event: object) -> None:
        kind = str(getattr(event, "kind", ""))
        stage = getattr(event, "stage", None)
        if stage in self.status:
            t = getattr(event, "t", None)
            line = getattr(event, "line", "") or getattr(event, "detail", "")
            if kind == "started":
                self.status[stage] = ("in progress", None, "")
            elif kind in ("passed", "failed"):
                self.status[stage] = (kind, t, line)
                if not self.console.is_terminal:
                    self.console.print(
                        Text(f"{kind:>7} {stage:<11} {_fmt_t(t)}  ")
                        + Text(terminal_safe(line, 120))
                    )
        elif hasattr(event, "verdict") and hasattr(event, "failed_stage"):
            # The verdict is known and written: say it now, the destroy takes a few seconds.
            where = f" at {event.failed_stage}" if event.failed_stage else ""
            self.run_state = f"{event.verdict}{where} (destroying the guest)"
            if not self.console.is_terminal:
                self.console.print(
                    Text(f"verdict: {event.verdict}{where}: {terminal_safe(event.reason)}")
                )
        elif hasattr(event, "state"):
            self.run_state = str(event.state)
            detail = getattr(event, "detail", "")
            if not self.console.is_terminal:
                self.console.print(Text(f"run: {self.run_state} {terminal_safe(detail)}"))
        if self.console.is_terminal:
            self._live.update(self._render())


# --------------------------------------------------------------------------- hosts


@contextlib.contextmanager
def open_host(
    spec: str,
    *,
    inventory: str | None = None,
    identity: str | None = None,
    known_hosts: str | None = None,
    xen_image: str | None = None,
    console: Console | None = None,
    artifacts: Path | None = None,
    qemu: str = "patched",
) -> Iterator[Host]:
    """Yield a connected Host for `spec` and always release it (a nested host is shut down)."""
    if spec == "nested":
        from xenpvh.build.qemu import check_choice
        from xenpvh.host.nested import NestedHost

        image = Path(xen_image) if xen_image else None
        if image is not None and not image.is_file():
            raise BlockedError(f"--xen-image {image} does not exist")
        qemu = check_choice(qemu)
        running = _running_nested_host(image, qemu, console)
        if running is not None:
            # A developer's `xenpvh host nested up`: use it, and leave it up.
            try:
                yield running
            finally:
                running.close()
            return
        nested = NestedHost(console=console, artifacts=artifacts, xen_image=image, qemu=qemu)
        with nested:
            yield nested
        return
    if spec == "local":
        from xenpvh.host.local import LocalHost

        host: Host = LocalHost()
    else:
        from xenpvh.host.ssh import SSHAddress, SSHHost, SSHOptions

        if spec.startswith("ssh://"):
            opts = SSHOptions(
                identity=Path(identity) if identity else None,
                known_hosts=Path(known_hosts) if known_hosts else None,
            )
            host = SSHHost(SSHAddress.parse(spec), options=opts)
        elif inventory:
            host = SSHHost.from_inventory(Path(inventory), spec)
        else:
            raise BlockedError(
                f"--host {spec!r}: expected 'nested', 'local', ssh://user@host[:port], "
                "or a host name together with --inventory FILE"
            )
    try:
        yield host
    finally:
        host.close()


def _running_nested_host(image: Path | None, qemu: str, console: Console | None) -> Any:
    """The nested host `xenpvh host nested up` left running, when it runs the Xen and the
    QEMU asked for; None otherwise (then the caller boots one of its own).
    XENPVH_NESTED_FRESH=1 always boots a fresh one."""
    from xenpvh.host.nested import NestedHost

    if os.environ.get("XENPVH_NESTED_FRESH") == "1":
        return None
    try:
        h = NestedHost.attach(console=console)
    except (BrokenError, BlockedError):  # none running, or its key files are gone
        return None
    if h.booted_xen != str(image or ""):
        return None
    from xenpvh.build.qemu import resolve_qemu

    wanted = resolve_qemu(qemu)
    if h.booted_qemu != str(wanted.path):
        return None
    h.qemu, h.qemu_binary = qemu, wanted
    if console is not None:
        console.log(
            f"nested host: using the one `xenpvh host nested up` started "
            f"(pid {h.status().pid}); it stays up"
        )
    return h


def default_artifacts(profile: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("artifacts") / f"{profile}-{stamp}-{os.getpid()}"


def _local_file(value: str | None, what: str) -> None:
    if value and not value.startswith("@") and not Path(value).is_file():
        raise BlockedError(f"{what} {value} does not exist (or is not a file)")


def check_host(host: Host, expect: HostExpectation, artifacts: Path) -> StageResult:
    """The `hypervisor` stage on a live host: `xl dmesg` + `xl info` against the expectation."""
    from xenpvh.toolstack.xl import Xl

    xl = Xl(host)
    dmesg = xl.dmesg()
    info = xl.info()
    (artifacts / "host-xl-dmesg.txt").write_text(dmesg)
    (artifacts / "host-xl-info.txt").write_text("".join(f"{k}: {v}\n" for k, v in info.items()))
    return check_hypervisor(dmesg, info.get("xen_version"), expect)


def _with_host_stage(verdict: Verdict, hyper: StageResult, artifacts: Path, case: str) -> Verdict:
    """Put the hypervisor stage first and rewrite the run's results atomically."""
    from xenpvh.report.json_report import write_verdict_json
    from xenpvh.report.junit import write_junit

    verdict.stages.insert(0, hyper)
    write_verdict_json(verdict, artifacts / "verdict.json")
    write_junit(verdict, artifacts / "junit.xml", "xenpvh", case)
    return verdict


def boot_point(
    args: argparse.Namespace,
    *,
    xen_image: str | None = None,
    host_expect: HostExpectation | None = None,
) -> tuple[Verdict, Path]:
    """Boot one profile point described by CLI-shaped args; returns the verdict and artifacts."""
    from xenpvh.profile import load_profile
    from xenpvh.run.boot import BootRun
    from xenpvh.run.retry import run_with_retries

    profile = load_profile(args.profile)
    base = profile.point()
    cmdline = base.cmdline
    if args.cmdline_append:
        cmdline = f"{cmdline} {args.cmdline_append}".strip()
    point = profile.point(
        vcpus=args.vcpus,
        memory_mb=args.memory,
        kernel=args.kernel,
        ramdisk=args.ramdisk,
        cmdline=cmdline,
    )
    # Our input is checked before a host is brought up: a missing kernel costs no boot.
    _local_file(point.kernel, "kernel")
    _local_file(point.ramdisk, "ramdisk")
    artifacts = Path(args.artifacts) if args.artifacts else default_artifacts(profile.name)
    artifacts.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True, highlight=False)
    with open_host(
        args.host,
        inventory=args.inventory,
        identity=args.identity,
        known_hosts=args.known_hosts,
        xen_image=xen_image or args.xen_image,
        console=console,
        artifacts=artifacts,
        qemu=getattr(args, "qemu", "patched"),
    ) as host:
        stages = [s.name for s in profile.stages]
        hyper = check_host(host, host_expect, artifacts) if host_expect else None
        if hyper is not None and hyper.status is StageStatus.FAILED:
            # The host does not run the Xen we built: booting a guest on it proves nothing.
            verdict = Verdict(
                VerdictValue.FAIL,
                f"hypervisor: {hyper.detail}",
                failed_stage=hyper.name,
                stages=[StageResult(n) for n in stages],
            )
            return _with_host_stage(verdict, hyper, artifacts, profile.name), artifacts
        shown = ([hyper.name] if hyper else []) + stages
        with LiveChecklist(shown, console) as checklist:
            if hyper is not None:
                checklist(StageEvent(EventKind.PASSED, hyper.name, None, hyper.evidence))
            attempts = getattr(args, "attempts", 1) or 1

            def boot(art: Path) -> Verdict:
                run = BootRun(
                    host,
                    profile,
                    point,
                    toolstack=args.toolstack,
                    artifacts=art,
                    on_event=checklist,
                )
                return run.run()

            def retrying(n: int, v: Verdict) -> None:
                console.print(
                    f"[yellow]attempt {n} broken[/] by the host: {escape(v.reason)}\n"
                    f"retrying (attempt {n + 1} of {attempts}; this one's artifacts are in "
                    f"{escape(str(artifacts / f'attempt-{n}'))})"
                )

            verdict = run_with_retries(boot, artifacts, attempts=attempts, on_retry=retrying)
        if hyper is not None:
            verdict = _with_host_stage(verdict, hyper, artifacts, profile.name)
    verdict.meta.setdefault("artifacts", str(artifacts))
    return verdict, artifacts


def boot_command(args: argparse.Namespace) -> int:
    from xenpvh.cli import print_verdict

    verdict, _ = boot_point(args)
    print_verdict(verdict, args.format, suite=f"xenpvh.{args.profile}", case="boot")
    return verdict.exit_code


def nested_command(args: argparse.Namespace) -> int:
    from xenpvh.host.nested import NestedHost, NestedState

    console = Console(stderr=True, highlight=False)
    image = Path(args.xen_image) if args.xen_image else None
    nested = NestedHost(console=console, xen_image=image, qemu=getattr(args, "qemu", "patched"))
    if args.action == "up":
        nested.up(detach=True)
        st = nested.status()
        console.print(
            f"nested host up: pid {st.pid}, ssh port {st.ssh_port}, serial {st.serial_log}"
        )
        return 0
    if args.action == "down":
        nested.down()
        console.print("nested host down")
        return 0
    if args.action == "status":
        st = nested.status()
        print(f"state: {st.state.value}")
        if st.state is not NestedState.ABSENT and st.pid:
            print(f"pid: {st.pid}\nssh_port: {st.ssh_port}\nserial_log: {st.serial_log}")
        return 0 if st.state is NestedState.READY else 1
    # ssh: hand the terminal over to OpenSSH with the pinned key and known_hosts.
    argv = NestedHost.attach(console=console).ssh_command() + [
        a for a in args.ssh_args if a != "--"
    ]
    sys.stdout.flush()
    os.execvp(argv[0], argv)
    return 0  # not reached


def run_command(args: argparse.Namespace) -> int:
    """`xenpvh run`: build the patched trees (cached), then boot and check on what was built."""
    from rich.progress import Progress

    from xenpvh.build.builder import build_linux, build_xen
    from xenpvh.build.command import make_progress
    from xenpvh.build.tree import TreeSpec
    from xenpvh.cli import print_verdict

    console = Console(stderr=True, highlight=False)
    xen_image: str | None = None
    expect: HostExpectation | None = None
    if args.kernel_tree and args.kernel:
        raise BlockedError("give either --kernel or --kernel-tree, not both")
    if args.xen_tree:
        if args.host != "nested":
            raise BlockedError(
                "a built Xen boots on the nested host here; install it on a lab box with "
                "`xenpvh host provision --xen-artifact ...` and boot with --host"
            )
        patches = [args.xen_patches] if args.xen_patches else []
        spec = TreeSpec.from_cli(args.xen_tree, patches, args.xen_config)
        progress: Progress
        with make_progress(console) as progress:
            built = build_xen(spec, rebuild=args.rebuild, progress=progress)
        console.print(escape(built.cache.describe()))
        xen_image = str(built.image)
        lines: tuple[str, ...] = ()
        if args.xen_patches:
            series_dir = Path(args.xen_patches)
            series_dir = series_dir if series_dir.is_dir() else series_dir.parent
            expect_file = series_dir / "expect-console"
            if expect_file.is_file():
                lines = read_expect_file(expect_file.read_text())
        expect = HostExpectation(xen_version=built.version, lines=lines)
    if args.kernel_tree:
        kspec = TreeSpec.from_cli(args.kernel_tree, [], None)
        with make_progress(console) as progress:
            kbuilt = build_linux(kspec, rebuild=args.rebuild, progress=progress)
        console.print(escape(kbuilt.cache.describe()))
        # The bzImage boots as a PVH guest (as Debian's vmlinuz does on the nested host).
        args.kernel = str(kbuilt.artifacts["image"])
    verdict, _ = boot_point(args, xen_image=xen_image, host_expect=expect)
    print_verdict(verdict, args.format, suite=f"xenpvh.{args.profile}", case="run")
    return verdict.exit_code
