"""The developer's loop on the command line: `dev`, `attach`, `destroy`, `ps` and
`host lock|unlock|who`.

    xenpvh dev --profile linux-pvh --kernel arch/x86/boot/bzImage --host ssh://root@lab1 --watch
    xenpvh attach RUN            # the kept guest's console (Ctrl-] detaches)
    xenpvh destroy RUN           # end it
    xenpvh ps                    # kept guests, their age and owner
    xenpvh host lock lab1 --reason "bisecting blkfront" --for 3h

Boots go through `Session` like every front end (a `BootRequest` with `keep_on_fail`);
kept guests are `xenpvh.run.keep` records, the box's lease is `xenpvh.host.lock`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.base import Host
from xenpvh.host.request import HostRequest

EXIT_PASS = 0
DEFAULT_KEEP = "2h"
DEFAULT_LOCK_FOR = "4h"


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
        _add_reach_args(a, required=False)
        a.set_defaults(func=func)
    a = sub.add_parser("ps", help="list kept guests (age, owner); reaps expired ones")
    _add_reach_args(a, required=False)
    a.add_argument("--format", choices=["text", "json"], default="text")
    a.set_defaults(func=cmd_ps)


def add_host_lock_parsers(hsub: Any) -> None:
    """`host lock|unlock|who HOST`."""
    a = hsub.add_parser("lock", help="lease a whole host: other owners' runs wait or refuse")
    a.add_argument("host_spec", metavar="HOST", help="nested, local, ssh://user@host, alias")
    _add_reach_args(a, required=False, positional=False)
    a.add_argument("--reason", default="", help="said to whoever finds the host held")
    a.add_argument(
        "--for",
        dest="ttl",
        type=duration,
        default=duration(DEFAULT_LOCK_FOR),
        metavar="DURATION",
        help=f"the lease expires after this (default {DEFAULT_LOCK_FOR})",
    )
    a.add_argument("--owner", default=None, help="who holds it (default user@machine)")
    a.add_argument(
        "--wait", type=duration, default=0.0, metavar="SECONDS", help="wait for a holder"
    )
    a.set_defaults(func=cmd_host_lock)
    a = hsub.add_parser("unlock", help="release your lease on a host")
    a.add_argument("host_spec", metavar="HOST")
    _add_reach_args(a, required=False, positional=False)
    a.add_argument("--owner", default=None, help="whose lease (default user@machine)")
    a.add_argument("--force", action="store_true", help="remove whoever's lease it is")
    a.set_defaults(func=cmd_host_unlock)
    a = hsub.add_parser("who", help="who holds a host's lease")
    a.add_argument("host_spec", metavar="HOST")
    _add_reach_args(a, required=False, positional=False)
    a.add_argument("--format", choices=["text", "json"], default="text")
    a.set_defaults(func=cmd_host_who)


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


def _add_reach_args(p: argparse.ArgumentParser, *, required: bool, positional: bool = True) -> None:
    if positional:
        p.add_argument(
            "--host", default=None, help="the host (default: where the record says it is)"
        )
    p.add_argument("--inventory", default=None, help="TOML inventory of lab hosts")
    p.add_argument("--identity", default=None, help="ssh private key for ssh:// hosts")
    p.add_argument("--known-hosts", default=None, help="known_hosts file for ssh:// hosts")


# --------------------------------------------------------------------------- reaching hosts


def _err() -> Console:
    from xenpvh.cli.console import err_console

    return err_console()


def _host_request(spec: str, args: argparse.Namespace | None = None, **extra: Any) -> HostRequest:
    """The HostRequest of `spec`; ssh files from `extra` (a kept guest's `host_spec`, whose
    own "spec" key is `spec`) or else the command's options."""

    def path(name: str) -> Path | None:
        value = extra.get(name) or (getattr(args, name, None) if args is not None else None)
        return Path(value) if value else None

    return HostRequest(
        spec=spec,
        inventory=path("inventory"),
        identity=path("identity"),
        known_hosts=path("known_hosts"),
    )


