"""Resolve a tree spec to an exact state, and materialise that state into a work directory.

`resolve(spec)` pins every input without building anything: a git ref becomes the commit it
names (an annotated tag peeled), a local directory becomes a content digest, a Debian source
package becomes an exact version (the newest on the release's mirrors when none was given);
each patch is recorded with its sha256, and the config fragment with its text.  The cache
key is built from that state, so a cache hit costs a `git ls-remote` at most (nothing for a
pinned Debian version).

`fetch(spec, state, dest)` puts exactly that state into `dest` as a git repository whose
single commit is the unpatched source (`commit_base`), ready for `apply_series`:
a shallow fetch of the commit, a shared clone of a local git work tree plus its uncommitted
changes, a copy of a plain directory, or `apt-get source` (private apt configuration) plus
`dpkg-source -x` of the Debian package.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, TextIO

from xenpvh.build.apt import PrivateApt, unpack_source
from xenpvh.build.patching import commit_base, git, head
from xenpvh.build.tree import DebianSource, GitSource, LocalSource, TreeSpec, TreeState
from xenpvh.errors import BlockedError, BrokenError

FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


class _Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...


# git's words for "that repository is not there" (our input) as opposed to network trouble.
_NO_REPO = re.compile(
    r"does not appear to be a git repository|Repository not found|not found|"
    r"No such file or directory|could not read Username",
    re.IGNORECASE,
)


def resolve(
    spec: TreeSpec,
    work: Path | None = None,
    *,
    apt: PrivateApt | None = None,
    log: TextIO | None = None,
) -> TreeState:
    """The exact state `spec` names now; with `work`, also fetch it there (see `fetch`)."""
    source = spec.source
    if isinstance(source, GitSource):
        identity = {"url": source.url, "ref": source.ref or "HEAD", "commit": _git_commit(source)}
    elif isinstance(source, LocalSource):
        identity = _local_identity(source.path)
    elif isinstance(source, DebianSource):
        version = source.version
        if version is None:
            version = (apt or PrivateApt.for_sources()).resolve_source_version(source.package, None)
        identity = {"package": source.package, "version": version}
    else:  # pragma: no cover - the Source union is closed
        raise BlockedError(f"unknown source {source!r}")
    config: str | None = None
    if spec.config_fragment is not None:
        try:
            config = spec.config_fragment.read_text()
        except OSError as exc:
            raise BlockedError(
                f"config fragment {spec.config_fragment} cannot be read: {exc}"
            ) from exc
    state = TreeState(source.kind, identity, tuple(p.record() for p in spec.patches), config)
    if work is not None:
        fetch(spec, state, work, apt=apt, log=log)
    return state


def fetch(
    spec: TreeSpec,
    state: TreeState,
    dest: Path,
    *,
    apt: PrivateApt | None = None,
    log: TextIO | None = None,
) -> str:
    """Materialise `state` (resolved from `spec`) into `dest` (absent or empty) as a git
    repository at its base commit; return that commit id."""
    dest = Path(dest)
    if dest.exists():
        if any(dest.iterdir()):
            raise BrokenError(f"work directory {dest} is not empty")
        dest.rmdir()
    dest.parent.mkdir(parents=True, exist_ok=True)
    source = spec.source
    if source.kind != state.kind:
        raise BrokenError(f"state of kind {state.kind} does not belong to {source.describe()}")
    _say(log, f"== fetching {source.describe()} into {dest}\n")
    if isinstance(source, GitSource):
        return _fetch_git(source, state.identity["commit"], dest, log)
    if isinstance(source, LocalSource):
        return _fetch_local(source.path, state.identity, dest, log)
    assert isinstance(source, DebianSource)
    package, version = state.identity["package"], state.identity["version"]
    dsc = (apt or PrivateApt.for_sources()).download_source(package, version)
    _say(log, f"   {dsc}\n")
    unpack_source(dsc, dest, log=log)
    return commit_base(dest, f"xenpvh base: Debian source {package} {version}")


def _say(log: TextIO | None, text: str) -> None:
    if log is not None:
        log.write(text)


# -- git -------------------------------------------------------------------------------------


def _git_failure(url: str, what: str, output: str) -> Exception:
    tail = " | ".join([ln for ln in output.strip().splitlines() if ln.strip()][-3:])
    if _NO_REPO.search(output):
        return BlockedError(f"git repository {url} cannot be read ({what}): {tail}")
    return BrokenError(f"git {what} from {url} failed: {tail}")


def _git_commit(source: GitSource) -> str:
    """The commit `source.ref` names on the remote (tags peeled), via `git ls-remote`."""
    ref = source.ref
    if ref is not None and FULL_SHA.fullmatch(ref):
        return ref  # a commit id names itself; fetch checks it exists
    proc = git(Path.cwd(), "ls-remote", "--", source.url, check=False)
    if proc.returncode != 0:
        raise _git_failure(source.url, "ls-remote", proc.stderr)
    refs: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        sha, _, name = line.partition("\t")
        refs[name.strip()] = sha.strip()
    if ref is None:
        if "HEAD" not in refs:
            raise BlockedError(f"git repository {source.url} has no HEAD; give a ref")
        return refs["HEAD"]
    for name in (f"refs/tags/{ref}", f"refs/heads/{ref}", ref):
        # An annotated tag is listed twice: the tag object, and `^{}` peeled to its commit.
        if f"{name}^{{}}" in refs:
            return refs[f"{name}^{{}}"]
        if name in refs:
            return refs[name]
    raise BlockedError(f"git repository {source.url} has no ref {ref!r}")


def _fetch_git(source: GitSource, commit: str, dest: Path, log: TextIO | None) -> str:
    dest.mkdir(parents=True)
    git(dest, "init", "-q")
    # Fetch the commit itself, shallow; servers that refuse unadvertised ids get the ref
    # (or everything) instead.  The checkout then pins the resolved commit exactly.
    attempts: list[list[str]] = [["fetch", "-q", "--depth", "1", "--", source.url, commit]]
    if source.ref is not None and not FULL_SHA.fullmatch(source.ref):
        attempts.append(["fetch", "-q", "--depth", "1", "--", source.url, source.ref])
    attempts.append(["fetch", "-q", "--tags", "--", source.url, "+refs/heads/*:refs/src/*"])
    output = ""
    for argv in attempts:
        proc = git(dest, *argv, check=False)
        output = proc.stderr
        _say(log, proc.stdout + proc.stderr)
        if proc.returncode == 0 and git(dest, "cat-file", "-e", f"{commit}^{{commit}}",
                                        check=False).returncode == 0:  # fmt: skip
            break
    else:
        if FULL_SHA.fullmatch(source.ref or ""):
            raise BlockedError(f"git repository {source.url} has no commit {commit}")
        raise _git_failure(source.url, f"fetch of {commit}", output)
    git(dest, "checkout", "-q", "--detach", commit)
    return head(dest)


# -- local directories -----------------------------------------------------------------------


def _is_git_top(path: Path) -> bool:
    if not (path / ".git").exists():
        return False
    proc = git(path, "rev-parse", "--show-toplevel", "--verify", "HEAD", check=False)
    lines = proc.stdout.splitlines()
    return proc.returncode == 0 and bool(lines) and Path(lines[0]).resolve() == path.resolve()


def _local_identity(path: Path) -> dict[str, str]:
    if not path.is_dir():
        raise BlockedError(f"source tree {path} does not exist")
    if _is_git_top(path):
        commit = git(path, "rev-parse", "HEAD").stdout.strip()
        digest = _worktree_digest(path, commit)
        return {"path": str(path), "commit": commit, "content": digest}
    return {"path": str(path), "content": _tree_digest(path, None)}


def _worktree_changes(path: Path) -> tuple[bytes, list[str]]:
    """Uncommitted changes of a work tree: the binary diff against HEAD (staged and not),
    and the untracked, not ignored files."""
    diff = _git_bytes(path, "diff", "--binary", "--no-ext-diff", "--no-color", "HEAD")
    listed = _git_bytes(path, "ls-files", "-z", "--others", "--exclude-standard")
    untracked = sorted(name for name in listed.decode().split("\0") if name)
    return diff, untracked


def _git_bytes(path: Path, *args: str) -> bytes:
    proc = subprocess.run(
        ["git", "-c", "core.quotePath=false", *args],
        cwd=path,
        capture_output=True,
        env={**os.environ, "LC_ALL": "C"},
    )
    if proc.returncode != 0:
        raise BrokenError(f"git {' '.join(args)} in {path} failed: {proc.stderr.decode()[-300:]}")
    return proc.stdout


def _worktree_digest(path: Path, commit: str) -> str:
    diff, untracked = _worktree_changes(path)
    h = hashlib.sha256(b"git-worktree\0" + commit.encode() + b"\0")
    h.update(hashlib.sha256(diff).digest())
    for name in untracked:
        _hash_entry(h, name, path / name)
    return h.hexdigest()


def _walk(root: Path) -> Iterator[tuple[str, Path]]:
    """Every entry under `root` but .git, in a stable order, as (relative path, path)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        here = Path(dirpath)
        rel_dir = here.relative_to(root)
        for name in sorted([*filenames, *(d for d in dirnames if (here / d).is_symlink())]):
            yield (rel_dir / name).as_posix(), here / name
        for d in dirnames:
            if not (here / d).is_symlink() and not any((here / d).iterdir()):
                yield (rel_dir / d).as_posix() + "/", here / d


