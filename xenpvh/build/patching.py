"""Apply a patch series to a work tree, one commit per patch.

mbox / `git format-patch` mails go through `git am` (their author and message are kept);
plain and DEP-3 diffs go through `patch -pN` and are then committed under the patch's
name.  The work tree is a git repository whose first commit is the unpatched source
(`commit_base`), so every applied patch is a commit the manifest can name, and a failed
patch leaves the tree at its last good commit.

A patch that does not apply is our input being wrong: `PatchFailed` (blocked) names the
patch file, its place in the series, the file it targets and the failing hunk's text.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

from xenpvh.build.tree import Patch
from xenpvh.errors import BlockedError, BrokenError, CommandFailed

# Fixed dates make the base and quilt commits (and so the recorded applied-commit ids)
# the same on every machine for the same source and series.
FIXED_DATE = "2000-01-01T00:00:00+0000"
IDENTITY = ("-c", "user.name=xenpvh", "-c", "user.email=xenpvh@localhost")
# Keep a user's global git config from changing what we commit or running code in our
# throw-away work trees (signing, hooks, background gc, CRLF conversion).
SAFE_CONFIG = (
    "-c", "commit.gpgSign=false",
    "-c", "tag.gpgSign=false",
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.autocrlf=false",
    "-c", "gc.auto=0",
    "-c", "am.threeWay=false",
)  # fmt: skip

HUNK_HEADER = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class PatchFailed(BlockedError):
    """A patch of the series does not apply: names the patch file, its index (1-based) in
    the series, the target file and the failing hunk when they can be told."""

    def __init__(
        self,
        patch: Path,
        index: int,
        target: str | None,
        *,
        hunk: str | None = None,
        hunk_number: int | None = None,
        line: int | None = None,
        reason: str = "",
        output: str = "",
    ) -> None:
        self.patch = patch
        self.index = index
        self.target = target
        self.hunk = hunk
        self.hunk_number = hunk_number
        self.line = line
        self.reason = reason
        self.output = output
        text = f"patch {index} {patch} does not apply"
        if target:
            text += f" to {target}"
        detail = []
        if hunk_number is not None:
            detail.append(f"hunk #{hunk_number} FAILED" + (f" at line {line}" if line else ""))
        elif line is not None:
            detail.append(f"failed at line {line}")
        if reason:
            detail.append(reason)
        if detail:
            text += " (" + "; ".join(detail) + ")"
        if hunk:
            text += ":\n" + hunk
        elif output:
            tail = [ln for ln in output.strip().splitlines() if ln.strip()][-5:]
            text += ": " + " | ".join(tail)
        super().__init__(text)


def git(
    cwd: Path,
    *args: str,
    check: bool = True,
    env: dict[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run git in `cwd` with a fixed identity, C locale (its messages are parsed) and no
    hooks or signing; raise CommandFailed (broken) when `check` and it fails."""
    full_env = {**os.environ, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0", **(env or {})}
    argv = ["git", *IDENTITY, *SAFE_CONFIG, *args]
    try:
        proc = subprocess.run(
            argv, cwd=cwd, env=full_env, input=input, capture_output=True, text=True
        )
    except FileNotFoundError as exc:
        raise BrokenError(f"git is not installed: {exc}") from exc
    if check and proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, proc.stderr or proc.stdout)
    return proc


def _fixed_dates() -> dict[str, str]:
    return {"GIT_AUTHOR_DATE": FIXED_DATE, "GIT_COMMITTER_DATE": FIXED_DATE}


def commit_base(tree: Path, message: str) -> str:
    """Make `tree` a git repository (if it is not one) and commit everything in it, ignored
    files included (the commit is the source exactly as fetched); return the commit id."""
    if not (tree / ".git").exists():
        git(tree, "init", "-q")
    git(tree, "add", "-A", "-f", ".")
    git(tree, "commit", "-q", "--no-verify", "--allow-empty", "-m", message, env=_fixed_dates())
    return head(tree)


def head(tree: Path) -> str:
    return git(tree, "rev-parse", "HEAD").stdout.strip()