@contextlib.contextmanager
def reach_host(request: HostRequest, console: Console | None = None) -> Iterator[Host]:
    """A host that is there already: a nested host must be up (`xenpvh host nested up`);
    nothing is booted for a lock, an attach or a listing."""
    if request.nested:
        from xenpvh.host.nested import NestedHost

        try:
            h = NestedHost.attach(console=console)
        except BrokenError:
            raise BlockedError(
                "no nested host is up (`xenpvh host nested up` starts one; guests kept on an "
                "earlier one ended with it)"
            ) from None
        try:
            yield h
        finally:
            h.close()
        return
    from xenpvh.host.open import open_host

    with open_host(request, console=console) as h:
        yield h


@contextlib.contextmanager
def dev_host(request: HostRequest, console: Console) -> Iterator[Host]:
    """The host of a dev loop.  The nested host must outlive the command (a kept guest lives
    in it), so one `xenpvh host nested up` left running is used, or such a one is started
    here and left up."""
    if not request.nested:
        from xenpvh.host.open import open_host

        with open_host(request, console=console) as h:
            yield h
        return
    from xenpvh.build.qemu import check_choice
    from xenpvh.host.nested import NestedHost
    from xenpvh.host.open import running_nested_host

    qemu = check_choice(request.qemu)
    h = running_nested_host(request.xen_image, qemu, console)
    if h is None:
        try:
            other: NestedHost | None = NestedHost.attach()
        except (BrokenError, BlockedError):
            other = None
        if other is not None:
            other.close()
            raise BlockedError(
                "a nested host is up with another Xen or QEMU than asked for; "
                "`xenpvh host nested down` it first, or ask for the same --qemu/--xen-image"
            )
        console.print(
            "nested host: none is up; starting one that stays up for later runs and kept "
            "guests (`xenpvh host nested down` stops it)"
        )
        started = NestedHost(console=console, xen_image=request.xen_image, qemu=qemu)
        started.up(detach=True)
        started.close()  # its ssh connection; the host itself stays up
        h = running_nested_host(request.xen_image, qemu, console)
        if h is None:
            raise BrokenError("the nested host just started cannot be reached")
    try:
        yield h
    finally:
        h.close()


def _files(host_spec: dict[str, Any]) -> dict[str, Any]:
    return {k: host_spec.get(k) for k in ("inventory", "identity", "known_hosts")}


def _record_for(args: argparse.Namespace) -> Any:
    """The kept guest `args.run` names: the local record, or the host's when --host."""
    from xenpvh.run import keep

    if args.host:
        return None
    return keep.find_local(args.run)


@contextlib.contextmanager
def _kept(args: argparse.Namespace, console: Console) -> Iterator[tuple[Host, Any]]:
    """(host, record) of the kept guest `args.run`."""
    from xenpvh.run import keep

    record = _record_for(args)
    if record is None:
        request = _host_request(args.host, args)
    else:
        spec = record.host_spec or {}
        request = _host_request(str(spec.get("spec") or "nested"), args, **_files(spec))
    try:
        with reach_host(request, console) as host:
            if record is None:
                record = keep.find_on_host(host, args.run)
            yield host, record
    except BlockedError:
        if record is not None and request.nested:
            # The nested host is down: the guests kept in it are gone with it.
            keep.remove_local(record.run_id)
            raise BlockedError(
                f"kept guest {record.domain} is gone: the nested host it ran in is down "
                "(record removed)"
            ) from None
        raise


# --------------------------------------------------------------------------- dev


def cmd_dev(args: argparse.Namespace) -> int:
    from xenpvh.cli.commands import request_from_args

    if args.watch and not args.kernel:
        raise BlockedError("--watch needs --kernel PATH (the file whose changes start a run)")
    base = request_from_args(args)
    request = dataclasses.replace(
        base,
        artifacts=None,
        keep_on_fail=bool(args.keep_on_fail),
        keep_for=float(args.keep_for),
        wait_host=float(args.wait_host),
        owner=args.owner,
    )
    if not request.keep_for > 0:
        raise BlockedError("--keep-for must be more than 0")
    request.validate()  # blocked before any host is touched
    from xenpvh.profile import load_profile

    stages = [s.name for s in load_profile(request.profile).stages]
    err = _err()
    loop = DevLoop(
        request, stages, err, artifacts_root=Path(args.artifacts), as_json=args.format == "json"
    )
    watched = [Path(p) for p in (args.kernel, args.ramdisk) if p]
    with dev_host(request.host, err) as host:
        loop.reap(host)
        code = loop.run_once(host, changed_at=None)
        if not args.watch:
            return code
        from xenpvh.run.devloop import FileWatch

        watch = FileWatch(watched, debounce=float(args.debounce))
        while True:
            err.print(
                f"watching {', '.join(escape(str(p)) for p in watched)} for changes (Ctrl-C stops)"
            )
            changed = watch.wait()
            assert changed is not None
            err.print(f"changed: {', '.join(escape(p.name) for p in changed)}")
            loop.end_previous_kept(host)
            loop.run_once(host, changed_at=_latest_mtime(changed))


