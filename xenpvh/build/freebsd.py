"""FreeBSD kernels: built natively on a FreeBSD build host over ssh, or cross on Debian.

Native: `make buildkernel` runs on the host (any `Host`: an `SSHHost` to a FreeBSD box), its
output becomes the local build log, and the kernel is fetched back.  Cross: FreeBSD's own
`tools/build/make.py` bootstraps bmake and the build tools on Linux and compiles with Debian's
clang/lld (`clang-14`, `lld-14`).  Both use `FreeBSDRecipe`'s argv, so the two paths build the
same kernel config.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xenpvh.build.recipes import FreeBSDRecipe
from xenpvh.build.runner import BuildFailed, BuildLog, tail_of
from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.base import Host

# A GENERIC buildkernel at -j2 takes about an hour on a small box; give it room.
NATIVE_TIMEOUT = 6 * 3600.0


@dataclass(frozen=True)
class FreeBSDKernel:
    """A built kernel on this machine and the log of its build."""

    kernel: Path
    log: Path
    kernconf: str


def build_freebsd_native(
    host: Host,
    src: str,
    out: Path,
    *,
    recipe: FreeBSDRecipe | None = None,
    fragment: str | None = None,
    timeout: float = NATIVE_TIMEOUT,
) -> FreeBSDKernel:
    """Run `make buildkernel` in `src` on the FreeBSD `host`; fetch the kernel to `out`.

    The log is `out/build.log`.  A failed build raises BuildFailed (blocked) with the log's
    last lines; the host being unreachable is the Host's BrokenError.
    """
    recipe = recipe or FreeBSDRecipe("native")
    if recipe.mode != "native":
        raise BlockedError(f"build_freebsd_native needs a native recipe, not {recipe.mode!r}")
    out.mkdir(parents=True, exist_ok=True)
    use_fragment = fragment is not None
    if fragment is not None:
        rel, text = recipe.fragment_config(fragment)
        # put_bytes is part of the Host protocol; the path is a fixed name under src.
        host.put_bytes(text.encode(), f"{src.rstrip('/')}/{rel}")
    argv = recipe.build_commands(src, fragment=use_fragment)[0]
    log_path = out / "build.log"
    with BuildLog(log_path) as log:
        log.phase(f"buildkernel on {host.name}")
        log.note(f"$ {shlex.join(argv)}    # on {host.name}")
        result = host.run(argv, timeout=timeout)
        # Host.run collects output; it lands in the log in one piece (stdout, then stderr).
        output = result.out + result.err
        log.note(output)
        if not result.ok:
            log.note(f"!!! exit {result.exit_status}")
            raise BuildFailed(
                f"FreeBSD buildkernel on {host.name}",
                log_path,
                tail_of(output),
                result.exit_status,
            )
        remote = recipe.kernel_path(src, fragment=use_fragment)
        kernel = out / "kernel"
        log.note(f"fetching {remote} from {host.name}")
        host.get(remote, kernel)
    return FreeBSDKernel(kernel, log_path, recipe.conf_name(use_fragment))


def is_freebsd_tree(src: Path) -> bool:
    return (src / "sys/amd64/conf/GENERIC").is_file() and (src / "tools/build/make.py").is_file()


def build_freebsd_cross(
    src: Path,
    out: Path,
    *,
    recipe: FreeBSDRecipe | None = None,
    fragment: str | None = None,
    on_line: Callable[[str], None] | None = None,
) -> FreeBSDKernel:
    """Cross-build a FreeBSD/amd64 kernel from the tree `src` on this (Debian) machine.

    Needs Debian's clang-14 and lld-14 (their binaries in /usr/lib/llvm-14/bin).  The kernel
    is copied to `out/kernel`; the log is `out/build.log`.
    """
    src = src.resolve()
    if not is_freebsd_tree(src):
        raise BlockedError(
            f"{src} is not a FreeBSD source tree (no sys/amd64/conf/GENERIC and "
            "tools/build/make.py)"
        )
    recipe = recipe or FreeBSDRecipe("cross")
    if recipe.mode != "cross":
        raise BlockedError(f"build_freebsd_cross needs a cross recipe, not {recipe.mode!r}")
    bindir = Path(recipe.llvm_bindir)
    missing = [t for t in ("clang", "ld.lld") if not (bindir / t).exists()]
    if missing:
        raise BlockedError(
            f"cross-building FreeBSD needs {', '.join(missing)} in {bindir} "
            "(apt-get install clang-14 lld-14)"
        )
    if shutil.which("python3") is None:
        raise BlockedError("cross-building FreeBSD needs python3 (tools/build/make.py)")
    out.mkdir(parents=True, exist_ok=True)
    use_fragment = fragment is not None
    if fragment is not None:
        rel, text = recipe.fragment_config(fragment)
        # FreeBSD finds KERNCONF files in sys/<arch>/conf only: the config goes into the tree.
        (src / rel).write_text(text)
    log_path = out / "build.log"
    with BuildLog(log_path) as log:
        log.phase(f"cross buildkernel of {src}")
        for argv in recipe.build_commands(str(src), fragment=use_fragment):
            log.run(argv, cwd=src, what="FreeBSD cross buildkernel", on_line=on_line)
        built = Path(recipe.kernel_path(str(src), fragment=use_fragment))
        if not built.is_file():
            raise BrokenError(
                f"buildkernel succeeded but left no kernel at {built}; log: {log_path}"
            )
        kernel = out / "kernel"
        shutil.copy2(built, kernel)
        log.note(f"kernel: {built} -> {kernel}")
    return FreeBSDKernel(kernel, log_path, recipe.conf_name(use_fragment))


__all__ = ["FreeBSDKernel", "build_freebsd_cross", "build_freebsd_native", "is_freebsd_tree"]
