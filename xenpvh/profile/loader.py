"""Load guest profiles from TOML (`guestcfg/*.toml`) into frozen `Profile` data.

Every error names the file and the offending key (a `ProfileError`, i.e. verdict `blocked`):
a typo in a profile must never silently weaken a check.

The TOML shape (see `xenpvh.profile.model` for what the checker does with it):

    name, description, [meta], [domain]
    [[stages]]            # in the OS's real boot order: host stages first, then the five
      name, deadline      # guest stages in any order (FreeBSD: xenbus before ap-launch)
      required, optional, ap_ids, cpu_count, cpu_count_completes, disk_devices, vif_devices
      disk_evidence = "console" | "xenstore"   # default "console"; "xenstore" needs an
      vif_evidence  = "console" | "xenstore"   # empty disk_devices / vif_devices list
    [[forbidden]]         # fails the run
      name, pattern, stage = "<a stage of this profile>"   # stage optional: the one indicted
    [[blame]]             # names the stage of a forbidden line without one; never fails alone
      name, pattern, stage                                 # stage required
    blame_lines = N       # top level: lines after the forbidden line searched (0..200)
    [[notice]]            # recorded in the verdict's meta.notices, never decides
      name, pattern
    [[blocked]]           # the guest cannot run its test here (XTF's SKIP): verdict blocked
      name, pattern
    stage_set = "os" | "custom"   # default "os": the five guest stages are required;
                                  # "custom": the profile's own ordered stage names
    device_checks = ["vbd", "vif", "console-tty"]   # default all: what XenStore must show

A pattern is a TOML string (the regex, also its name) or a table with `pattern` and `name`.
"""

from __future__ import annotations

import os
import re
import re._parser as sre_parse  # only to derive prefilter literals; falls back when it fails
import tomllib
from pathlib import Path
from typing import Any

from xenpvh.errors import ProfileError
from xenpvh.profile.bounds import MAX_CMDLINE, MAX_MEMORY_MB, MAX_VCPUS
from xenpvh.profile.domain import DiskSpec, DomainSpec, VifSpec
from xenpvh.profile.model import (
    BLAME_LINES_MAX,
    DEVICE_CHECKS,
    DEVICE_EVIDENCE,
    EVIDENCE_XENSTORE,
    GUEST_STAGES,
    HOST_STAGES,
    STAGE_ORDER,
    STAGE_SET_CUSTOM,
    STAGE_SETS,
    Pattern,
    Profile,
    StageSpec,
)
from xenpvh.profile.regex import PatternError, compile_console_pattern

ENV_DIR = "XENPVH_GUESTCFG"
# Bounds on what a profile may ask for (named in the error when exceeded): far above any
# real profile, far below what would stall the loader or the host.
MAX_PROFILE_BYTES = 1024 * 1024
MAX_DEADLINE = 24 * 3600.0  # seconds, per stage
_CUSTOM_STAGE = re.compile(r"[a-z][a-z0-9-]{0,31}")

_TOP_KEYS = {
    "name",
    "description",
    "domain",
    "stages",
    "forbidden",
    "blame",
    "blame_lines",
    "notice",
    "blocked",
    "stage_set",
    "device_checks",
    "meta",
}
_DOMAIN_KEYS = {
    "kernel",
    "ramdisk",
    "cmdline",
    "memory_mb",
    "vcpus",
    "disks",
    "vifs",
    "on_crash",
    "on_poweroff",
    "on_reboot",
    "mode",
    "extra",
}
_DISK_KEYS = {"vdev", "target", "format", "access", "size_mb", "fs"}
_VIF_KEYS = {"bridge", "mac"}
_STAGE_KEYS = {
    "name",
    "deadline",
    "required",
    "optional",
    "ap_ids",
    "cpu_count",
    "cpu_count_completes",
    "disk_devices",
    "vif_devices",
    "disk_evidence",
    "vif_evidence",
}
_PATTERN_KEYS = {"name", "pattern"}
_STAGED_KEYS = _PATTERN_KEYS | {"stage"}
_MODES = {"pvh", "pvhv1"}
_ACTIONS = {"destroy", "restart", "preserve", "coredump-destroy", "coredump-restart"}
# Named groups the checker reads from the counting pattern lists.
_GROUPS = {"ap_ids": "ids", "cpu_count": "n", "disk_devices": "dev", "vif_devices": "dev"}