def _latest_mtime(paths: list[Path]) -> float | None:
    times = []
    for p in paths:
        with contextlib.suppress(OSError):
            times.append(p.stat().st_mtime)
    return max(times) if times else None


class DevLoop:
    """Runs of one dev command: each a Session; shows verdict, stage-time differences to
    the previous run, what was uploaded and the kept guest."""

    def __init__(
        self,
        request: Any,
        stages: list[str],
        console: Console,
        *,
        artifacts_root: Path,
        as_json: bool = False,
        session_options: dict[str, Any] | None = None,
    ) -> None:
        self.request = request
        self.stages = stages
        self.console = console
        self.artifacts_root = artifacts_root
        self.as_json = as_json
        self.session_options = session_options or {}  # e.g. a XenStore factory in tests
        # The human lines: stdout, or stderr when stdout carries the JSON lines.
        self.out = console if as_json else Console(highlight=False, soft_wrap=True)
        self.previous: Any = None
        self.kept: Any = None
        self.runs = 0

    def reap(self, host: Host) -> None:
        from xenpvh.run import keep

        for rec in keep.reap_expired(host):
            self.console.print(
                f"reaped kept guest {rec.domain} of {escape(rec.owner)} (its keep ran out)"
            )

    def end_previous_kept(self, host: Host) -> None:
        from xenpvh.run import keep

        if self.kept is None:
            return
        rec, self.kept = self.kept, None
        try:
            keep.end(host, rec)
            self.console.print(f"destroyed {rec.domain}, kept by the previous run")
        except (BlockedError, BrokenError) as e:
            self.console.print(f"[yellow]could not destroy {rec.domain}: {escape(str(e))}[/]")

    def run_once(self, host: Host, *, changed_at: float | None) -> int:
        from xenpvh.build.command import make_progress
        from xenpvh.cli.console import LiveChecklist, print_error, render_timeline
        from xenpvh.run.events import VerdictEvent
        from xenpvh.run.session import Session

        self.runs += 1
        verdict_at: list[float] = []
        started = time.time()

        with (
            make_progress(self.console) as progress,
            LiveChecklist(self.stages, self.console) as checklist,
        ):

            def on_event(event: object) -> None:
                if isinstance(event, VerdictEvent):
                    verdict_at.append(time.time())
                checklist(event)

            session = Session(
                self.request,
                on_event=on_event,
                host=host,
                progress=progress,
                artifacts_root=self.artifacts_root,
                **self.session_options,
            )
            result = session.run()
        verdict = result.verdict
        if verdict.verdict in ("blocked", "broken"):
            print_error(self.console, str(verdict.verdict), verdict.reason)
        if self.runs == 1:
            self.out.print(render_timeline(verdict))
        at = verdict_at[0] if verdict_at else time.time()
        self.show(verdict, started, at, changed_at)
        if self.as_json:
            doc = run_document(self.runs, verdict, self.previous, started, at, changed_at)
            sys.stdout.write(json.dumps(doc, default=str) + "\n")
            sys.stdout.flush()
        self.previous = verdict
        return verdict.exit_code

    def show(
        self, verdict: Any, started: float, verdict_at: float, changed_at: float | None
    ) -> None:
        from xenpvh.cli.console import terminal_safe
        from xenpvh.run.devloop import stage_deltas

        meta = verdict.meta or {}
        where = f" at {verdict.failed_stage}" if verdict.failed_stage else ""
        loop = f"start → verdict {verdict_at - started:.1f}s"
        if changed_at is not None:
            loop = f"kernel written → verdict {verdict_at - changed_at:.1f}s; " + loop
        uploads = meta.get("uploads") or {}
        sent = ", ".join(f"{k} {_bytes(v)}" for k, v in uploads.items()) or "nothing"
        out = self.out
        out.print(
            Text.assemble(
                (f"run {self.runs}: ", "bold"),
                (f"{verdict.verdict}{where}", "bold red" if verdict.verdict != "pass" else "green"),
                f" — {terminal_safe(verdict.reason, 200)} ({loop}; uploaded {sent})",
            )
        )
        if self.previous is not None:
            table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
            for col in ("stage", "now", "before", "Δ"):
                table.add_column(col, justify="left" if col == "stage" else "right")
            for d in stage_deltas(self.previous, verdict):
                delta = "" if d.delta is None else f"{d.delta:+.2f}s"
                table.add_row(
                    d.stage,
                    f"{d.now:.2f}s" if d.now is not None else d.status,
                    f"{d.before:.2f}s" if d.before is not None else "-",
                    delta,
                )
            out.print(table)
        kept = meta.get("kept")
        if isinstance(kept, dict):
            from xenpvh.run.keep import KeptGuest

            rec = KeptGuest(**kept)
            self.kept = rec
            until = time.strftime("%H:%M", time.localtime(rec.expires))
            out.print(
                f"kept {rec.domain} on {escape(rec.host)} until {until}: "
                f"[bold]xenpvh attach {rec.run_id}[/] (Ctrl-] detaches), "
                f"[bold]xenpvh destroy {rec.run_id}[/]"
            )
        artifacts = meta.get("artifacts")
        if artifacts:
            out.print(f"artifacts: {escape(str(artifacts))}")


