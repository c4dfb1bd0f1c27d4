"""The DESTROY state of a boot run: the domain destroyed (when its create was attempted) and
the run's directory and consoled log removed from the host.  Returns the problems as one
description (''when clean); the decider turns a failed destroy into `broken`."""

from __future__ import annotations

from xenpvh.errors import BrokenError, CommandFailed
from xenpvh.host.base import Host
from xenpvh.run.options import RunPlace
from xenpvh.toolstack.base import Toolstack
from xenpvh.toolstack.console import CONSOLED_LOG_DIR


def destroy_run(
    host: Host,
    toolstack: Toolstack,
    place: RunPlace,
    *,
    create_attempted: bool,
    run_dir_made: bool,
) -> str:
    problems: list[str] = []
    if create_attempted:
        try:
            toolstack.destroy(place.domain_name)
        except Exception as e:
            problems.append(f"destroying {place.domain_name} failed: {e}")
            if isinstance(e, BrokenError) and not isinstance(e, CommandFailed):
                return "; ".join(problems)  # the host does not answer: no more waiting
    if run_dir_made:
        try:
            console_log = f"{CONSOLED_LOG_DIR}/guest-{place.domain_name}.log"
            host.run(["rm", "-rf", "--", place.run_dir, console_log], check=True)
        except Exception as e:
            problems.append(f"removing {place.run_dir} failed: {e}")
    return "; ".join(problems)


__all__ = ["destroy_run"]
