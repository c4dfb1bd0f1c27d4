"""The developer's loop on the command line: `dev`, `attach`, `destroy`, `ps` and
`host lock|unlock|who` (xenpvh/cli/host_lock.py).

    xenpvh dev --profile linux-pvh --kernel arch/x86/boot/bzImage --host ssh://root@lab1 --watch
    xenpvh attach RUN            # the kept guest's console (Ctrl-] detaches)
    xenpvh destroy RUN           # end it
    xenpvh ps                    # kept guests, their age and owner
    xenpvh host lock lab1 --reason "bisecting blkfront" --for 3h

Arguments and drawing only: the loop is `xenpvh.run.devloop.DevLoop` (boots go through
`Session` like every front end, a `BootRequest` with `keep_on_fail`), its hosts
`xenpvh.run.dev_hosts`; kept guests are `xenpvh.run.keep` records, the box's lease is
`xenpvh.host.lock`.  `DevView` draws the loop's events.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from xenpvh.cli.commands import request_from_args
from xenpvh.cli.console import (
    LiveChecklist,
    err_console,
    print_error,
    render_timeline,
    terminal_safe,
)
from xenpvh.cli.progress import ProgressView
from xenpvh.errors import BlockedError
from xenpvh.host.base import Host
from xenpvh.host.request import HostRequest
from xenpvh.profile import load_profile
from xenpvh.run import keep
from xenpvh.run.dev_hosts import dev_host, kept_hosts, list_kept, reach_kept
from xenpvh.run.devloop import (
    DevLoop,
    DevRun,
    DevRunFinished,
    DevRunStarted,
    FilesChanged,
    GuestReaped,
    KeptGuestEnded,
    Watching,
)
from xenpvh.run.keep import KeptGuest, describe_age
from xenpvh.toolstack.attach import AttachEnd, attach
from xenpvh.toolstack.domain import xl_domain_exists
from xenpvh.util.progress import ProgressEvent

EXIT_PASS = 0
DEFAULT_KEEP = "2h"


# --------------------------------------------------------------------------- parsing


def duration(text: str) -> float:
    """An argparse type: seconds, or a number with s/m/h/d (`90`, `30m`, `2h`, `1.5d`)."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    t = text.strip().lower()
    factor = units.get(t[-1:])
    number = t[:-1] if factor is not None else t
    try:
        value = float(number) * (factor or 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (e.g. 90, 30m, 2h, 1d)"
        ) from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"a duration must be >= 0, not {text!r}")
    return value


def add_parsers(
    sub: Any,
    parser_class: type[argparse.ArgumentParser],
    add_point_args: Callable[[argparse.ArgumentParser], None],
    add_host_args: Callable[[argparse.ArgumentParser], None],
) -> None:
    """`dev`, `attach`, `destroy` and `ps` (main.py registers them in one call)."""
    p = sub.add_parser(
        "dev",
        help="the developer's loop: push a kernel, boot, keep a failed guest, re-run on change",
    )
    add_point_args(p)
    add_host_args(p)
    add_lock_wait_args(p)
    p.add_argument("--toolstack", choices=["xl", "libvirt"], default="xl")
    p.add_argument(
        "--artifacts", default="artifacts", help="directory for the runs' artifact directories"
    )
    p.add_argument(
        "--keep-on-fail",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep the guest of a `fail` running for `xenpvh attach` (default: on)",
    )
    p.add_argument(
        "--keep-for",
        type=duration,
        default=duration(DEFAULT_KEEP),
        metavar="DURATION",
        help=f"how long a kept guest lives before the next xenpvh command on the host reaps "
        f"it (default {DEFAULT_KEEP})",
    )
    p.add_argument("--watch", action="store_true", help="re-run whenever the kernel changes")
    p.add_argument(
        "--format",
        choices=["text", "json"],
        default="text",
        help="json: each run's outcome as one JSON object on one line of stdout (with --watch "
        "a stream, a line per run); the checklist and the human lines go to stderr",
    )
    p.add_argument(
        "--debounce",
        type=duration,
        default=1.0,
        metavar="SECONDS",
        help="--watch: the kernel must hold still this long before a run (default 1)",
    )
    p.set_defaults(func=cmd_dev)

    for name, helptext, func in (
        ("attach", "interactive console of a kept guest (Ctrl-] detaches)", cmd_attach),
        ("destroy", "end a kept guest (domain, run dir and record)", cmd_destroy),
    ):
        a = sub.add_parser(name, help=helptext)
        a.add_argument("run", metavar="RUN|DOMAIN", help="a run id or xenpvh-<run id>")
        add_reach_args(a, required=False)
        a.set_defaults(func=func)
    a = sub.add_parser("ps", help="list kept guests (age, owner); reaps expired ones")
    add_reach_args(a, required=False)
    a.add_argument("--format", choices=["text", "json"], default="text")
    a.set_defaults(func=cmd_ps)