def _hash_entry(h: _Hasher, rel: str, path: Path, copy_to: Path | None = None) -> None:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        h.update(f"L\0{rel}\0{target}\0".encode())
        if copy_to is not None:
            copy_to.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, copy_to)
    elif stat.S_ISDIR(st.st_mode):
        h.update(f"D\0{rel}\0".encode())
        if copy_to is not None:
            copy_to.mkdir(parents=True, exist_ok=True)
    elif stat.S_ISREG(st.st_mode):
        executable = "x" if st.st_mode & stat.S_IXUSR else "-"
        data = path.read_bytes()
        h.update(f"F\0{rel}\0{executable}\0{len(data)}\0".encode())
        h.update(hashlib.sha256(data).digest())
        if copy_to is not None:
            copy_to.parent.mkdir(parents=True, exist_ok=True)
            copy_to.write_bytes(data)
            os.chmod(copy_to, stat.S_IMODE(st.st_mode))
    # Sockets, fifos and devices are not source; they are neither hashed nor copied.


def _tree_digest(root: Path, copy_to: Path | None) -> str:
    """The content digest of a plain directory (paths, contents, exec bits, links); with
    `copy_to`, copy what was hashed there in the same pass (so the copy is what the digest
    describes, even if the tree changes meanwhile)."""
    h = hashlib.sha256(b"tree\0")
    for rel, path in _walk(root):
        _hash_entry(h, rel, path, None if copy_to is None else copy_to / rel.rstrip("/"))
    return h.hexdigest()


