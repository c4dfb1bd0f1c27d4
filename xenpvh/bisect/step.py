"""One `git bisect run` step: ask the Bisector that started us to judge HEAD, exit with its
answer (0 good, 1 bad, 125 skip, 128 stop).  Nothing else runs here."""

from __future__ import annotations

import os
import subprocess
import sys
from multiprocessing.connection import Client

from xenpvh.bisect.driver import ABORT, ENV_KEY, ENV_SOCKET


def main() -> int:
    address, key = os.environ.get(ENV_SOCKET), os.environ.get(ENV_KEY)
    if not address or not key:
        print("xenpvh.bisect.step: run by `xenpvh bisect`, not by hand", file=sys.stderr)
        return ABORT
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    try:
        with Client(address, family="AF_UNIX", authkey=bytes.fromhex(key)) as conn:
            conn.send(head)
            code = int(conn.recv())
    except (OSError, EOFError, ValueError) as e:
        print(f"xenpvh.bisect.step: the bisector is gone: {e}", file=sys.stderr)
        return ABORT
    return code


if __name__ == "__main__":
    raise SystemExit(main())
