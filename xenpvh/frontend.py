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
from rich.table import Table
from rich.text import Text

from xenpvh.check.verdict import StageStatus, Verdict, VerdictValue
from xenpvh.errors import BlockedError
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
) -> Iterator[Host]:
    """Yield a connected Host for `spec` and always release it (a nested host is shut down)."""
    if spec == "nested":
        from xenpvh.host.nested import NestedHost

        image = Path(xen_image) if xen_image else None
        if image is not None and not image.is_file():
            raise BlockedError(f"--xen-image {image} does not exist")
        nested = NestedHost(console=console, artifacts=artifacts, xen_image=image)
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


def default_artifacts(profile: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("artifacts") / f"{profile}-{stamp}-{os.getpid()}"


def _local_file(value: str | None, what: str) -> None:
    if value and not value.startswith("@") and not Path(value).is_file():
        raise BlockedError(f"{what} {value} does not exist (or is not a file)")


def boot_point(args: argparse.Namespace, *, xen_image: str | None = None) -> tuple[Verdict, Path]:
    """Boot one profile point described by CLI-shaped args; returns the verdict and artifacts."""
    from xenpvh.profile import load_profile
    from xenpvh.run.boot import BootRun

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
    ) as host:
        stages = [s.name for s in profile.stages]
        with LiveChecklist(stages, console) as checklist:
            run = BootRun(
                host,
                profile,
                point,
                toolstack=args.toolstack,
                artifacts=artifacts,
                on_event=checklist,
            )
            verdict = run.run()
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
    nested = NestedHost(console=console, xen_image=image)
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
