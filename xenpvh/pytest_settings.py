"""The pytest plugin's settings: each `--xenpvh-NAME` option with its ini twin
(`xenpvh_NAME` in pytest.ini or `[tool.pytest.ini_options]`), resolved once into
`config.option` (the command line wins, then the ini file, then the default), and the one
function that picks a pytest-xdist worker's host from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class Setting:
    """One setting: option `--xenpvh-<name>` (dest and ini name `xenpvh_<name>`)."""

    name: str
    help: str
    default: object = None
    kind: str = "string"  # string | path | int | float | list
    short: str | None = None  # the pre-`--xenpvh-` name, offered where free

    @property
    def dest(self) -> str:
        return f"xenpvh_{self.name.replace('-', '_')}"


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "host",
        "Xen host for `xen` tests: nested (default), local, ssh://user@host[:port], "
        "user@host[:port], an ~/.ssh/config alias, or a name from the inventory",
        "nested",
        short="--host",
    ),
    Setting(
        "hosts",
        "a pool of Xen hosts, comma-separated (ini: whitespace-separated): pytest-xdist "
        "worker gwN takes host N mod the pool's size (instead of --xenpvh-host)",
        (),
        "list",
    ),
    Setting(
        "inventory", "TOML inventory of lab hosts ([hosts.<name>])", None, "path", "--inventory"
    ),
    Setting("identity", "ssh private key for the Xen host", None, "path", "--identity"),
    Setting(
        "known-hosts", "known_hosts file pinning the Xen host's key", None, "path", "--known-hosts"
    ),
    Setting(
        "artifacts",
        "keep every run's artifacts under this directory (default: pytest's tmp dir)",
        None,
        "path",
    ),
    Setting(
        "attempts",
        "attempts per boot when the host itself spoils a run (a known emulation fault of "
        "the nested host); every attempt is recorded (default 3)",
        3,
        "int",
    ),
    Setting(
        "qemu",
        "the nested host's QEMU: patched (default, built on first use), system, or a path",
        "patched",
    ),
    Setting(
        "wait-host",
        "seconds a worker waits for the lease of a host it shares with other workers "
        "(default 3600)",
        3600.0,
        "float",
    ),
)
SHORT_SETTINGS = tuple(s for s in SETTINGS if s.short)


def ini_type(s: Setting) -> Any:
    return {"path": "paths", "list": "args"}.get(s.kind, "string")


def resolve_settings(config: pytest.Config) -> None:
    """Each setting's value into `config.option`: the command line's, else the ini file's,
    else the default; so `config.getoption("xenpvh_host")` is the value in effect."""
    for s in SETTINGS:
        value = getattr(config.option, s.dest, None)
        if value is not None:
            value = _from_command_line(s, value)
        else:
            ini = config.getini(s.dest)
            value = _from_ini(s, ini) if ini not in ("", [], None) else s.default
        setattr(config.option, s.dest, value)


def _from_command_line(s: Setting, value: object) -> object:
    if s.kind == "list" and isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return _typed(s, value) if isinstance(value, str) else value  # resolved already


def _from_ini(s: Setting, value: Any) -> object:
    if s.kind == "list":
        return tuple(str(v) for v in value)
    if s.kind == "path":
        return str(value[0])  # relative to the ini file (pytest's `paths`)
    return _typed(s, value)


def _typed(s: Setting, value: str) -> object:
    try:
        if s.kind == "int":
            return int(value)
        if s.kind == "float":
            return float(value)
    except ValueError:
        raise pytest.UsageError(f"xenpvh_{s.name}: {value!r} is not a number") from None
    return str(value)


@dataclass(frozen=True)
class WorkerHost:
    """The host this pytest process's `xen` tests use, and whether other workers of the
    same run use it too (then each test holds the host's lease)."""

    spec: str
    shared: bool = False


def pick_host(spec: str, pool: Sequence[str], worker: str | None, workers: int) -> WorkerHost:
    """Worker gwN of `workers` takes pool[N mod len(pool)] (no pool: `spec`, shared by every
    worker); it is shared when another worker's N lands on it too."""
    index = int(worker.removeprefix("gw") or 0) if worker else 0
    workers = max(workers, 1)
    if not pool:
        return WorkerHost(spec, shared=worker is not None and workers > 1)
    slot = index % len(pool)
    users = sum(1 for n in range(workers) if n % len(pool) == slot)
    return WorkerHost(pool[slot], shared=users > 1)


def worker_host(config: pytest.Config) -> WorkerHost:
    """The one place that decides which host this process's `xen` tests use (later: the
    lab's reservation of a place)."""
    workerinput = getattr(config, "workerinput", None)  # set by pytest-xdist in a worker
    worker = str(workerinput["workerid"]) if workerinput else None
    workers = int(workerinput.get("workercount", 1)) if workerinput else 1
    return pick_host(config.option.xenpvh_host, config.option.xenpvh_hosts, worker, workers)


__all__ = [
    "SETTINGS",
    "SHORT_SETTINGS",
    "Setting",
    "WorkerHost",
    "ini_type",
    "pick_host",
    "resolve_settings",
    "worker_host",
]
