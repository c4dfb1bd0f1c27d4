"""The OpenSSH client configuration (~/.ssh/config), read by paramiko's `SSHConfig`.

One reader for every caller: `ssh_target` resolves a `--host` spec through it, the plan's
pool lists its concrete `Host` aliases.
"""

from __future__ import annotations

from pathlib import Path

import paramiko

from xenpvh.errors import BlockedError

DEFAULT_SSH_CONFIG = Path("~/.ssh/config")


def load_ssh_config(path: Path | None = None) -> paramiko.SSHConfig | None:
    """The OpenSSH client configuration at `path` (must exist), else ~/.ssh/config when
    there is one; None when there is none."""
    explicit = path is not None
    p = Path(path if path is not None else DEFAULT_SSH_CONFIG).expanduser()
    if not p.is_file():
        if explicit:
            raise BlockedError(f"ssh config {p} does not exist")
        return None
    try:
        return paramiko.SSHConfig.from_path(str(p))
    except OSError as e:
        raise BlockedError(f"ssh config {p}: cannot read: {e}") from e
    except paramiko.ssh_exception.ConfigParseError as e:
        raise BlockedError(f"ssh config {p}: {e}") from e


def host_aliases(config: paramiko.SSHConfig, where: Path | str = "ssh config") -> list[str]:
    """Every concrete `Host` name of the config, sorted: no pattern (`*`, `?`) and no
    negation (`!name`), which name no one host."""
    try:
        names = config.get_hostnames()
    except KeyError as e:
        # paramiko (5.x) cannot list a config with `Match` blocks (it looks up "host" in
        # every entry); it still resolves names through them.
        raise BlockedError(
            f"{where}: has Match blocks, whose Host names paramiko cannot list; "
            "name the hosts in --hosts instead"
        ) from e
    return sorted(n for n in names if not any(c in n for c in "*?!"))


__all__ = ["DEFAULT_SSH_CONFIG", "host_aliases", "load_ssh_config"]
