"""A real PostgreSQL server for the tests: initdb + pg_ctl on a temporary directory, a unix
socket there and a free TCP port on loopback, run as the `postgres` account when the tests
run as root (PostgreSQL refuses to run as root), as the current user otherwise."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class PostgresServer:
    socket_dir: Path
    port: int
    user: str = "xenpvh"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@/{dbname}?host={self.socket_dir}&port={self.port}"

    def new_database(self) -> str:
        """A fresh, empty database (one per test); returns its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    bindir = pg_bindir()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL's initdb not found (Debian: apt install postgresql)")
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    base = Path(tempfile.mkdtemp(prefix="xenpvh-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if as_root:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
    port = _free_port()
    ctl = [*prefix, str(bindir / "pg_ctl"), "-D", str(data)]
    run = {"check": True, "capture_output": True, "text": True, "stdin": subprocess.DEVNULL}
    try:
        subprocess.run(
            [
                *prefix,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "xenpvh",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            **run,
        )
        opts = f"-k {sock} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run([*ctl, "-o", opts, "-l", str(base / "server.log"), "-w", "start"], **run)
        try:
            yield PostgresServer(sock, port)
        finally:
            subprocess.run([*ctl, "-m", "fast", "-w", "stop"], **{**run, "check": False})
    finally:
        shutil.rmtree(base, ignore_errors=True)