def apply_series(
    tree: Path, patches: Sequence[Patch] | Iterable[Patch], *, log: TextIO | None = None
) -> list[str]:
    """Apply `patches` in order on top of HEAD of the git work tree `tree`, one commit per
    patch (a multi-mail mbox gives one per mail); return the new commit ids in order.

    Raises PatchFailed for the first patch that does not apply; the tree is then back at
    the last good commit, clean.  `log` receives each tool's output as it is applied.
    """
    start = head(tree)
    for index, patch in enumerate(patches, 1):
        if not patch.path.is_file():
            raise BlockedError(f"patch {index} {patch.path} does not exist")
        if log is not None:
            log.write(f"== applying patch {index}: {patch.path} ({patch.method})\n")
        if patch.method == "git-am":
            _git_am(tree, patch, index, log)
        else:
            _patch_and_commit(tree, patch, index, log)
    listed = git(tree, "rev-list", "--reverse", f"{start}..HEAD").stdout.split()
    return listed


def _git_am(tree: Path, patch: Patch, index: int, log: TextIO | None) -> None:
    proc = git(
        tree,
        "am",
        "-q",
        "--no-3way",
        "--keep-cr",
        "--whitespace=nowarn",
        "--committer-date-is-author-date",
        f"-p{patch.strip}",
        "--",
        str(patch.path),
        check=False,
    )
    output = proc.stdout + proc.stderr
    if log is not None:
        log.write(output)
    if proc.returncode == 0:
        return
    # Put the tree back at the last good commit before reporting.
    git(tree, "am", "--abort", check=False)
    if (tree / ".git/rebase-apply").exists():
        git(tree, "reset", "-q", "--hard", "HEAD")
    raise _git_am_failure(patch, index, output)


def _git_am_failure(patch: Patch, index: int, output: str) -> PatchFailed:
    text = _read(patch.path)
    failed = re.search(r"^error: patch failed: (.+):(\d+)$", output, re.MULTILINE)
    if failed:
        target, line = failed.group(1), int(failed.group(2))
        hunk, number = _hunk_and_number(text, target, line=line)
        return PatchFailed(
            patch.path, index, target, hunk=hunk, hunk_number=number, line=line, output=output
        )
    missing = re.search(
        r"^error: (.+?): (does not exist in index|No such file or directory)$",
        output,
        re.MULTILINE,
    )
    if missing:
        target = missing.group(1)
        return PatchFailed(
            patch.path, index, target, reason=f"{target} does not exist in the tree", output=output
        )
    exists = re.search(r"^error: (.+?): already exists in (?:index|working directory)$", output,
                       re.MULTILINE)  # fmt: skip
    if exists:
        target = exists.group(1)
        return PatchFailed(
            patch.path, index, target, reason=f"{target} already exists", output=output
        )
    if "Patch is empty" in output or "does not look like" in output:
        return PatchFailed(patch.path, index, None, reason="not a patch mail", output=output)
    return PatchFailed(patch.path, index, None, output=output)


def _patch_and_commit(tree: Path, patch: Patch, index: int, log: TextIO | None) -> None:
    # Dry run first: patch(1) applies the hunks that fit and skips the rest, so a failing
    # patch would otherwise leave the tree half-patched.  patch's default fuzz stays (as
    # with `quilt push`): hand-written hunks with uneven context need it; "with fuzz"
    # lands in the log.
    base = [
        "patch",
        f"-p{patch.strip}",
        "--batch",
        "--forward",
        "--no-backup-if-mismatch",
        "--reject-file=-",
        "-i",
        str(patch.path),
    ]
    for argv in ([*base, "--dry-run"], base):
        proc = _run(argv, tree)
        if log is not None:
            log.write(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            if "--dry-run" not in argv:
                git(tree, "reset", "-q", "--hard", "HEAD")
                git(tree, "clean", "-q", "-fd")
            raise _patch_failure(patch, index, proc.stdout + proc.stderr)
    git(tree, "add", "-A", "-f", ".")
    git(
        tree,
        "commit",
        "-q",
        "--no-verify",
        "--allow-empty",
        "-m",
        f"Apply {patch.name}\n\nApplied by xenpvh with patch -p{patch.strip}.",
        env=_fixed_dates(),
    )


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"}
        )
    except FileNotFoundError as exc:
        raise BrokenError(f"{argv[0]} is not installed: {exc}") from exc