def guestcfg_dir() -> Path:
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "guestcfg"


def load_profile(name_or_path: str | os.PathLike[str]) -> Profile:
    """Load a profile by name (looked up in the guestcfg dir) or by path to a .toml file."""
    text = os.fspath(name_or_path)
    p = Path(text)
    if text.endswith(".toml") or os.sep in text or "/" in text:
        path = p
    else:
        path = guestcfg_dir() / f"{text}.toml"
    if not path.is_file():
        known = ", ".join(sorted(q.stem for q in guestcfg_dir().glob("*.toml"))) or "none"
        raise ProfileError(f"profile {text!r} not found (looked for {path}; known: {known})")
    data = _read_toml(path)
    return parse_profile(data, path)


def _read_toml(path: Path) -> dict[str, Any]:
    """The file's TOML table; a ProfileError (one line, naming the file) for anything that
    is not a reasonably sized UTF-8 TOML text: binary files, other encodings, huge files."""
    try:
        size = path.stat().st_size
        if size > MAX_PROFILE_BYTES:
            raise ProfileError(
                f"{path}: {size} bytes; a profile may have at most {MAX_PROFILE_BYTES}"
            )
        raw = path.read_bytes()
    except OSError as e:
        raise ProfileError(f"{path}: cannot read: {e.strerror or e}") from e
    if b"\0" in raw:
        raise ProfileError(f"{path}: a binary file (NUL byte at offset {raw.index(0)}), not TOML")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProfileError(
            f"{path}: not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); TOML files "
            "are UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{path}: invalid TOML: {e}") from e
    except RecursionError:
        raise ProfileError(f"{path}: invalid TOML: nested too deeply") from None


def list_profiles() -> list[Profile]:
    """Every profile in the guestcfg dir, sorted by name."""
    return [load_profile(str(p)) for p in sorted(guestcfg_dir().glob("*.toml"))]


# --------------------------------------------------------------------------- parsing