def _fetch_local(path: Path, identity: dict[str, str], dest: Path, log: TextIO | None) -> str:
    if "commit" in identity:
        return _fetch_worktree(path, identity, dest, log)
    dest.mkdir(parents=True)
    digest = _tree_digest(path, dest)
    if digest != identity["content"]:
        shutil.rmtree(dest, ignore_errors=True)
        raise BlockedError(f"source tree {path} changed after it was resolved; run again")
    return commit_base(dest, f"xenpvh base: local tree {path}")


def _fetch_worktree(path: Path, identity: dict[str, str], dest: Path, log: TextIO | None) -> str:
    """A shared clone at the work tree's commit plus its uncommitted changes, committed."""
    commit = identity["commit"]
    proc = git(path.parent, "clone", "-q", "--shared", "--no-checkout", "--", str(path),
               str(dest), check=False)  # fmt: skip
    if proc.returncode != 0:
        raise BrokenError(f"cannot clone the local work tree {path}: {proc.stderr.strip()}")
    git(dest, "checkout", "-q", "--detach", commit)
    diff, untracked = _worktree_changes(path)
    h = hashlib.sha256(b"git-worktree\0" + commit.encode() + b"\0")
    h.update(hashlib.sha256(diff).digest())
    for name in untracked:
        _hash_entry(h, name, path / name, dest / name)
    if h.hexdigest() != identity["content"]:
        shutil.rmtree(dest, ignore_errors=True)
        raise BlockedError(f"source tree {path} changed after it was resolved; run again")
    if diff:
        patch_file = dest / ".git" / "xenpvh-local-changes.diff"
        patch_file.write_bytes(diff)
        git(dest, "apply", "--binary", "--whitespace=nowarn", str(patch_file))
        patch_file.unlink()
    if diff or untracked:
        _say(log, f"   with uncommitted changes of {path} ({len(untracked)} untracked files)\n")
        return commit_base(dest, f"xenpvh base: uncommitted changes of {path}")
    return head(dest)


__all__ = ["fetch", "resolve"]