def run_document(
    n: int,
    verdict: Any,
    previous: Any,
    started: float,
    verdict_at: float,
    changed_at: float | None,
) -> dict[str, Any]:
    """One dev run as `--format json` prints it: the verdict, each stage's time against the
    previous run's, the loop's times, what was uploaded, the kept guest."""
    from xenpvh.run.devloop import stage_deltas

    meta = verdict.meta or {}
    return {
        "run": n,
        "run_id": meta.get("run_id"),
        "verdict": str(verdict.verdict),
        "failed_stage": verdict.failed_stage,
        "reason": verdict.reason,
        "exit_code": verdict.exit_code,
        "stages": [
            {
                "name": d.stage,
                "status": d.status,
                "t": d.now,
                "previous_t": d.before,
                "delta": d.delta,
            }
            for d in stage_deltas(previous, verdict)
        ],
        "start_to_verdict_s": round(verdict_at - started, 3),
        "kernel_written_to_verdict_s": (
            None if changed_at is None else round(verdict_at - changed_at, 3)
        ),
        "uploads": meta.get("uploads") or {},
        "uploaded_bytes": meta.get("uploaded_bytes", 0),
        "kept": meta.get("kept"),
        "artifacts": meta.get("artifacts"),
    }


def _bytes(n: object) -> str:
    if not isinstance(n, int):
        return str(n)
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 / 1024:.1f} MiB"


# --------------------------------------------------------------------------- attach, destroy, ps


def cmd_attach(args: argparse.Namespace) -> int:
    from xenpvh.run import keep
    from xenpvh.toolstack.attach import AttachEnd, attach
    from xenpvh.toolstack.base import xl_domain_exists

    err = _err()
    with _kept(args, err) as (host, rec):
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
    from xenpvh.run import keep

    err = _err()
    with _kept(args, err) as (host, rec):
        destroyed = keep.end(host, rec)
    what = "destroyed" if destroyed else "was gone already;"
    err.print(f"{rec.domain} {what} run dir {rec.run_dir} on {escape(rec.host)} removed")
    return EXIT_PASS