def add_lock_wait_args(p: argparse.ArgumentParser) -> None:
    """`--wait-host` and `--owner` for every command that boots (boot, run, dev)."""
    p.add_argument(
        "--wait-host",
        type=duration,
        default=0.0,
        metavar="SECONDS",
        help="when another owner holds the host's lease (xenpvh host lock), wait this long "
        "for it instead of refusing at once",
    )
    p.add_argument("--owner", default=None, help="who runs this (default user@machine)")


def add_reach_args(p: argparse.ArgumentParser, *, required: bool, positional: bool = True) -> None:
    if positional:
        p.add_argument(
            "--host", default=None, help="the host (default: where the record says it is)"
        )
    p.add_argument("--inventory", default=None, help="TOML inventory of lab hosts")
    p.add_argument("--identity", default=None, help="ssh private key for ssh:// hosts")
    p.add_argument("--known-hosts", default=None, help="known_hosts file for ssh:// hosts")


# --------------------------------------------------------------------------- dev


def host_request_from_args(spec: str, args: argparse.Namespace) -> HostRequest:
    """The HostRequest of `spec` with the command's ssh files."""

    def path(name: str) -> Path | None:
        value = getattr(args, name, None)
        return Path(value) if value else None

    return HostRequest(
        spec=spec,
        inventory=path("inventory"),
        identity=path("identity"),
        known_hosts=path("known_hosts"),
    )


def cmd_dev(args: argparse.Namespace) -> int:
    if args.watch and not args.kernel:
        raise BlockedError("--watch needs --kernel PATH (the file whose changes start a run)")
    request = dataclasses.replace(
        request_from_args(args),
        artifacts=None,
        keep_on_fail=bool(args.keep_on_fail),
        keep_for=float(args.keep_for),
        wait_host=float(args.wait_host),
        owner=args.owner,
    )
    if not request.keep_for > 0:
        raise BlockedError("--keep-for must be more than 0")
    request.validate()  # blocked before any host is touched
    stages = [s.name for s in load_profile(request.profile).stages]
    err = err_console()
    watched = [Path(p) for p in (args.kernel, args.ramdisk) if p]
    with DevView(stages, err, as_json=args.format == "json") as view:
        loop = DevLoop(request, artifacts_root=Path(args.artifacts), on_event=view)
        with dev_host(request.host, view.progress) as host:
            loop.reap(host)
            first = loop.run_once(host, changed_at=None)
            if not args.watch:
                return first.exit_code
            loop.watch(host, watched, debounce=float(args.debounce))
    return first.exit_code  # not reached: watching ends with Ctrl-C