def _patch_failure(patch: Patch, index: int, output: str) -> PatchFailed:
    text = _read(patch.path)
    target: str | None = None
    for line in output.splitlines():
        m = re.match(r"(?:checking|patching) file (.+)$", line)
        if m:
            target = _unquote(m.group(1))
            continue
        m = re.match(r"Hunk #(\d+) FAILED at (\d+)", line)
        if m and target:
            number, at = int(m.group(1)), int(m.group(2))
            hunk = find_hunk(text, target, number=number, strip=patch.strip)
            return PatchFailed(
                patch.path, index, target, hunk=hunk, hunk_number=number, line=at, output=output
            )
    if "can't find file to patch" in output:
        m = re.search(r"^\|\+\+\+ (\S+)", output, re.MULTILINE) or re.search(
            r"^\|--- (\S+)", output, re.MULTILINE
        )
        missing = _strip(m.group(1), patch.strip) if m else None
        return PatchFailed(
            patch.path,
            index,
            missing,
            reason=f"{missing or 'its target'} does not exist in the tree",
            output=output,
        )
    if "Reversed (or previously applied) patch detected" in output:
        return PatchFailed(
            patch.path, index, target, reason="already applied (or reversed)", output=output
        )
    if "Only garbage was found" in output:
        return PatchFailed(patch.path, index, None, reason="not a patch", output=output)
    return PatchFailed(patch.path, index, target, output=output)


def _unquote(name: str) -> str:
    # patch(1) quotes names with spaces or special characters: 'a b.c' or "a\tb".
    if len(name) >= 2 and name[0] == name[-1] and name[0] in "'\"":
        return name[1:-1]
    return name


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8", "replace")


def _strip(path: str, level: int) -> str:
    parts = path.split("/")
    return "/".join(parts[level:]) if level < len(parts) else parts[-1]


def _file_sections(text: str) -> list[tuple[list[str], list[str]]]:
    """Split a diff into (paths, lines) per file: the ---/+++ names and the lines after."""
    lines = text.splitlines()
    sections: list[tuple[list[str], list[str]]] = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            names = [lines[i][4:].split("\t")[0].strip(), lines[i + 1][4:].split("\t")[0].strip()]
            sections.append((names, []))
            i += 2
            continue
        if sections:
            sections[-1][1].append(lines[i])
        i += 1
    return sections


def _hunks(body: list[str]) -> list[tuple[int, int, str]]:
    """(old start, old length, text) of each hunk; a hunk ends when its line counts are
    used up, so a mail's '-- ' signature is never taken for a removed line."""
    hunks: list[tuple[int, int, str]] = []
    i = 0
    while i < len(body):
        m = HUNK_HEADER.match(body[i])
        if not m:
            i += 1
            continue
        old_start = int(m.group(1))
        old_len = int(m.group(2)) if m.group(2) is not None else 1
        new_len = int(m.group(4)) if m.group(4) is not None else 1
        taken = [body[i]]
        old_left, new_left = old_len, new_len
        i += 1
        while i < len(body) and (old_left > 0 or new_left > 0):
            line = body[i]
            if line.startswith("\\"):
                taken.append(line)
            elif line.startswith("-"):
                old_left -= 1
                taken.append(line)
            elif line.startswith("+"):
                new_left -= 1
                taken.append(line)
            elif line.startswith(" ") or line == "":
                old_left -= 1
                new_left -= 1
                taken.append(line if line else " ")
            else:
                break
            i += 1
        if i < len(body) and body[i].startswith("\\"):
            taken.append(body[i])
            i += 1
        hunks.append((old_start, old_len, "\n".join(taken)))
    return hunks


def _matches(names: list[str], target: str, strip: int | None) -> bool:
    for name in names:
        if name == "/dev/null":
            continue
        levels = [strip] if strip is not None else [0, 1, 2]
        if any(_strip(name, lv) == target for lv in levels):
            return True
    return False


def find_hunk(
    text: str,
    target: str,
    *,
    line: int | None = None,
    number: int | None = None,
    strip: int | None = None,
) -> str | None:
    """The text of a hunk for file `target` in the diff `text`: the `number`-th (1-based)
    hunk for that file, or the hunk whose old range starts at (else covers) `line`."""
    found, _ = _find(text, target, line=line, number=number, strip=strip)
    return found


def _hunk_and_number(text: str, target: str, *, line: int) -> tuple[str | None, int | None]:
    return _find(text, target, line=line, number=None, strip=None)


def _find(
    text: str, target: str, *, line: int | None, number: int | None, strip: int | None
) -> tuple[str | None, int | None]:
    for names, body in _file_sections(text):
        if not _matches(names, target, strip):
            continue
        hunks = _hunks(body)
        if number is not None:
            if 1 <= number <= len(hunks):
                return hunks[number - 1][2], number
            continue
        if line is not None:
            for n, (start, _length, hunk) in enumerate(hunks, 1):
                if start == line:
                    return hunk, n
            for n, (start, length, hunk) in enumerate(hunks, 1):
                if start <= line < start + max(length, 1):
                    return hunk, n
    return None, None


__all__ = ["PatchFailed", "apply_series", "commit_base", "find_hunk", "git", "head"]