class _Ctx:
    """The file being parsed, so every error names it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def err(self, key: str, msg: str) -> ProfileError:
        return ProfileError(f"{self.path}: {key}: {msg}")

    def table(self, value: object, key: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.err(key, f"must be a table, got {type(value).__name__}")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.err(
                f"{key}.{unknown[0]}" if key else unknown[0],
                f"unknown key (allowed: {', '.join(sorted(allowed))})",
            )
        return value

    def typed(self, value: object, key: str, kind: type | tuple[type, ...]) -> Any:
        # bool is an int in Python; a `true` where a number belongs is a typo, not a 1.
        if isinstance(value, bool) and kind is not bool and bool not in _tuple(kind):
            raise self.err(key, f"must be {_kind_name(kind)}, got bool")
        if not isinstance(value, kind):
            raise self.err(key, f"must be {_kind_name(kind)}, got {type(value).__name__}")
        return value


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in _tuple(kind))


def parse_profile(data: dict[str, Any], path: Path) -> Profile:
    ctx = _Ctx(path)
    ctx.table(data, "", _TOP_KEYS)
    name = ctx.typed(data.get("name", path.stem), "name", str)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ctx.err("name", f"{name!r} is not a valid profile name")
    description = ctx.typed(data.get("description", ""), "description", str)
    meta_raw = ctx.table(data.get("meta", {}), "meta", set(data.get("meta", {}) or {}))
    meta = {k: str(ctx.typed(v, f"meta.{k}", (str, int, float))) for k, v in meta_raw.items()}
    defaults = _parse_domain(ctx, data.get("domain", {}), name)
    if "stages" not in data:
        raise ctx.err("stages", "missing (a profile needs [[stages]] tables)")
    stages_raw = ctx.typed(data["stages"], "stages", list)
    stages = tuple(_parse_stage(ctx, s, i) for i, s in enumerate(stages_raw))
    stage_set = ctx.typed(data.get("stage_set", "os"), "stage_set", str)
    if stage_set not in STAGE_SETS:
        raise ctx.err("stage_set", f"{stage_set!r}: expected one of {', '.join(STAGE_SETS)}")
    _check_stage_set(ctx, stages, custom=stage_set == STAGE_SET_CUSTOM)
    checks = ctx.typed(data.get("device_checks", list(DEVICE_CHECKS)), "device_checks", list)
    for c in checks:
        if c not in DEVICE_CHECKS:
            raise ctx.err("device_checks", f"{c!r}: known checks are {', '.join(DEVICE_CHECKS)}")
    names = tuple(s.name for s in stages)
    forbidden = tuple(
        _parse_pattern(ctx, p, f"forbidden[{i}]", None, stages=names)
        for i, p in enumerate(ctx.typed(data.get("forbidden", []), "forbidden", list))
    )
    blame = tuple(
        _parse_pattern(ctx, p, f"blame[{i}]", None, stages=names, stage_required=True)
        for i, p in enumerate(ctx.typed(data.get("blame", []), "blame", list))
    )
    blame_lines = ctx.typed(data.get("blame_lines", 0), "blame_lines", int)
    if not 0 <= blame_lines <= BLAME_LINES_MAX:
        raise ctx.err("blame_lines", f"must be 0..{BLAME_LINES_MAX}, got {blame_lines}")
    notices = tuple(
        _parse_pattern(ctx, p, f"notice[{i}]", None)
        for i, p in enumerate(ctx.typed(data.get("notice", []), "notice", list))
    )
    blocked = tuple(
        _parse_pattern(ctx, p, f"blocked[{i}]", None)
        for i, p in enumerate(ctx.typed(data.get("blocked", []), "blocked", list))
    )
    return Profile(
        blocked=blocked,
        stage_set=stage_set,
        device_checks=tuple(dict.fromkeys(checks)),
        name=name,
        description=description,
        path=path,
        defaults=defaults,
        stages=stages,
        forbidden=forbidden,
        blame=blame,
        blame_lines=blame_lines,
        notices=notices,
        meta=meta,
    )


def _check_stage_set(ctx: _Ctx, stages: tuple[StageSpec, ...], *, custom: bool = False) -> None:
    names = [s.name for s in stages]
    for n in names:
        if custom:
            if not _CUSTOM_STAGE.fullmatch(n):
                raise ctx.err("stages.name", f"{n!r}: a stage name is [a-z][a-z0-9-]{{0,31}}")
        elif n not in STAGE_ORDER:
            raise ctx.err(
                "stages.name",
                f"unknown stage {n!r} (known: {', '.join(STAGE_ORDER)}; a profile with "
                'stage_set = "custom" names its own)',
            )
    if len(set(names)) != len(names):
        raise ctx.err("stages.name", f"duplicate stage in {names}")
    if custom and not names:
        raise ctx.err("stages", "a custom stage set needs at least one stage")
    missing = [g for g in GUEST_STAGES if g not in names]
    if missing and not custom:
        raise ctx.err(
            "stages",
            f"missing stage(s): {', '.join(missing)} (an OS guest has all five; a profile "
            'whose guest has others declares stage_set = "custom")',
        )
    # Host stages run before the guest exists, in their fixed order; guest stages follow in
    # the OS's own order (the profile's order is the order the checker completes them in).
    host = [n for n in names if n in HOST_STAGES]
    if names[: len(host)] != sorted(host, key=HOST_STAGES.index):
        raise ctx.err(
            "stages",
            f"stages out of order: {names} (host stages {', '.join(HOST_STAGES)} come first, "
            "in that order)",
        )


def _parse_domain(ctx: _Ctx, raw: object, profile: str) -> DomainSpec:
    d = ctx.table(raw, "domain", _DOMAIN_KEYS)

    def get(key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        return ctx.typed(d[key], f"domain.{key}", kind) if key in d else default

    mode = get("mode", str, "pvh")
    if mode not in _MODES:
        raise ctx.err("domain.mode", f"{mode!r} is not one of {sorted(_MODES)}")
    actions = {}
    for key in ("on_crash", "on_poweroff", "on_reboot"):
        actions[key] = get(key, str, "destroy")
        if actions[key] not in _ACTIONS:
            raise ctx.err(f"domain.{key}", f"{actions[key]!r} is not one of {sorted(_ACTIONS)}")
    disks = tuple(
        _parse_disk(ctx, x, f"domain.disks[{i}]") for i, x in enumerate(get("disks", list, []))
    )
    vifs = tuple(
        _parse_vif(ctx, x, f"domain.vifs[{i}]") for i, x in enumerate(get("vifs", list, []))
    )
    extra_raw = get("extra", dict, {})
    extra = {k: ctx.typed(v, f"domain.extra.{k}", str) for k, v in extra_raw.items()}
    vcpus = get("vcpus", int, 1)
    memory = get("memory_mb", int, 256)
    if not 1 <= vcpus <= MAX_VCPUS:
        raise ctx.err("domain.vcpus", f"must be 1-{MAX_VCPUS}, got {vcpus}")
    if not 32 <= memory <= MAX_MEMORY_MB:
        raise ctx.err("domain.memory_mb", f"must be 32-{MAX_MEMORY_MB} MiB, got {memory}")
    cmdline = get("cmdline", str, "")
    if len(cmdline) > MAX_CMDLINE:
        raise ctx.err("domain.cmdline", f"{len(cmdline)} characters; at most {MAX_CMDLINE}")
    return DomainSpec(
        name=f"xenpvh-{profile}",
        kernel=get("kernel", str, ""),
        cmdline=cmdline,
        ramdisk=get("ramdisk", str, None),
        memory_mb=memory,
        vcpus=vcpus,
        disks=disks,
        vifs=vifs,
        mode=mode,
        extra=extra,
        **actions,
    )


def _parse_disk(ctx: _Ctx, raw: object, key: str) -> DiskSpec:
    d = ctx.table(raw, key, _DISK_KEYS)
    kinds: dict[str, type | tuple[type, ...]] = {
        "vdev": str,
        "target": str,
        "format": str,
        "access": str,
        "size_mb": int,
        "fs": str,
    }
    vals = {k: ctx.typed(v, f"{key}.{k}", kinds[k]) for k, v in d.items()}
    if "size_mb" in vals and vals["size_mb"] < 1:
        raise ctx.err(f"{key}.size_mb", f"must be >= 1, got {vals['size_mb']}")
    if not vals.get("target") and "size_mb" not in vals:
        raise ctx.err(key, "needs a target (backing file) or size_mb (scratch disk)")
    return DiskSpec(**vals)


def _parse_vif(ctx: _Ctx, raw: object, key: str) -> VifSpec:
    d = ctx.table(raw, key, _VIF_KEYS)
    return VifSpec(**{k: ctx.typed(v, f"{key}.{k}", str) for k, v in d.items()})


def _parse_stage(ctx: _Ctx, raw: object, i: int) -> StageSpec:
    key = f"stages[{i}]"
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        key = f"stages[{i}] ({raw['name']})"  # name the stage in every message
    d = ctx.table(raw, key, _STAGE_KEYS)
    if "name" not in d:
        raise ctx.err(f"{key}.name", "missing")
    name = ctx.typed(d["name"], f"{key}.name", str)
    if "deadline" not in d:
        raise ctx.err(f"{key}.deadline", "missing (seconds from the previous stage)")
    deadline = float(ctx.typed(d["deadline"], f"{key}.deadline", (int, float)))
    if not 0 < deadline <= MAX_DEADLINE:  # refuses inf and nan too
        raise ctx.err(f"{key}.deadline", f"must be > 0 and <= {MAX_DEADLINE:g} s, got {deadline}")
    lists: dict[str, tuple[Pattern, ...]] = {}
    for field_name in ("required", "optional", *_GROUPS):
        items = ctx.typed(d.get(field_name, []), f"{key}.{field_name}", list)
        lists[field_name] = tuple(
            _parse_pattern(ctx, p, f"{key}.{field_name}[{j}]", _GROUPS.get(field_name))
            for j, p in enumerate(items)
        )
    completes = ctx.typed(d.get("cpu_count_completes", False), f"{key}.cpu_count_completes", bool)
    if completes and not lists["cpu_count"]:
        raise ctx.err(f"{key}.cpu_count_completes", "set but cpu_count has no pattern")
    evidence: dict[str, str] = {}
    for kind in ("disk", "vif"):
        field_name = f"{kind}_evidence"
        value = ctx.typed(d.get(field_name, DEVICE_EVIDENCE[0]), f"{key}.{field_name}", str)
        if value not in DEVICE_EVIDENCE:
            raise ctx.err(
                f"{key}.{field_name}", f"{value!r} is not one of {', '.join(DEVICE_EVIDENCE)}"
            )
        if value == EVIDENCE_XENSTORE and lists[f"{kind}_devices"]:
            raise ctx.err(
                f"{key}.{field_name}",
                f"is {EVIDENCE_XENSTORE!r} but {kind}_devices has patterns (a console line "
                f"that names each {kind} is console evidence)",
            )
        evidence[field_name] = value
    return StageSpec(
        name=name, deadline=deadline, cpu_count_completes=completes, **lists, **evidence
    )


def _parse_pattern(
    ctx: _Ctx,
    raw: object,
    key: str,
    group: str | None,
    *,
    stages: tuple[str, ...] | None = None,
    stage_required: bool = False,
) -> Pattern:
    """One pattern; `stages` given: it may (`stage_required`: must) name one of them."""
    stage: str | None = None
    if isinstance(raw, str) and not stage_required:
        source, name = raw, raw
    else:
        d = ctx.table(raw, key, _STAGED_KEYS if stages is not None else _PATTERN_KEYS)
        if "pattern" not in d:
            raise ctx.err(f"{key}.pattern", "missing")
        source = ctx.typed(d["pattern"], f"{key}.pattern", str)
        name = ctx.typed(d.get("name", source), f"{key}.name", str)
        if "stage" in d:
            stage = ctx.typed(d["stage"], f"{key}.stage", str)
            if stages is not None and stage not in stages:
                raise ctx.err(
                    f"{key}.stage",
                    f"{stage!r} is not a stage of this profile ({', '.join(stages)})",
                )
        elif stage_required:
            raise ctx.err(f"{key}.stage", "missing (the stage this pattern names)")
    if not source:
        raise ctx.err(key, "empty pattern")
    try:
        regex = compile_console_pattern(source)
    except PatternError as e:
        raise ctx.err(key, f"bad regex {source[:80]!r}: {e}") from None
    if group is not None and group not in regex.groupindex:
        raise ctx.err(key, f"pattern {source!r} needs a named group (?P<{group}>...)")
    if regex.search(""):
        raise ctx.err(key, f"pattern {source!r} matches the empty string")
    return Pattern(name=name, regex=regex, literals=required_literals(source), stage=stage)


# --------------------------------------------------------------------------- prefilter


def required_literals(source: str, min_len: int = 3) -> tuple[str, ...]:
    """Substrings of which every match of `source` contains at least one.

    Returns () when no such set is found (case-insensitive patterns, no literal run of
    `min_len` chars in some branch): the checker then tries the regex on every line.
    """
    try:
        parsed = sre_parse.parse(source)
    except Exception:  # the private parser may change; the prefilter is only an optimisation
        return ()
    if parsed.state.flags & (re.IGNORECASE | re.VERBOSE):
        return ()
    data = list(parsed.data)
    try:
        if len(data) == 1 and data[0][0] == sre_parse.BRANCH:
            out = []
            for branch in data[0][1][1]:
                lit = _longest_run(list(branch))
                if len(lit) < min_len:
                    return ()
                out.append(lit)
            return tuple(out)
        lit = _longest_run(data)
    except Exception:
        return ()
    return (lit,) if len(lit) >= min_len else ()


def _longest_run(items: list[Any]) -> str:
    """The longest run of consecutive literals that every match must contain."""
    best = ""
    run: list[str] = []
    for op, av in items:
        if op == sre_parse.LITERAL:
            run.append(chr(av))
            continue
        best = max(best, "".join(run), key=len)
        run = []
        if op == sre_parse.SUBPATTERN and not av[1] and not av[2]:
            # A plain (capturing) group is required content: look inside it.
            best = max(best, _longest_run(list(av[3])), key=len)
    return max(best, "".join(run), key=len)


__all__ = ["ENV_DIR", "guestcfg_dir", "list_profiles", "load_profile", "parse_profile"]