class DevView:
    """Draws a dev loop's events: the stage checklist and progress while a run boots, then
    the run's verdict line, its stage times against the previous run's, the kept guest; with
    `--format json` each run is also one JSON line on stdout."""

    def __init__(self, stages: list[str], console: Console, *, as_json: bool = False) -> None:
        self.stages = stages
        self.console = console
        self.as_json = as_json
        # The human lines: stdout, or stderr when stdout carries the JSON lines.
        self.out = console if as_json else Console(highlight=False, soft_wrap=True)
        self.progress = ProgressView(console)
        self._checklist: LiveChecklist | None = None

    def __call__(self, event: object) -> None:
        if isinstance(event, DevRunStarted):
            self._checklist = LiveChecklist(self.stages, self.console).__enter__()
        elif isinstance(event, DevRunFinished):
            self._end_run()
            self._show(event.run)
        elif isinstance(event, GuestReaped):
            rec = event.record
            self.console.print(
                f"reaped kept guest {rec.domain} of {escape(rec.owner)} (its keep ran out)"
            )
        elif isinstance(event, KeptGuestEnded):
            if event.error is None:
                self.console.print(f"destroyed {event.record.domain}, kept by the previous run")
            else:
                self.console.print(
                    f"[yellow]could not destroy {event.record.domain}: {escape(event.error)}[/]"
                )
        elif isinstance(event, Watching):
            paths = ", ".join(escape(str(p)) for p in event.paths)
            self.console.print(f"watching {paths} for changes (Ctrl-C stops)")
        elif isinstance(event, FilesChanged):
            self.console.print(f"changed: {', '.join(escape(p.name) for p in event.paths)}")
        elif isinstance(event, ProgressEvent):
            self.progress(event)
        elif self._checklist is not None:
            self._checklist(event)

    def _end_run(self) -> None:
        checklist, self._checklist = self._checklist, None
        self.progress.close()
        if checklist is not None:
            checklist.__exit__(None, None, None)

    def close(self) -> None:
        self._end_run()

    def __enter__(self) -> DevView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _show(self, run: DevRun) -> None:
        verdict, out = run.verdict, self.out
        if verdict.verdict in ("blocked", "broken"):
            print_error(self.console, str(verdict.verdict), verdict.reason)
        if run.number == 1:
            out.print(render_timeline(verdict))
        where = f" at {verdict.failed_stage}" if verdict.failed_stage else ""
        loop = f"start → verdict {run.verdict_at - run.started:.1f}s"
        if run.changed_at is not None:
            loop = f"kernel written → verdict {run.verdict_at - run.changed_at:.1f}s; " + loop
        uploads = run.meta.get("uploads") or {}
        sent = ", ".join(f"{k} {_bytes(v)}" for k, v in uploads.items()) or "nothing"
        out.print(
            Text.assemble(
                (f"run {run.number}: ", "bold"),
                (f"{verdict.verdict}{where}", "bold red" if verdict.verdict != "pass" else "green"),
                f" — {terminal_safe(verdict.reason, 200)} ({loop}; uploaded {sent})",
            )
        )
        if run.previous is not None:
            table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
            for col in ("stage", "now", "before", "Δ"):
                table.add_column(col, justify="left" if col == "stage" else "right")
            for d in run.deltas:
                delta = "" if d.delta is None else f"{d.delta:+.2f}s"
                table.add_row(
                    d.stage,
                    f"{d.now:.2f}s" if d.now is not None else d.status,
                    f"{d.before:.2f}s" if d.before is not None else "-",
                    delta,
                )
            out.print(table)
        rec = run.kept
        if rec is not None:
            until = time.strftime("%H:%M", time.localtime(rec.expires))
            out.print(
                f"kept {rec.domain} on {escape(rec.host)} until {until}: "
                f"[bold]xenpvh attach {rec.run_id}[/] (Ctrl-] detaches), "
                f"[bold]xenpvh destroy {rec.run_id}[/]"
            )
        artifacts = run.meta.get("artifacts")
        if artifacts:
            out.print(f"artifacts: {escape(str(artifacts))}")
        if self.as_json:
            sys.stdout.write(json.dumps(run.document(), default=str) + "\n")
            sys.stdout.flush()


def _bytes(n: object) -> str:
    if not isinstance(n, int):
        return str(n)
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 / 1024:.1f} MiB"


# --------------------------------------------------------------------------- attach, destroy, ps


