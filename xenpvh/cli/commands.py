"""The CLI's commands: arguments -> a request for the library -> what the user sees.

Boots go through `xenpvh.run.session.Session` like every other front end; these functions
only translate arguments and present events and results.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from xenpvh.build.qemu import check_choice
from xenpvh.check.checker import check_file
from xenpvh.check.verdict import Verdict, VerdictValue
from xenpvh.cli.build import (
    build_freebsd_command,
    build_qemu_command,
    build_xen_command,
    build_xtf_command,
    guestkit_command,
)
from xenpvh.cli.console import LiveChecklist, err_console, print_error, render_timeline
from xenpvh.cli.progress import ProgressView
from xenpvh.errors import BlockedError
from xenpvh.host.nested import NestedHost, NestedState
from xenpvh.host.open import open_host
from xenpvh.host.provisioning import provision_ssh
from xenpvh.profile import list_profiles, load_profile
from xenpvh.profile.domain import DomainSpec
from xenpvh.render.libvirt import render_libvirt_xml
from xenpvh.render.xl import render_xl_config
from xenpvh.report import RunReport, render_junit, render_verdict_json
from xenpvh.run.boot import new_run_id
from xenpvh.run.remote import remote_paths
from xenpvh.run.request import BootRequest, HostRequest, XenBuildRequest
from xenpvh.run.session import Session

EXIT_PASS = 0


def _out_console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _err() -> Console:
    return err_console()


def print_verdict(verdict: Verdict, fmt: str, *, document: dict[str, Any], junit: str) -> None:
    """The result on stdout: a timeline, one JSON object (the verdict.json document), or
    the JUnit document (junit.xml)."""
    if fmt == "json":
        sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
        return
    if fmt == "junit":
        sys.stdout.write(junit)
        return

    _out_console().print(render_timeline(verdict))


# --------------------------------------------------------------------------- check


def cmd_check(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    defaults = profile.point()
    vcpus = defaults.vcpus if args.vcpus is None else args.vcpus
    disks = len(defaults.disks) if args.disks is None else args.disks
    vifs = len(defaults.vifs) if args.vifs is None else args.vifs
    with _console_source(args.log) as log:
        verdict = check_file(
            log,
            profile,
            vcpus=vcpus,
            disks=disks,
            vifs=vifs,
            strict_devices=getattr(args, "strict_devices", False),
            source=getattr(args, "console_source", "xl"),
            domid=getattr(args, "domid", None),
        )

    now = time.time()
    report = RunReport(
        verdict=verdict,
        profile=profile.name,
        point="stdin" if args.log == "-" else Path(args.log).name,
        run_id=new_run_id(),
        host=None,
        started_at=now,
        finished_at=now,
        artifacts=None,
        console_log=None,
    )
    print_verdict(
        verdict,
        args.format,
        document=render_verdict_json(report),
        junit=render_junit(report) if args.format == "junit" else "",
    )
    return verdict.exit_code


@contextlib.contextmanager
def _console_source(arg: str) -> Iterator[Path]:
    """The console log to check: a file, or standard input (`-`) spooled to a temp file
    (bounded: the checker reads files in bounded lines)."""
    if arg != "-":
        log = Path(arg)
        if not log.is_file():
            raise BlockedError(f"console log {log} does not exist or is not a file")
        yield log
        return

    with tempfile.NamedTemporaryFile(prefix="xenpvh-check-", suffix=".log") as tmp:
        stdin = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else io.BytesIO()
        for chunk in iter(lambda: stdin.read(1 << 16), b""):
            tmp.write(chunk)
        tmp.flush()
        yield Path(tmp.name)


# --------------------------------------------------------------------------- profiles, config


def cmd_profiles(args: argparse.Namespace) -> int:
    profiles = list_profiles()
    if args.format == "json":
        out = [
            {"name": p.name, "description": p.description, "stages": [s.name for s in p.stages]}
            for p in profiles
        ]
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return EXIT_PASS
    con = _out_console()
    for p in profiles:
        con.print(f"[bold]{p.name}[/bold]  {escape(p.description)}")
        con.print("    stages: " + " → ".join(s.name for s in p.stages))
    return EXIT_PASS


def cmd_config_render(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    point = profile.point(vcpus=args.vcpus, memory_mb=args.memory, kernel=args.kernel)
    point = preview_point(point)
    if args.libvirt:
        sys.stdout.write(render_libvirt_xml(point))
    else:
        sys.stdout.write(render_xl_config(point, args.xen))
    return EXIT_PASS


def preview_point(point: DomainSpec) -> DomainSpec:
    """The point with the paths a run would give it, through the run's own preparation code
    (`xenpvh.run.remote.remote_paths`); content hashes and the run id shown as placeholders."""

    def local(value: str | None) -> Path | None:
        if not value:
            return None
        # `@source:item` (guest kit, Debian guest, FreeBSD build): the item names the file.
        return Path(value.partition(":")[2] if value.startswith("@") else value)

    return remote_paths(
        point,
        run_id="RUN-ID",
        kernel=local(point.kernel),
        ramdisk=local(point.ramdisk),
        kernel_id=lambda p: "SHA256",
    )


# --------------------------------------------------------------------------- boot / run


def request_from_args(args: argparse.Namespace) -> Any:
    xen_build = None
    if getattr(args, "builds", False) and args.xen_tree:
        xen_build = XenBuildRequest(
            tree=args.xen_tree,
            patches=(args.xen_patches,) if args.xen_patches else (),
            config=args.xen_config,
            rebuild=bool(args.rebuild),
        )
    return BootRequest(
        profile=args.profile,
        vcpus=args.vcpus,
        memory_mb=args.memory,
        kernel=args.kernel,
        ramdisk=args.ramdisk,
        cmdline_append=args.cmdline_append,
        toolstack=args.toolstack,
        host=HostRequest(
            spec=args.host,
            inventory=Path(args.inventory) if args.inventory else None,
            identity=Path(args.identity) if args.identity else None,
            known_hosts=Path(args.known_hosts) if args.known_hosts else None,
            xen_image=Path(args.xen_image) if args.xen_image else None,
            qemu=args.qemu,
        ),
        attempts=args.attempts,
        artifacts=Path(args.artifacts) if args.artifacts else None,
        xen_build=xen_build,
        kernel_tree=getattr(args, "kernel_tree", None) if getattr(args, "builds", False) else None,
        rebuild=bool(getattr(args, "rebuild", False)),
        wait_host=float(getattr(args, "wait_host", 0.0) or 0.0),
        owner=getattr(args, "owner", None),
    )


def cmd_boot(args: argparse.Namespace) -> int:
    """`xenpvh boot` and `xenpvh run`: one Session, shown as a live checklist."""

    request = request_from_args(args)
    err = _err()
    stages = _stage_names(request.profile)
    if request.xen_build is not None:
        stages = ["hypervisor", *stages]

    def opener(hreq: Any, artifacts: Path) -> Any:
        return open_host(hreq, artifacts=artifacts, progress=progress)

    with LiveChecklist(stages, err) as checklist, ProgressView(err) as progress:
        session = Session(request, on_event=checklist, open_host=opener, progress=progress)
        result = session.run()
    verdict = result.verdict
    document, junit = _written(result, session)
    if verdict.verdict in (VerdictValue.BLOCKED, VerdictValue.BROKEN):
        # The one-line error on stderr, as for every command; stdout keeps its format.

        print_error(err, str(verdict.verdict), verdict.reason)
        if args.format == "text" and not verdict.stages:
            return verdict.exit_code
    print_verdict(verdict, args.format, document=document, junit=junit)
    return verdict.exit_code


def _written(result: Any, session: Any) -> tuple[dict[str, Any], str]:
    """What stdout shows is what was written: verdict.json and junit.xml themselves."""
    reports = result.reports
    if "verdict.json" in reports and "junit.xml" in reports:
        return (
            json.loads(Path(reports["verdict.json"]).read_text()),
            Path(reports["junit.xml"]).read_text(),
        )
    # Blocked before anything was made (no artifacts directory): rendered, not written.

    report = session.report_for(result.verdict)
    return render_verdict_json(report), render_junit(report)


def _stage_names(profile: str) -> list[str]:
    try:
        return [s.name for s in load_profile(profile).stages]
    except BlockedError:
        return []  # the session reports the bad profile as `blocked`


# --------------------------------------------------------------------------- hosts


def cmd_host_nested(args: argparse.Namespace) -> int:
    console = _err()
    progress = ProgressView(console)
    if args.action == "ssh":
        # Hand the terminal over to OpenSSH with the pinned key and known_hosts.
        argv = NestedHost.attach(progress=progress).ssh_command() + [
            a for a in args.ssh_args if a != "--"
        ]
        sys.stdout.flush()
        os.execvp(argv[0], argv)

    image = Path(args.xen_image) if args.xen_image else None
    if image is not None and not image.is_file():
        raise BlockedError(f"--xen-image {image} does not exist")
    nested = NestedHost(progress=progress, xen_image=image, qemu=check_choice(args.qemu))
    if args.action == "up":
        nested.up(detach=True)
        st = nested.status()
        console.print(
            f"nested host up: pid {st.pid}, ssh port {st.ssh_port}, serial {st.serial_log}"
        )
        return EXIT_PASS
    if args.action == "down":
        nested.down()
        console.print("nested host down")
        return EXIT_PASS
    st = nested.status()
    print(f"state: {st.state.value}")
    if st.state is not NestedState.ABSENT and st.pid:
        print(f"pid: {st.pid}\nssh_port: {st.ssh_port}\nserial_log: {st.serial_log}")
    return EXIT_PASS if st.state is NestedState.READY else 1


def cmd_host_provision(args: argparse.Namespace) -> int:
    """`xenpvh host provision ssh://root@box`: site.yml over ssh (host key verified)."""

    console = _err()
    extra = _extra_vars(args.extra_vars)
    with ProgressView(console) as progress:
        result = provision_ssh(
            args.address,
            identity=Path(args.identity) if args.identity else None,
            known_hosts=Path(args.known_hosts) if args.known_hosts else None,
            xen_artifact=args.xen_artifact,
            extra_vars=extra,
            log=Path(args.log) if args.log else None,
            progress=progress,
        )
    counts = {
        "ok": result.ok,
        "changed": result.changed,
        "failed": result.failed,
        "unreachable": result.unreachable,
        "log": str(result.log),
    }
    if args.format == "json":
        sys.stdout.write(json.dumps({"address": args.address, **counts}, indent=2) + "\n")
    line = f"provisioned {args.address}: " + " ".join(f"{k}={v}" for k, v in counts.items())
    if result.failed or result.unreachable:
        console.print(f"[bold red]provisioning failed:[/] {escape(line)}", soft_wrap=True)
        return 3 if result.unreachable else 1
    console.print(escape(line), soft_wrap=True)
    return EXIT_PASS


def _extra_vars(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings and `@FILE` (a JSON object), later ones winning."""
    out: dict[str, Any] = {}
    for item in items:
        if item.startswith("@"):
            path = Path(item[1:])
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise BlockedError(f"--extra-vars {item}: cannot read a JSON object: {e}") from e
            if not isinstance(data, dict):
                raise BlockedError(f"--extra-vars {item}: not a JSON object")
            out.update(data)
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise BlockedError(f"--extra-vars {item!r}: expected KEY=VALUE or @FILE.json")
        out[key] = value
    return out


# --------------------------------------------------------------------------- builds


def cmd_build_xen(args: argparse.Namespace) -> int:
    return build_xen_command(args)


def cmd_build_qemu(args: argparse.Namespace) -> int:
    return build_qemu_command(args)


def cmd_build_freebsd(args: argparse.Namespace) -> int:
    return build_freebsd_command(args)


def cmd_build_xtf(args: argparse.Namespace) -> int:
    return build_xtf_command(args)


def cmd_build_guestkit(args: argparse.Namespace) -> int:
    return guestkit_command(args)


__all__ = ["preview_point", "print_verdict", "request_from_args"]
