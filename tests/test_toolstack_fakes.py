"""Fakes at the Host protocol boundary for toolstack/run unit tests (no tests here).

`FakeXenHost` answers like xl 4.17 does (formats copied from xl's output) and keeps a tiny
remote file system; `xl console` is a real child process on a real pty printing a scripted
transcript, so ConsoleCapture's pty/pexpect path is exercised for real.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pexpect

from xenpvh.errors import BlockedError
from xenpvh.host.base import CommandResult

XL_INFO = """\
host                   : dom0
release                : 6.1.0-28-amd64
version                : #1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1
machine                : x86_64
nr_cpus                : 2
total_memory           : 3071
free_memory            : 1843
xen_major              : 4
xen_minor              : 17
xen_extra              : .5
xen_version            : 4.17.5
xen_caps               : xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64
xen_commandline        : placeholder console=com1 dom0_mem=1024M,max:1024M
virt_caps              : pv hvm hap
"""
LIST_HEADER = "Name                                        ID   Mem VCPUs\tState\tTime(s)\n"


def _row(name: str, domid: int, mem: int, vcpus: int, state: str) -> str:
    return f"{name:<40} {domid:5d} {mem:5d} {vcpus:5d}     {state}  {1.5:8.1f}\n"


class FakeXenHost:
    name = "fake-dom0"

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.files: dict[str, bytes] = {}
        self.domains: dict[str, dict] = {
            "Domain-0": {"domid": 0, "type": "pv", "paused": False, "mem": 1024, "vcpus": 2}
        }
        self.next_domid = 1
        self.console: bytes = b""  # what `xl console` prints
        self.console_then: str = "stay"  # "stay" | "exit" (client dies) | "crash" (domain gone)
        self.console_delay = 0.02
        self.children: list[pexpect.spawn] = []
        self.fail: dict[str, CommandResult] = {}  # argv[0:2] joined -> canned failure
        self.interfaces: set[str] = {"lo", "eth0", "xenbr0"}  # /sys/class/net/*
        self.mtimes: dict[str, float] = {}  # path (file or dir) -> mtime; default: now
        # xenstored's process state letters as /proc shows them ("" or []: none runs); a
        # callable decides per call (tests tie it to their fake XenStore's `dead`).
        self.xenstored: str | Callable[[], str] = "S"
        self.xenstored_reads = 0

    # -- Host protocol ----------------------------------------------------------------------

    def run(self, argv: Sequence[str], *, timeout: float = 120.0, input=None, check=False):
        argv = tuple(str(a) for a in argv)
        if isinstance(argv, str) or not argv:
            raise BlockedError("argv list required")
        self.calls.append(argv)
        key = " ".join(argv[:2])
        res = self.fail.get(key) or self._answer(argv)
        return res.check() if check else res

    def put(self, local: Path, remote: str, *, mode: int | None = None) -> bool:
        data = Path(local).read_bytes()
        self.calls.append(("<put>", str(local), remote))
        changed = self.files.get(remote) != data
        self.files[remote] = data
        return changed

    def put_bytes(self, data: bytes, remote: str, *, mode: int = 0o644) -> None:
        self.calls.append(("<put_bytes>", remote))
        self.files[remote] = data

    def get(self, remote: str, local: Path) -> None:
        Path(local).write_bytes(self.files[remote])

    def spawn(self, argv: Sequence[str], *, timeout: float = 30.0) -> pexpect.spawn:
        argv = tuple(argv)
        self.calls.append(("<spawn>", *argv))
        assert argv[:4] == ("xl", "console", "-t", "pv"), argv
        dom = self.domains[argv[4]]
        self.files[f"/var/lock/xenconsole.{dom['domid']}"] = b""
        script = (
            "import sys, time\n"
            f"data = {self.console!r}\n"
            "for line in data.splitlines(keepends=True):\n"
            "    sys.stdout.buffer.write(line); sys.stdout.flush()\n"
            f"    time.sleep({self.console_delay})\n"
            f"if {self.console_then == 'stay'!r}:\n"
            "    time.sleep(3600)\n"
        )
        child = pexpect.spawn(sys.executable, ["-c", script], timeout=timeout)
        dom["console"] = child
        self.children.append(child)
        return child

    def open_stream(self, argv: Sequence[str]):
        raise AssertionError("tests inject a XenStore; no streams expected")

    def close(self) -> None:
        for c in self.children:
            c.close(force=True)

    # -- xl ---------------------------------------------------------------------------------

    def _alive(self, name: str) -> bool:
        dom = self.domains.get(name)
        if dom is None:
            return False
        child = dom.get("console")
        if self.console_then == "crash" and child is not None and not child.isalive():
            del self.domains[name]  # on_crash="destroy"
            return False
        return True

    def _answer(self, argv: tuple[str, ...]) -> CommandResult:
        ok = lambda out=b"": CommandResult(argv, 0, out, b"")  # noqa: E731
        err = lambda msg, rc=1: CommandResult(argv, rc, b"", msg.encode())  # noqa: E731
        cmd, args = argv[0], argv[1:]
        if cmd == "xl":
            sub = args[0]
            if sub == "info":
                return ok(XL_INFO.encode())
            if sub == "dmesg":
                return ok(b"(XEN) Xen version 4.17.5\n")
            if sub == "list" and len(args) == 1:
                rows = [
                    _row(n, d["domid"], d["mem"], d["vcpus"], "--p---" if d["paused"] else "-b----")
                    for n, d in self.domains.items()
                    if self._alive(n)
                ]
                return ok((LIST_HEADER + "".join(rows)).encode())
            if sub == "list" and args[1] == "-l":
                if not self._alive(args[2]):
                    return err(f"{args[2]} is an invalid domain identifier (rc=-6)\n")
                d = self.domains[args[2]]
                entry = [{"domid": d["domid"], "config": {"c_info": {"type": d["type"]}}}]
                return ok(json.dumps(entry).encode())
            if sub == "domid":
                if not self._alive(args[1]):
                    return err(
                        f"Can't get domid of domain name '{args[1]}', "
                        "maybe this domain does not exist.\n"
                    )
                return ok(f"{self.domains[args[1]]['domid']}\n".encode())
            if sub == "create":
                cfg = self.files[args[-1]].decode()
                name = re.search(r'^name\s*=\s*"([^"]+)"', cfg, re.M)[1]
                typ = "pvh" if re.search(r'^type\s*=\s*"pvh"', cfg, re.M) else "pv"
                self.domains[name] = {
                    "domid": self.next_domid,
                    "type": typ,
                    "paused": "-p" in args,
                    "mem": 256,
                    "vcpus": 1,
                }
                self.next_domid += 1
                return CommandResult(argv, 0, b"", f"Parsing config from {args[-1]}\n".encode())
            if sub == "unpause":
                self.domains[args[1]]["paused"] = False
                return ok()
            if sub == "destroy":
                if not self._alive(args[1]):
                    return err(f"{args[1]} is an invalid domain identifier (rc=-6)\n")
                dom = self.domains.pop(args[1])
                if dom.get("console") is not None:
                    dom["console"].close(force=True)
                return ok()
            return err(f"fake xl: unknown {argv}")
        if cmd == "sh" and args[0] == "-c":
            # The run's shell snippets, by their text (data comes as positional args).
            from xenpvh.host.lock import READ_SCRIPT
            from xenpvh.run.liveness import XENSTORED_STATE_SCRIPT
            from xenpvh.run.remote import MISSING_SCRIPT, NO_IFACE_SCRIPT, SCRATCH_SCRIPT

            script, params = args[1], args[3:]
            if script == MISSING_SCRIPT:
                gone = [p for p in params if not self.files.get(p)]
                return ok("".join(f"{p}\n" for p in gone).encode())
            if script == NO_IFACE_SCRIPT:
                gone = [b for b in params if b not in self.interfaces]
                return ok("".join(f"{b}\n" for b in gone).encode())
            if script == READ_SCRIPT:  # the host lease: the clock, then none (or a lease)
                lease = self.files.get(params[0])
                if lease is None:
                    return ok(b"%d\nnone\n" % time.time())
                digest = hashlib.sha256(lease).hexdigest().encode()
                return ok(b"%d\n%s\n%s" % (time.time(), digest, lease))
            if script == XENSTORED_STATE_SCRIPT:
                self.xenstored_reads += 1
                states = self.xenstored() if callable(self.xenstored) else self.xenstored
                if not states:
                    return err("", 3)
                return ok("".join(f"{c}\n" for c in states).encode())
            if script == SCRATCH_SCRIPT:
                self.files[params[1]] = b""
                return self.run(tuple(params[2:]))  # as the shell would run it
            return err(f"fake host: unknown script {script!r}")
        if cmd in ("mkdir", "truncate", "mkfs.ext4"):
            if cmd == "truncate":
                self.files[args[-1]] = b""
            return ok()
        if cmd == "test":
            return ok() if args[-1] in self.files else err("", 1)
        if cmd == "cat":
            return ok(self.files[args[-1]]) if args[-1] in self.files else err("No such file")
        if cmd == "tail":
            start = int(args[1].lstrip("+")) - 1
            data = self.files.get(args[-1])
            return ok(data[start:]) if data is not None else err("No such file")
        if cmd == "find" and "-mmin" in args:  # find ROOT... -mindepth 1 -maxdepth 1 -mmin +N
            roots = [a.rstrip("/") + "/" for a in args[: args.index("-mindepth")]]
            cutoff = time.time() - 60 * int(args[args.index("-mmin") + 1].lstrip("+"))
            children = sorted(
                {
                    r + p[len(r) :].split("/")[0]
                    for r in roots
                    for p in self.files
                    if p.startswith(r)
                }
            )
            old = [c for c in children if self.mtimes.get(c, time.time()) < cutoff]
            return ok("".join(f"{c}\n" for c in old).encode())
        if cmd == "find":  # find ROOT -mindepth 2 -maxdepth 2 -name NAME -exec head -v ... +
            root = args[0].rstrip("/") + "/"
            name = "/" + args[args.index("-name") + 1]
            hits = [
                p
                for p in sorted(self.files)
                if p.startswith(root) and p[len(root) :].count("/") == 1 and p.endswith(name)
            ]
            return ok(b"\n".join(b"==> %s <==\n%s" % (p.encode(), self.files[p]) for p in hits))
        if cmd == "rm":
            for p in list(self.files):
                if any(p == a or p.startswith(a.rstrip("/") + "/") for a in args[2:]):
                    del self.files[p]
            return ok()
        return err(f"fake host: unknown command {argv}")