def _reach_kept(
    args: argparse.Namespace, err: Console
) -> contextlib.AbstractContextManager[tuple[Host, KeptGuest]]:
    """(host, record) of the kept guest `args.run`: on --host, or where its record says."""
    host = host_request_from_args(args.host, args) if args.host else None
    files = host_request_from_args("", args)
    return reach_kept(args.run, host, files=files, progress=ProgressView(err))


def cmd_attach(args: argparse.Namespace) -> int:
    err = err_console()
    with _reach_kept(args, err) as (host, rec):
        if not xl_domain_exists(host, rec.domain):
            keep.remove_local(rec.run_id)
            raise BlockedError(f"kept guest {rec.domain} is gone from {host.name} (record removed)")
        log = Path(rec.console_log)
        console_log = log if log.parent.is_dir() else None
        err.print(
            f"attached to {rec.domain} on {escape(host.name)}; Ctrl-] detaches"
            + (f"; console appended to {escape(str(log))}" if console_log else "")
        )
        sys.stdout.flush()
        result = attach(host, rec.domain, console_log=console_log)
        until = time.strftime("%H:%M", time.localtime(rec.expires))
        err.print(
            f"\r\n{result.end}: {rec.domain} keeps running until {until} "
            f"(`xenpvh destroy {rec.run_id}` ends it)"
        )
        return EXIT_PASS if result.end is not AttachEnd.CONSOLE_ENDED else 3


def cmd_destroy(args: argparse.Namespace) -> int:
    err = err_console()
    with _reach_kept(args, err) as (host, rec):
        destroyed = keep.end(host, rec)
    what = "destroyed" if destroyed else "was gone already;"
    err.print(f"{rec.domain} {what} run dir {rec.run_dir} on {escape(rec.host)} removed")
    return EXIT_PASS


def cmd_ps(args: argparse.Namespace) -> int:
    err = err_console()

    def reaped(event: object) -> None:
        if isinstance(event, GuestReaped):
            rec = event.record
            err.print(f"reaped {rec.domain} of {escape(rec.owner)} (its keep ran out)")

    targets = kept_hosts(host_request_from_args(args.host, args) if args.host else None)
    listing = list_kept(targets, on_event=reaped, progress=ProgressView(err))
    rows = [_ps_row(rec, local=ours) for rec, ours in listing.guests]
    if args.format == "json":
        doc = {"kept": rows, "problems": listing.problems}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        _print_ps(rows)
        for p in listing.problems:
            err.print(f"[yellow]unreachable:[/] {escape(p)}")
    return EXIT_PASS if not listing.problems else 3


def _ps_row(rec: KeptGuest, *, local: bool) -> dict[str, Any]:
    now = time.time()
    return {
        "run": rec.run_id,
        "domain": rec.domain,
        "host": rec.host,
        "owner": rec.owner,
        "age_s": round(now - rec.since, 1),
        "left_s": round(rec.expires - now, 1),
        "failed_stage": rec.failed_stage,
        "artifacts": rec.artifacts,
        "console_log": rec.console_log,
        "recorded_here": local,
    }


def _print_ps(rows: list[dict[str, Any]]) -> None:
    out = Console(highlight=False, soft_wrap=True)
    if not rows:
        out.print("no kept guests")
        return
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    for col in ("RUN", "HOST", "OWNER", "AGE", "LEFT", "FAILED AT", "ARTIFACTS"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["run"],
            Text(terminal_safe(r["host"], 40)),
            Text(terminal_safe(r["owner"], 40)),
            describe_age(r["age_s"]),
            describe_age(r["left_s"]),
            Text(terminal_safe(r["failed_stage"] or "-", 20)),
            Text(terminal_safe(r["artifacts"], 80)),
        )
    out.print(table)


__all__ = [
    "DevView",
    "add_lock_wait_args",
    "add_parsers",
    "add_reach_args",
    "cmd_dev",
    "duration",
    "host_request_from_args",
]