def cmd_ps(args: argparse.Namespace) -> int:
    from xenpvh.run import keep

    err = _err()
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    if args.host:
        targets = {args.host: _host_request(args.host, args)}
    else:
        targets = {}
        for rec in keep.local_records():
            spec = rec.host_spec or {}
            key = json.dumps(spec, sort_keys=True)
            request = _host_request(str(spec.get("spec") or "nested"), None, **_files(spec))
            targets.setdefault(key, request)
    seen_local = {r.run_id for r in keep.local_records()}
    for request in targets.values():
        try:
            with reach_host(request, err) as host:
                for rec in keep.reap_expired(host):
                    err.print(f"reaped {rec.domain} of {escape(rec.owner)} (its keep ran out)")
                on_host = keep.host_records(host)
        except BlockedError as e:
            if request.nested:
                on_host = []  # the nested host is down: its guests ended with it
            else:
                problems.append(f"{request.spec}: {e}")
                continue
        except BrokenError as e:
            problems.append(f"{request.spec}: {e}")
            continue
        ids = {r.run_id for r in on_host}
        for rec in keep.local_records():
            if (rec.host_spec or {}).get("spec") == request.spec and rec.run_id not in ids:
                keep.remove_local(rec.run_id)  # reaped or destroyed elsewhere
        rows += [_ps_row(r, local=r.run_id in seen_local) for r in on_host]
    if args.format == "json":
        sys.stdout.write(json.dumps({"kept": rows, "problems": problems}, indent=2) + "\n")
    else:
        _print_ps(rows)
        for p in problems:
            err.print(f"[yellow]unreachable:[/] {escape(p)}")
    return EXIT_PASS if not problems else 3


def _ps_row(rec: Any, *, local: bool) -> dict[str, Any]:
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
    from xenpvh.cli.console import terminal_safe
    from xenpvh.run.keep import describe_age

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


# --------------------------------------------------------------------------- host lock


def cmd_host_lock(args: argparse.Namespace) -> int:
    from xenpvh.host import lock

    err = _err()
    owner = args.owner or lock.default_owner()
    with reach_host(_host_request(args.host_spec, args), err) as host:
        current = lock.read_lease(host)
        if current is not None and current.owner == owner:
            lease = lock.renew(host, current, args.ttl)
            verb = "renewed"
        else:

            def waiting(holder: lock.HostLease) -> None:
                err.print(f"waiting: {escape(host.name)} is held by {escape(holder.describe())}")

            lease = lock.acquire(
                host,
                owner=owner,
                reason=args.reason,
                ttl=args.ttl,
                wait=args.wait,
                poll=min(5.0, max(0.5, args.wait / 10)),
                on_wait=waiting,
                pid=0,  # held until it expires or `host unlock`, not while we run
            )
            verb = "locked"
    err.print(f"{verb} {escape(host.name)}: {escape(lease.describe())}")
    return EXIT_PASS


def cmd_host_unlock(args: argparse.Namespace) -> int:
    from xenpvh.host import lock

    err = _err()
    owner = args.owner or lock.default_owner()
    with reach_host(_host_request(args.host_spec, args), err) as host:
        if args.force:
            gone = lock.force_release(host)
            err.print(
                f"unlocked {escape(host.name)}"
                + (f" (was {escape(gone.describe())})" if gone else " (it was free)")
            )
            return EXIT_PASS
        current = lock.read_lease(host)
        if current is None:
            err.print(f"{escape(host.name)} is not locked")
            return EXIT_PASS
        if current.owner != owner:
            raise lock.HostBusy(current)
        lock.release(host, current)
    err.print(f"unlocked {escape(host.name)}")
    return EXIT_PASS


def cmd_host_who(args: argparse.Namespace) -> int:
    from xenpvh.host import lock

    err = _err()
    with reach_host(_host_request(args.host_spec, args), err) as host:
        current = lock.read_lease(host)
        name = host.name
    if args.format == "json":
        body = dataclasses.asdict(current) if current is not None else None
        sys.stdout.write(json.dumps({"host": name, "lease": body}, indent=2) + "\n")
    elif current is None:
        print(f"{name}: free")
    else:
        Console(highlight=False, soft_wrap=True).print(
            Text(f"{name}: held by {current.describe()}")
        )
    return EXIT_PASS


__all__ = [
    "DevLoop",
    "add_host_lock_parsers",
    "add_lock_wait_args",
    "add_parsers",
    "dev_host",
    "duration",
    "reach_host",
]
