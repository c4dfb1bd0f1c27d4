"""Mutation check of the core rooms: hand-made mutants, each run against its unit tests.

    python bench/mutants.py [--only NAME ...] [--list]

Every mutant is one small source edit of the kind a real bug would make (a failed destroy
no longer turning the verdict broken, a device count checked with `<`, ...).  The script
applies it to a throw-away copy of the tree (the working tree is never touched), runs the
unit tests that guard that code (`-m "not xen"`, stopping at the first failure) and counts
the mutant killed when they fail.  It prints one line per mutant and the score; it exits 1
when a mutant survives, so the check can run in CI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to the repository root
    old: str  # must occur exactly once
    new: str
    tests: tuple[str, ...]  # pytest arguments (files, -k ...)


MUTANTS: tuple[Mutant, ...] = (
    # -- the kinds issue 12 found surviving ---------------------------------------------------
    Mutant(
        "failed destroy no longer broken",
        "xenpvh/check/decide.py",
        "    if facts.destroy_problem:",
        "    if False and facts.destroy_problem:",
        ("tests/test_check_decide.py", "tests/test_run_boot.py", "-k", "destroy"),
    ),
    Mutant(
        "rendered keys overridable through extra",
        "xenpvh/render/xl.py",
        'if key in emitted or key in ("pvh", "type", "extra", "cmdline", "builder"):',
        'if key in ("pvh", "extra", "builder"):',
        ("tests/test_render_xl.py",),
    ),
    Mutant(
        "stage deadlines counted from run start",
        "xenpvh/check/checker.py",
        "began = self._start if base is None else (self._first_byte or self._start) + base",
        "began = self._start",
        ("tests/test_check_stream.py",),
    ),
    Mutant(
        "xenbus device count checked with <",
        "xenpvh/run/devices.py",
        "            if have != n and kind in checks:",
        "            if have < n and kind in checks:",
        ("tests/test_run_boot.py", "-k", "xenstore or device"),
    ),
    Mutant(
        "console tty check removed",
        "xenpvh/run/devices.py",
        '        if not tty and "console-tty" in checks and not exited:',
        "        if False:",
        ("tests/test_run_boot.py", "-k", "xenstore or device"),
    ),
    Mutant(
        "retry history not written to verdict.json",
        "xenpvh/run/session.py",
        "attempts=records if len(records) > 1 else (),",
        "attempts=(),",
        ("tests/test_run_retry.py", "-k", "retries_only"),
    ),
    Mutant(
        "exit codes of blocked and broken swapped",
        "xenpvh/check/verdict.py",
        "            VerdictValue.BLOCKED: 2,\n            VerdictValue.BROKEN: 3,",
        "            VerdictValue.BLOCKED: 3,\n            VerdictValue.BROKEN: 2,",
        ("tests/test_cli.py", "tests/test_cli_conventions.py"),
    ),
    Mutant(
        "kernel-panic removed from the Linux profile",
        "guestcfg/linux-pvh.toml",
        "pattern = 'Kernel panic - not syncing'\n",
        "pattern = 'Kernel panic - not syncing (never, mutant)'\n",
        ("tests/test_run_retry.py", "tests/test_run_boot.py", "-k", "panic or lookalike"),
    ),
    # -- more of the same kinds: faults classed, nothing left, bounds ---------------------------
    Mutant(
        "a broken verdict keeps its failed stage",
        "xenpvh/check/decide.py",
        "    if verdict.verdict in (VerdictValue.BROKEN, VerdictValue.BLOCKED) and (",
        "    if False and (",
        ("tests/test_check_decide.py",),
    ),
    Mutant(
        "xenstored liveness probe never runs",
        "xenpvh/run/liveness.py",
        "        if problem:\n            raise BrokenError(problem)",
        "        if False:\n            raise BrokenError(problem)",
        ("tests/test_run_boot.py", "-k", "xenstored"),
    ),
    Mutant(
        "a deadline fail does not ask xenstored",
        "xenpvh/run/boot.py",
        "        return self._probe.final()",
        '        return ""',
        ("tests/test_run_boot.py", "-k", "xenstored or deadline"),
    ),
    Mutant(
        "XenStore deadline per call, not per operation",
        "xenpvh/toolstack/xenstore_relay.py",
        "            deadline = min(deadline, self.operation_deadline)",
        "            pass",
        ("tests/test_toolstack_xenstore.py",),
    ),
    Mutant(
        "a dropped XenStore relay is not replaced",
        "xenpvh/toolstack/xenstore.py",
        "                return self._many_locked(op, paths)\n            except RelayClosed:",
        "                return self._many_locked(op, paths)\n            except OverflowError:",
        ("tests/test_toolstack_xenstore.py",),
    ),
    Mutant(
        "a timed-out XenStore call throws its relay away",
        "xenpvh/toolstack/xenstore.py",
        "STALE_AFTER = 3",
        "STALE_AFTER = 1",
        ("tests/test_toolstack_xenstore.py",),
    ),
    Mutant(
        "a late XenStore reply taken for the current call's",
        "xenpvh/toolstack/xenstore_relay.py",
        "            if rq_id in self.expected:",
        "            if True:",
        ("tests/test_toolstack_xenstore.py",),
    ),
    Mutant(
        "a XenStore reply cut by a deadline is lost",
        "xenpvh/toolstack/xenstore_relay.py",
        "                continue  # the loop re-checks the deadline",
        "                self._buffer.clear()\n                continue",
        ("tests/test_toolstack_xenstore.py",),
    ),
    Mutant(
        "a relative XenStore backend path read as a state",
        "xenpvh/toolstack/xenstore.py",
        'if be.startswith("/") else None',
        "if be else None",
        ("tests/test_toolstack_xenstore.py",),
    ),
    Mutant(
        "a NUL not stripped from a XenStore state value",
        "xenpvh/toolstack/xenstore.py",
        "        return reply.payload.rstrip(NUL)",
        "        return reply.payload",
        ("tests/test_toolstack_xenstore.py",),
    ),
    Mutant(
        "an error answer from xenstored throws the relay away",
        "xenpvh/toolstack/xenstore.py",
        "            raise  # xenstored answered: the stream is in step, the relay stays",
        "            self._discard()\n            raise",
        ("tests/test_toolstack_xenstore.py",),
    ),
    Mutant(
        "an ansible inventory's group vars ignored",
        "xenpvh/host/inventory.py",
        "hostvars = combine_vars(get_group_vars(host.get_groups()), host.get_vars())",
        "hostvars = host.get_vars()",
        ("tests/test_plan_pool.py", "-k", "inventory"),
    ),
    Mutant(
        "a templated inventory var taken as an address",
        "xenpvh/host/inventory.py",
        '        if "{{" in value or "{%" in value:',
        "        if False:",
        ("tests/test_plan_pool.py", "-k", "inventory"),
    ),
    Mutant(
        "an ignored ansible failure reported as the one that stopped the host",
        "xenpvh/provision/events.py",
        "            if counts is not None and (counts.failed or counts.unreachable):",
        "            if True:",
        ("tests/test_ansible.py", "-k", "events or event_lines"),
    ),
    Mutant(
        "a dead owner's lease still protects its domain",
        "xenpvh/run/lease.py",
        "    return process_start(pid) != started",
        "    return False",
        ("tests/test_run_lease.py",),
    ),
    Mutant(
        "leases of other machines judged by pid",
        "xenpvh/run/lease.py",
        '    if their_machine != (machine or this_machine()) or not their_machine.split("/")[0]:',
        "    if False:",
        ("tests/test_run_lease.py",),
    ),
    Mutant(
        "old console logs never swept",
        "xenpvh/run/lease.py",
        "            if m and m.group(1) not in live_runs:",
        "            if False:",
        ("tests/test_run_lease.py",),
    ),
    Mutant(
        "a killed owner's nested temp dir kept until it is old",
        "xenpvh/host/nested/reap.py",
        "if running is False or (running is None and now - d.stat().st_mtime > min_age):",
        "if now - d.stat().st_mtime > min_age:",
        ("tests/test_host_nested.py", "-k", "reap_stale or killed_owner"),
    ),
    Mutant(
        "no provisional verdict.json",
        "xenpvh/run/session.py",
        "        self._write_provisional()\n",
        "",
        ("tests/test_run_session.py", "-k", "killed"),
    ),
    Mutant(
        "hostile cmdline checked only on the host",
        "xenpvh/run/session.py",
        "        check_renderable(self.point, req.toolstack)",
        "        pass",
        ("tests/test_run_session.py", "-k", "bad_input or hostile"),
    ),
    Mutant(
        "host memory not checked before create",
        "xenpvh/run/prepare.py",
        "        check_host_memory(info, self.spec.memory_mb, host=self.host.name)",
        "        pass",
        ("tests/test_run_boot.py", "-k", "memory"),
    ),
    Mutant(
        "a second Ctrl-C restarts a hanging destroy",
        "xenpvh/run/boot.py",
        "            if not self._destroy_started:\n                self._destroy_quietly()",
        "            self._destroy_quietly()",
        ("tests/test_run_boot.py", "-k", "ctrl_c"),
    ),
    Mutant(
        "infinite stage deadline accepted",
        "xenpvh/profile/loader.py",
        "    if not 0 < deadline <= MAX_DEADLINE:",
        "    if not 0 < deadline:",
        ("tests/test_profile.py",),
    ),
    Mutant(
        "profile patterns on Python's backtracking re",
        "xenpvh/profile/regex.py",
        "        return re2.compile(source, options=_OPTIONS)  # type: ignore[no-any-return]",
        "        import re\n\n        return re.compile(source)",
        ("tests/test_profile.py",),
    ),
    Mutant(
        "a non-UTF-8 profile is a traceback",
        "xenpvh/profile/loader.py",
        '        text = raw.decode("utf-8")\n    except UnicodeDecodeError as e:',
        '        text = raw.decode("utf-8")\n    except ZeroDivisionError as e:',
        ("tests/test_profile.py",),
    ),
    Mutant(
        "profile memory without an upper bound",
        "xenpvh/profile/loader.py",
        "    if not 32 <= memory <= MAX_MEMORY_MB:",
        "    if not 32 <= memory:",
        ("tests/test_profile.py",),
    ),
    Mutant(
        "request vcpus without an upper bound",
        "xenpvh/run/request.py",
        "if self.vcpus is not None and not 1 <= self.vcpus <= MAX_VCPUS:",
        "if self.vcpus is not None and not 1 <= self.vcpus:",
        ("tests/test_run_session.py", "-k", "bad_input"),
    ),
    Mutant(
        "a host fault no longer makes a guest fail broken",
        "xenpvh/check/decide.py",
        "    if facts.host_fault is not None and verdict.verdict is VerdictValue.FAIL:",
        "    if False:",
        ("tests/test_check_decide.py",),
    ),
    Mutant(
        "the run deadline ignored",
        "xenpvh/run/watch.py",
        "            if arrival > deadline:",
        "            if False:",
        ("tests/test_run_boot.py", "-k", "deadline"),
    ),
    # -- issue 25: rules of the checker, the fault judge and the renderer no test guarded ------
    Mutant(
        "late AP ids after ap-launch passed ignored",
        "xenpvh/check/checker.py",
        "if st.complete and rule.role is not Role.CPU_COUNT and rule.role is not Role.AP_IDS:",
        "if st.complete and rule.role is not Role.CPU_COUNT:",
        ("tests/test_check_late_lines.py",),
    ),
    Mutant(
        "late CPU count after its stage passed ignored",
        "xenpvh/check/checker.py",
        "if st.complete and rule.role is not Role.CPU_COUNT and rule.role is not Role.AP_IDS:",
        "if st.complete and rule.role is not Role.AP_IDS:",
        ("tests/test_check_late_lines.py",),
    ),
    Mutant(
        "ANSI codes kept in a partial line",
        "xenpvh/check/lines.py",
        'return ANSI_RE.sub("", p) if "\\x1b" in p else p',
        "return p",
        ("tests/test_check_late_lines.py",),
    ),
    Mutant(
        "fault judge keeps an ended oops's frame and RIP",
        "xenpvh/check/faults.py",
        "            in_oops = False\n"
        "            frame_at = rip_at = -(NEAR + 1)\n"
        '            rip_text = ""',
        "            in_oops = False",
        ("tests/test_check_faults.py",),
    ),
    Mutant(
        "fault judge stays in an ended oops",
        "xenpvh/check/faults.py",
        "        if OOPS_END.search(line):\n            in_oops = False\n",
        "        if OOPS_END.search(line):\n",
        ("tests/test_check_faults.py",),
    ),
    Mutant(
        "C1 control characters accepted in xl values",
        "xenpvh/render/xl.py",
        "0x7F <= ord(ch) <= 0x9F",
        "ord(ch) == 0x7F",
        ("tests/test_render_xl.py",),
    ),
    Mutant(
        "extra may override a rendered key",
        "xenpvh/render/xl.py",
        "if key in emitted or key in (",
        "if key in (",
        ("tests/test_render_xl.py",),
    ),
    Mutant(
        "extra may set builder",
        "xenpvh/render/xl.py",
        '"cmdline", "builder"):',
        '"cmdline"):',
        ("tests/test_render_xl.py",),
    ),
    # -- issue 25: XTF's PV environments, consoles from Xen's serial line ----------------------
    Mutant(
        "XTF PV environment passes the xtf profile",
        "guestcfg/xtf.toml",
        "pattern = '^Environment: PV '",
        "pattern = '^Environment: PV (never, mutant)'",
        ("tests/test_profile_stage_sets.py",),
    ),
    Mutant(
        "Xen serial prefix left on the guest's lines",
        "xenpvh/check/serial.py",
        'return self._guest(line[m.end() :]) + b"\\n"',
        'return line + b"\\n"',
        ("tests/test_check_console_source.py",),
    ),
    Mutant(
        "other domains' serial lines taken as the guest's",
        "xenpvh/check/serial.py",
        "            if dom == self.domid:",
        "            if True:",
        ("tests/test_check_console_source.py",),
    ),
    Mutant(
        "dom0 followed as the guest on Xen's serial line",
        "xenpvh/check/serial.py",
        "if self.domid is None and dom != 0:",
        "if self.domid is None:",
        ("tests/test_check_console_source.py",),
    ),
    Mutant(
        "Xen's timestamps left on the guest's lines",
        "xenpvh/check/serial.py",
        "            text = text[stamp.end() :]",
        "            pass",
        ("tests/test_check_console_source.py",),
    ),
    Mutant(
        "Xen's timestamp mode not learnt from its own lines",
        "xenpvh/check/serial.py",
        "            self._xen_stamps = True",
        "            pass",
        ("tests/test_check_console_source.py",),
    ),
    Mutant(
        "colour-code remnants kept on Xen's serial line",
        "xenpvh/check/serial.py",
        '            text = _SGR_REMNANT.sub(b"", text)',
        "            pass",
        ("tests/test_check_console_source.py",),
    ),
    # -- issue 25: the console decider's rules (moved out of the checker) ----------------------
    Mutant(
        "a blocked console decided as a fail",
        "xenpvh/check/decide_console.py",
        "    if facts.blocked:",
        "    if False:",
        ("tests/test_profile_stage_sets.py", "tests/test_check_samples.py"),
    ),
    Mutant(
        "stages after the failed one reported as reached",
        "xenpvh/check/decide_console.py",
        "        if failed is not None and i > failed.stage:",
        "        if False:",
        ("tests/test_check_seed.py", "tests/test_check_blame.py"),
    ),
    Mutant(
        "a passed stage the guest then failed in shown as passed",
        "xenpvh/check/decide_console.py",
        "        elif failed is not None and failed.stage == i:",
        "        elif False:",
        ("tests/test_check_blame.py", "tests/test_check_late_lines.py"),
    ),
    # issue 25 rule coverage: the checker (check/checker.py)
    Mutant(
        "checker accepts 0 vCPUs",
        "xenpvh/check/checker.py",
        "or vcpus < 1:",
        "or vcpus < 0:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "checker accepts a negative device count",
        "xenpvh/check/checker.py",
        "or n < 0:",
        "or n < -1:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "checker accepts an unknown console source",
        "xenpvh/check/checker.py",
        "        if source not in CONSOLE_SOURCES:",
        "        if False:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "checker keeps judging after its verdict",
        "xenpvh/check/checker.py",
        "        if self.done or not data:\n            return []\n        if self.serial",
        "        if not data:\n            return []\n        if self.serial",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "stage deadline taken as >=",
        "xenpvh/check/checker.py",
        "if now - began > spec.deadline:",
        "if now - began >= spec.deadline:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "stage deadline never checked",
        "xenpvh/check/checker.py",
        "if now - began > spec.deadline:",
        "if False:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "live blame wait not bounded",
        "xenpvh/check/checker.py",
        "if wall is None or self._clock() - wall >= BLAME_WAIT:",
        "if wall is None:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "live blame not waited for",
        "xenpvh/check/checker.py",
        "BLAME_WAIT = 3.0",
        "BLAME_WAIT = 0.0",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "offline poll consults a clock",
        "xenpvh/check/checker.py",
        "        if self.done or self._clock is None:\n"
        "            return []\n        if self._blame",
        "        if self.done:\n            return []\n        if self._blame",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "strict devices reason dropped at console end",
        "xenpvh/check/checker.py",
        "                if unverified\n",
        "                if False\n",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "unterminated last line never judged",
        "xenpvh/check/checker.py",
        "block = self._splitter.feed(rest) + self._splitter.flush()",
        "block = self._splitter.feed(rest)",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "pending blame not settled at console end",
        "xenpvh/check/checker.py",
        "if self._verdict is None and self._blame.pending is not None:",
        "if False:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "line count not advanced per block",
        "xenpvh/check/checker.py",
        '        self._lines_done += block.count("\\n")',
        "        pass",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "blame window not closed at block end",
        "xenpvh/check/checker.py",
        "if self._blame.pending is not None and self._blame.over(self._lines_done):",
        "if False:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "blame window not closed inside a block",
        "xenpvh/check/checker.py",
        "            if self._blame.over(self._line_no):",
        "            if False:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "a completed partial line matched twice",
        "xenpvh/check/checker.py",
        "if start == 0 and self._partial_done:",
        "if False:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "offline stamps not carried across blocks",
        "xenpvh/check/checker.py",
        "        if self._clock is None:\n            self._stamps.block_done(block)",
        "        if False:\n            self._stamps.block_done(block)",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "overflowed partial line still matched",
        "xenpvh/check/checker.py",
        "        if self._splitter.overflowed and self._partial_len:\n            return",
        "        if False:\n            return",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "partial prompt evidence not completed",
        "xenpvh/check/checker.py",
        "                if st.evidence == st.own_line:\n                    st.evidence = line",
        "                pass",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "candidate lines not verified by their regex",
        "xenpvh/check/checker.py",
        "            if rule.pattern.regex.search(line) is None:\n                continue",
        "            pass",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "notice/blocked lines counted as stage lines",
        "xenpvh/check/checker.py",
        "if rid not in matched or rule.role in WHOLE_LINE:",
        "if rid not in matched:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "completed stage records repeated lines",
        "xenpvh/check/checker.py",
        "if st.complete and rule.role is not Role.CPU_COUNT and rule.role is not Role.AP_IDS:",
        "if False:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "trailing blanks kept in evidence",
        "xenpvh/check/checker.py",
        "ev_line = line[:EVIDENCE_MAX].rstrip()",
        "ev_line = line[:EVIDENCE_MAX]",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "stage evidence not capped",
        "xenpvh/check/checker.py",
        "ev_line = line[:EVIDENCE_MAX].rstrip()",
        "ev_line = line.rstrip()",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "forbidden evidence not capped",
        "xenpvh/check/checker.py",
        "forbidden, blame, line[:EVIDENCE_MAX], t,",
        "forbidden, blame, line, t,",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "notices kept without bound",
        "xenpvh/check/checker.py",
        "if len(self._notices) < NOTICES_MAX:",
        "if True:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "notices not counted",
        "xenpvh/check/checker.py",
        "        self._notice_count += 1\n",
        "",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "XenStore vbd kind not mapped to disk",
        "xenpvh/check/checker.py",
        'kind = {"vbd": "disk"}.get(kind, kind)',
        "kind = kind",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "XenStore device ids not bounded",
        "xenpvh/check/checker.py",
        "ids = tuple(sorted(str(x) for x in ids))[:SET_MAX]",
        "ids = tuple(sorted(str(x) for x in ids))",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "XenStore proof accepted after the verdict",
        "xenpvh/check/checker.py",
        "        if self.done:\n            return []\n        ids",
        "        ids",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "awaiting_xenstore for another stage",
        "xenpvh/check/checker.py",
        "or self._tracker.name(i) != stage:",
        ":",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "unreadable console log is a traceback",
        "xenpvh/check/checker.py",
        "    except OSError as e:",
        "    except ZeroDivisionError as e:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "blocked line ignored",
        "xenpvh/check/checker.py",
        "            elif rule.role is Role.BLOCKED and not self.done:",
        "            elif False:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    # issue 25 rule coverage: rules and the candidate scan (check/rules.py)
    Mutant(
        "AP ids matched on a partial line",
        "xenpvh/check/rules.py",
        "NOT_ON_PARTIAL = WHOLE_LINE | {Role.AP_IDS, Role.CPU_COUNT, Role.DISK, Role.VIF}",
        "NOT_ON_PARTIAL = WHOLE_LINE | {Role.CPU_COUNT, Role.DISK, Role.VIF}",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "CPU count matched on a partial line",
        "xenpvh/check/rules.py",
        "NOT_ON_PARTIAL = WHOLE_LINE | {Role.AP_IDS, Role.CPU_COUNT, Role.DISK, Role.VIF}",
        "NOT_ON_PARTIAL = WHOLE_LINE | {Role.AP_IDS, Role.DISK, Role.VIF}",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "device names matched on a partial line",
        "xenpvh/check/rules.py",
        "NOT_ON_PARTIAL = WHOLE_LINE | {Role.AP_IDS, Role.CPU_COUNT, Role.DISK, Role.VIF}",
        "NOT_ON_PARTIAL = WHOLE_LINE | {Role.AP_IDS, Role.CPU_COUNT, Role.VIF}",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "forbidden matched on a partial line",
        "xenpvh/check/rules.py",
        "WHOLE_LINE = frozenset({Role.FORBIDDEN, Role.BLAME, Role.NOTICE, Role.BLOCKED})",
        "WHOLE_LINE = frozenset({Role.BLAME, Role.NOTICE, Role.BLOCKED})",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "notice matched on a partial line",
        "xenpvh/check/rules.py",
        "WHOLE_LINE = frozenset({Role.FORBIDDEN, Role.BLAME, Role.NOTICE, Role.BLOCKED})",
        "WHOLE_LINE = frozenset({Role.FORBIDDEN, Role.BLAME, Role.BLOCKED})",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "forbidden pattern's named stage ignored",
        "xenpvh/check/rules.py",
        "            stage = names.index(p.stage) if p.stage in names else -1",
        "            stage = -1",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "a regex-only rule's scan skips the rest of a spanned line",
        "xenpvh/check/rules.py",
        '            nl = block.find("\\n", m.start())',
        '            nl = block.find("\\n", m.end())',
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "literal scan finds only the first hit",
        "xenpvh/check/rules.py",
        "                pos = block.find(lit, end + 1) if end >= 0 else -1",
        "                pos = -1",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    # issue 25 rule coverage: stage completion (check/stages.py)
    Mutant(
        "required patterns: one is enough",
        "xenpvh/check/stages.py",
        "if len(st.seen_required) < len(s.required):",
        "if not st.seen_required and s.required:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "AP set not compared",
        "xenpvh/check/stages.py",
        "if s.ap_ids and st.aps != set(range(1, self.vcpus)):",
        "if False:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "cpu_count_completes ignored",
        "xenpvh/check/stages.py",
        "if s.cpu_count_completes and st.cpu_count != self.vcpus:",
        "if False:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "disk count not required",
        "xenpvh/check/stages.py",
        "if s.disk_devices and len(st.disks) < self.n_disks:",
        "if False:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "vif count not required",
        "xenpvh/check/stages.py",
        "if s.vif_devices and len(st.vifs) < self.n_vifs:",
        "if False:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "unproven XenStore devices never hold a stage",
        "xenpvh/check/stages.py",
        "return ignore_unverified or self.devices_waived() or not self.unverified(st)",
        "return True",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "strict devices waived offline",
        "xenpvh/check/stages.py",
        "return not self.xenstore_proof and not self.strict_devices",
        "return not self.xenstore_proof",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "XenStore proof not remembered",
        "xenpvh/check/stages.py",
        "if want and xenstore and kind not in st.proven:",
        "if want and xenstore:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "stage time not the later of its own and the previous",
        "xenpvh/check/stages.py",
        "                st.t = max(times) if times else (t if live else None)",
        "                st.t = st.own_t",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "stages complete out of order",
        "xenpvh/check/stages.py",
        "                if not self.own_complete(st):\n                    break",
        "                if not self.own_complete(st):\n"
        "                    i += 1\n                    continue",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "XenStore proof time not kept",
        "xenpvh/check/stages.py",
        "st.own_t = t if st.own_t is None or t is None else max(st.own_t, t)",
        "pass",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    # issue 25 rule coverage: AP ids, CPU count, device counts (check/matches.py)
    Mutant(
        "a repeated required line moves the evidence",
        "xenpvh/check/matches.py",
        "        if rule.slot in st.seen_required:\n            return _NOTHING\n",
        "",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "AP id equal to vcpus accepted",
        "xenpvh/check/matches.py",
        "if ap >= vcpus or ap < 1:",
        "if ap > vcpus or ap < 1:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "AP id 0 accepted",
        "xenpvh/check/matches.py",
        "if ap >= vcpus or ap < 1:",
        "if ap >= vcpus:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "AP ids kept without bound",
        "xenpvh/check/matches.py",
        "if ap not in st.aps and len(st.aps) < SET_MAX:",
        "if ap not in st.aps:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "too few CPUs accepted",
        "xenpvh/check/matches.py",
        "        if n != vcpus:",
        "        if n > vcpus:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "device names kept without bound",
        "xenpvh/check/matches.py",
        "if dev in seen or len(seen) >= SET_MAX:",
        "if dev in seen:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "one device too many accepted",
        "xenpvh/check/matches.py",
        "if len(seen) > want:",
        "if len(seen) > want + 1:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "vifs counted against disks",
        "xenpvh/check/matches.py",
        "(st.disks, tracker.n_disks) if disk else (st.vifs, tracker.n_vifs)",
        "(st.disks, tracker.n_disks) if disk else (st.vifs, tracker.n_disks)",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    # issue 25 rule coverage: blame windows (check/blame.py)
    Mutant(
        "a staged forbidden pattern loses to an unstaged one",
        "xenpvh/check/blame.py",
        "rule = named[0] if named else forbidden[0]",
        "rule = forbidden[0]",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "blame on the forbidden line itself ignored",
        "xenpvh/check/blame.py",
        "        if blame:\n",
        "        if False:\n",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "blame window ignores staged forbidden lines",
        "xenpvh/check/blame.py",
        "named = rule.role is Role.BLAME or (rule.role is Role.FORBIDDEN and rule.stage >= 0)",
        "named = rule.role is Role.BLAME",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "blame window one line short",
        "xenpvh/check/blame.py",
        "return line_no > b.line_no + self._blame_lines",
        "return line_no >= b.line_no + self._blame_lines",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "blame window one line long",
        "xenpvh/check/blame.py",
        "return line_no > b.line_no + self._blame_lines",
        "return line_no > b.line_no + self._blame_lines + 1",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "blame waits with blame_lines 0",
        "xenpvh/check/blame.py",
        "if self._has_blame and self._blame_lines > 0:",
        "if self._has_blame:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "blame never waits",
        "xenpvh/check/blame.py",
        "if self._has_blame and self._blame_lines > 0:",
        "if False:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "blame detail omits a passed stage",
        "xenpvh/check/blame.py",
        "        if tracker.stages[i].complete:\n",
        "        if False:\n",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    # issue 25 rule coverage: offline timestamps (check/stamps.py)
    Mutant(
        "stamp look-back unbounded",
        "xenpvh/check/stamps.py",
        "for _ in range(LOOKBACK):",
        "while True:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "since-boot times counted from the first stamp",
        "xenpvh/check/stamps.py",
        "self._origin = stamp if stamp > 1e6 else 0.0",
        "self._origin = stamp",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "wall-clock times counted from 0",
        "xenpvh/check/stamps.py",
        "self._origin = stamp if stamp > 1e6 else 0.0",
        "self._origin = 0.0",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "a stamped line not remembered",
        "xenpvh/check/stamps.py",
        "        else:\n            self.last = stamp\n",
        "",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "block's last stamp not remembered",
        "xenpvh/check/stamps.py",
        "        self.last = self.before(block, len(block))",
        "        pass",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    # issue 25 rule coverage: Xen's serial line (check/serial.py)
    Mutant(
        "serial pending line not capped",
        "xenpvh/check/serial.py",
        "            self._pending = data[:_LINE_MAX]",
        "            self._pending = data",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "serial tail not capped",
        "xenpvh/check/serial.py",
        "self._pending = data[cut + 1 :][:_LINE_MAX]",
        "self._pending = data[cut + 1 :]",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "serial host lines unbounded",
        "xenpvh/check/serial.py",
        "deque(maxlen=HOST_LINES_MAX)",
        "deque()",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "serial host line not capped",
        "xenpvh/check/serial.py",
        'self.host_lines.append(line.decode("utf-8", "replace")[:512])',
        'self.host_lines.append(line.decode("utf-8", "replace"))',
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "serial negative domid accepted",
        "xenpvh/check/serial.py",
        "(isinstance(domid, bool) or domid < 0)",
        "isinstance(domid, bool)",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "Xen boot stamp before a guest stamp kept",
        "xenpvh/check/serial.py",
        "            or _XEN_STAMP.match(text, stamp.end()) is not None\n",
        "",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "guest's own boot stamp stripped as Xen's",
        "xenpvh/check/serial.py",
        '            stamp.group("boot") is None\n',
        "            True\n",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "serial CR kept",
        "xenpvh/check/serial.py",
        'line = raw[:-1] if raw.endswith(b"\\r") else raw',
        "line = raw",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    # issue 25 rule coverage: line splitting, caps, escapes (check/lines.py)
    Mutant(
        "(XEN) prefix not stripped",
        "xenpvh/check/lines.py",
        'r"(?:\\(XEN\\) )?"\n',
        "",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "bad wall-clock stamp is a traceback",
        "xenpvh/check/lines.py",
        "        except ValueError:\n            stamp = None",
        "        except ZeroDivisionError:\n            stamp = None",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "CR LF split across chunks counted twice",
        "xenpvh/check/lines.py",
        '            if text[0] == "\\n":\n                text = text[1:]',
        "            pass",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "CR at chunk end not remembered",
        "xenpvh/check/lines.py",
        '            if text[-1] == "\\r":\n                self._skip_lf = True',
        "            pass",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "bare CR not a line end",
        "xenpvh/check/lines.py",
        'text = text.replace("\\r\\n", "\\n").replace("\\r", "\\n")',
        'text = text.replace("\\r\\n", "\\n")',
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "partial line not capped",
        "xenpvh/check/lines.py",
        "        if len(self._pending) > self.max_line:",
        "        if False:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "overlong line not discarded to its end",
        "xenpvh/check/lines.py",
        "            self._discarding = True\n",
        "",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "overlong lines in a block not capped",
        "xenpvh/check/lines.py",
        "            len(block) > cap + 1\n",
        "            False\n",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "long-line probe misses unaligned lines",
        "xenpvh/check/lines.py",
        "w = max(self.max_line // 4, 1)",
        "w = max(self.max_line, 1)",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "ANSI escapes kept in complete lines",
        "xenpvh/check/lines.py",
        '            block = ANSI_RE.sub("", block)',
        "            pass",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "OSC escapes kept",
        "xenpvh/check/lines.py",
        "|\\x1b\\][^\\x07\\x1b\\n]*(?:\\x07|\\x1b\\\\)?",
        "",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "unterminated last line not normalised",
        "xenpvh/check/lines.py",
        'text += self._finish_block(self._pending + "\\n")',
        'text += self._pending + "\\n"',
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    # issue 25 rule coverage: the host-fault judge (check/faults.py)
    Mutant(
        "fault judge looks outside an oops",
        "xenpvh/check/faults.py",
        "        if not in_oops:\n            continue\n",
        "",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "fault judge takes a far RIP",
        "xenpvh/check/faults.py",
        "if rip is not None and i - frame_at <= NEAR:",
        "if rip is not None:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "fault judge takes a far EFLAGS",
        "xenpvh/check/faults.py",
        "if flags is not None and i - rip_at <= NEAR and rip_text:",
        "if flags is not None and rip_text:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "fault judge ignores IF",
        "xenpvh/check/faults.py",
        "            if not int(flags.group(1), 16) & X86_EFLAGS_IF:",
        "            if True:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "fault judge keeps a RIP after its EFLAGS",
        "xenpvh/check/faults.py",
        '                )\n            rip_text = ""\n',
        "                )\n",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "fault judge: any frame counts",
        "xenpvh/check/faults.py",
        'CALLBACK_FRAME = re.compile(r"^(?:\\[['
        ' \\d.]+\\])?\\s+(asm_sysvec_xen_hvm_callback)\\+0x[0-9a-f]+/")',
        'CALLBACK_FRAME = re.compile(r"\\s+(\\w+)\\+0x[0-9a-f]+/")',
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    # issue 25 rule coverage: the run decider (rules 0-3) (check/decide.py)
    Mutant(
        "infrastructure problem not broken",
        "xenpvh/check/decide.py",
        "    if facts.infrastructure_problem and verdict.verdict in (VerdictValue.FAIL,"
        " VerdictValue.PASS):",
        "    if False:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "host fault not retryable",
        "xenpvh/check/decide.py",
        '        verdict.meta["retryable"] = True\n',
        "",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "failed destroy keeps retryable",
        "xenpvh/check/decide.py",
        '        verdict.meta.pop("retryable", None)\n',
        "",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "unblamed stage stays failed",
        "xenpvh/check/decide.py",
        "        if s.status is StageStatus.FAILED\n",
        "        if False\n",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "guest verdict not kept in meta",
        "xenpvh/check/decide.py",
        '        meta.setdefault("guest_verdict", str(verdict.verdict))\n',
        "",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "unblamed verdict keeps its failed stage",
        "xenpvh/check/decide.py",
        "reason=reason, failed_stage=None, stages=stages",
        "reason=reason, failed_stage=verdict.failed_stage, stages=stages",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "retryable without broken",
        "xenpvh/check/decide.py",
        'return verdict.verdict is VerdictValue.BROKEN and verdict.meta.get("retryable") is True',
        'return verdict.meta.get("retryable") is True',
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "failed hypervisor stage not a fail",
        "xenpvh/check/decide.py",
        "    if hypervisor.status is StageStatus.FAILED:\n        return",
        "    if False:\n        return",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "hypervisor stage last",
        "xenpvh/check/decide.py",
        "stages = [hypervisor, *(s for s in verdict.stages if s.name != hypervisor.name)]",
        "stages = [*(s for s in verdict.stages if s.name != hypervisor.name), hypervisor]",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "first attempt decides",
        "xenpvh/check/decide.py",
        "    final = attempts[-1]",
        "    final = attempts[0]",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "session without attempts accepted",
        "xenpvh/check/decide.py",
        "        if hypervisor is None or hypervisor.status is not StageStatus.FAILED:\n"
        "            raise",
        "        if False:\n            raise",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "unreached verdict may be a fail",
        "xenpvh/check/decide.py",
        "    if value not in (VerdictValue.BLOCKED, VerdictValue.BROKEN):\n"
        '        raise ValueError(f"a verdict before',
        '    if False:\n        raise ValueError(f"a verdict before',
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "error verdict may be a pass",
        "xenpvh/check/decide.py",
        "    if value not in (VerdictValue.BLOCKED, VerdictValue.BROKEN):\n"
        '        raise ValueError(f"an error',
        '    if False:\n        raise ValueError(f"an error',
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "error verdict keeps a failed stage",
        "xenpvh/check/decide.py",
        "    return decide_run(RunFacts(guest=verdict))",
        "    return verdict",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "error verdict without stages",
        "xenpvh/check/decide.py",
        "stages=list(stages) or [StageResult(n) for n in stage_names]",
        "stages=list(stages)",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "stuck devices: later stages kept",
        "xenpvh/check/decide.py",
        "        elif seen:\n",
        "        elif False:\n",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    # issue 25 rule coverage: the console decider (check/decide_console.py)
    Mutant(
        "passed stages shown not reached",
        "xenpvh/check/decide_console.py",
        "        elif st.complete:\n",
        "        elif False:\n",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "notices_total not reported",
        "xenpvh/check/decide_console.py",
        "        if facts.notices_total > len(facts.notices):\n",
        "        if False:\n",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "strict_devices not in meta",
        "xenpvh/check/decide_console.py",
        "    if facts.strict_devices:\n",
        "    if False:\n",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "a failure loses to all-passed",
        "xenpvh/check/decide_console.py",
        "    if facts.failure is not None:\n        name",
        "    if facts.failure is not None and not facts.all_passed:\n        name",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "undecided console passes",
        "xenpvh/check/decide_console.py",
        '        VerdictValue.FAIL, f"undecided',
        '        VerdictValue.PASS, f"undecided',
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    # issue 25 rule coverage: verdict.json (check/verdict.py)
    Mutant(
        "stage line not written to JSON",
        "xenpvh/check/verdict.py",
        '                    **({"line": s.line} if s.line is not None else {}),\n',
        "",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "stage line not read from JSON",
        "xenpvh/check/verdict.py",
        'line=int(s["line"]) if s.get("line") is not None else None,',
        "line=None,",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "stage detail not written to JSON",
        "xenpvh/check/verdict.py",
        '                    **({"detail": s.detail} if s.detail else {}),\n',
        "",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    # issue 25 rule coverage: the hypervisor stage (check/hostconsole.py)
    Mutant(
        "hypervisor: xl info version not checked",
        "xenpvh/check/hostconsole.py",
        "        if xl_version is None or not (",
        "        if False and (",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "hypervisor: expected line not required",
        "xenpvh/check/hostconsole.py",
        "        if hit is None:\n            missing.append(repr(want))",
        "        if False:\n            missing.append(repr(want))",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "hypervisor: banner version regex unescaped",
        "xenpvh/check/hostconsole.py",
        're.compile(r"Xen version " + re.escape(exp.xen_version))',
        're.compile(r"Xen version " + exp.xen_version)',
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "hypervisor: (XEN) prefix kept",
        "xenpvh/check/hostconsole.py",
        'return re.sub(r"^\\(XEN\\)\\s*(\\[[^\\]]*\\]\\s*)?", "", line)',
        "return line",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "expect file comments kept",
        "xenpvh/check/hostconsole.py",
        '        if line and not line.startswith("#"):',
        "        if line:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    # issue 25 rule coverage: the host-hang judge (check/hosthang.py)
    Mutant(
        "hang: long mode alone is a hang",
        "xenpvh/check/hosthang.py",
        "if cpu.efer & EFER_LMA and not cpu.cr0 & CR0_PG:",
        "if cpu.efer & EFER_LMA:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "hang: halted CPU judged",
        "xenpvh/check/hosthang.py",
        "or cpu.halted or not 0 < cpu.ip - old.ip < MAX_WALK:",
        "or not 0 < cpu.ip - old.ip < MAX_WALK:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "hang: unmoved RIP judged",
        "xenpvh/check/hosthang.py",
        "not 0 < cpu.ip - old.ip < MAX_WALK:",
        "not 0 <= cpu.ip - old.ip < MAX_WALK:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "hang: a far jump judged",
        "xenpvh/check/hosthang.py",
        "not 0 < cpu.ip - old.ip < MAX_WALK:",
        "not 0 < cpu.ip - old.ip:",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "hang: one zero sample enough",
        "xenpvh/check/hosthang.py",
        "if all(len(c) >= CODE_BYTES and not any(c) for c in code):",
        "if any(len(c) >= CODE_BYTES and not any(c) for c in code):",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "hang: short dump enough",
        "xenpvh/check/hosthang.py",
        "if all(len(c) >= CODE_BYTES and not any(c) for c in code):",
        "if all(not any(c) for c in code):",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "hang: EIP taken as long-mode code",
        "xenpvh/check/hosthang.py",
        'long_mode_code=ip.group(1) == "RIP",',
        "long_mode_code=True,",
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    Mutant(
        "hang: 32-bit ECX ignored",
        "xenpvh/check/hosthang.py",
        'rcx = regs["RCX"] or regs["ECX"]',
        'rcx = regs["RCX"]',
        ("-o", "python_files=test_check_*.py test_hosthang.py test_profile_stage_sets.py", "tests"),
    ),
    # issue 25 rule coverage: xl.cfg: quoting, bounds, version-aware keys (render/xl.py)
    Mutant(
        "xl: single quote accepted",
        "xenpvh/render/xl.py",
        '    "\'": "single quote",\n',
        "",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: double quote accepted",
        "xenpvh/render/xl.py",
        '    \'"\': "double quote",\n',
        "",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: backslash accepted",
        "xenpvh/render/xl.py",
        '    "\\\\": "backslash",\n',
        "",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: ] accepted",
        "xenpvh/render/xl.py",
        '    "]": "\']\'",\n',
        "",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: comma accepted in a spec",
        "xenpvh/render/xl.py",
        '",": "comma", ',
        "",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: = accepted in a spec",
        "xenpvh/render/xl.py",
        ', "=": "\'=\'"',
        "",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: U+001F accepted",
        "xenpvh/render/xl.py",
        '(ord(ch) < 0x20 and ch != "\\t")',
        '(ord(ch) < 0x1F and ch != "\\t")',
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: tab refused",
        "xenpvh/render/xl.py",
        '(ord(ch) < 0x20 and ch != "\\t")',
        "(ord(ch) < 0x20)",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: DEL accepted",
        "xenpvh/render/xl.py",
        "0x7F <= ord(ch) <= 0x9F",
        "0x80 <= ord(ch) <= 0x9F",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: spec whitespace accepted",
        "xenpvh/render/xl.py",
        "    if spec and value != value.strip():",
        "    if False:",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: all-digit name accepted",
        "xenpvh/render/xl.py",
        "if not _NAME_RE.fullmatch(name) or name.isdigit():",
        "if not _NAME_RE.fullmatch(name):",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: 65-char name accepted",
        "xenpvh/render/xl.py",
        "[A-Za-z0-9_.-]{0,63}",
        "[A-Za-z0-9_.-]{0,64}",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: multicast MAC accepted",
        "xenpvh/render/xl.py",
        "    if int(mac[:2], 16) & 1:",
        "    if False:",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: zero memory accepted",
        "xenpvh/render/xl.py",
        "if isinstance(value, bool) or not isinstance(value, int) or value < 1:",
        "if isinstance(value, bool) or not isinstance(value, int) or value < 0:",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: bool vcpus accepted",
        "xenpvh/render/xl.py",
        "if isinstance(value, bool) or not isinstance(value, int) or value < 1:",
        "if not isinstance(value, int) or value < 1:",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: empty disk target accepted",
        "xenpvh/render/xl.py",
        "    if not disk.target:\n",
        "    if False:\n",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: bad vdev accepted",
        "xenpvh/render/xl.py",
        "    if not _VDEV_RE.fullmatch(disk.vdev):",
        "    if False:",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: relative script accepted",
        "xenpvh/render/xl.py",
        '    if not path.startswith("/"):',
        "    if False:",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: bad bridge accepted",
        "xenpvh/render/xl.py",
        "    if not _BRIDGE_RE.fullmatch(vif.bridge):",
        "    if False:",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: duplicate vdev accepted",
        "xenpvh/render/xl.py",
        "        if d.vdev in seen:",
        "        if False:",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: unknown mode accepted",
        "xenpvh/render/xl.py",
        '    if spec.mode not in ("pvh", "pvhv1"):',
        "    if False:",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: Xen 4.3 accepted",
        "xenpvh/render/xl.py",
        "    if ver < PVHV1_FIRST:",
        "    if False:",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: Xen 4.9 accepted",
        "xenpvh/render/xl.py",
        "    if PVHV1_LAST < ver < PVHV2_FIRST:",
        "    if False:",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: pvhv1 on 4.10 accepted",
        "xenpvh/render/xl.py",
        '    if ver >= PVHV2_FIRST and spec.mode == "pvhv1":',
        "    if False:",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: pvh on 4.8 accepted",
        "xenpvh/render/xl.py",
        '    if ver < PVHV2_FIRST and spec.mode == "pvh":',
        "    if False:",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: 4.10.0 rendered as PVHv1",
        "xenpvh/render/xl.py",
        "    v2 = ver >= PVHV2_FIRST",
        "    v2 = ver > PVHV2_FIRST",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: soft-reset on 4.5 accepted",
        "xenpvh/render/xl.py",
        "if ver < XenVersion(4, 6) and",
        "if ver < XenVersion(4, 5) and",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: cmdline key on PVHv1",
        "xenpvh/render/xl.py",
        "{'cmdline' if v2 else 'extra'}",
        "cmdline",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: extra key on PVHv2",
        "xenpvh/render/xl.py",
        "{'cmdline' if v2 else 'extra'}",
        "extra",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: ramdisk not rendered",
        "xenpvh/render/xl.py",
        '        lines.append(f"ramdisk = {_quote(ramdisk)}")',
        "        pass",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: extra key not checked",
        "xenpvh/render/xl.py",
        "if not isinstance(key, str) or not _KEY_RE.fullmatch(key):",
        "if not isinstance(key, str):",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: extra value not checked",
        "xenpvh/render/xl.py",
        "_quote(check_string(f'extra.{key}', value))",
        "_quote(value)",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: kernel not checked",
        "xenpvh/render/xl.py",
        'kernel = check_string("kernel", spec.kernel)',
        "kernel = spec.kernel",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: cmdline not checked",
        "xenpvh/render/xl.py",
        'cmdline = check_string("cmdline", spec.cmdline)',
        "cmdline = spec.cmdline",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: ramdisk not checked",
        "xenpvh/render/xl.py",
        'check_string("ramdisk", spec.ramdisk) if spec.ramdisk',
        "spec.ramdisk if spec.ramdisk",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: disk target checked as a plain string",
        "xenpvh/render/xl.py",
        'check_string(f"{f}.target", disk.target, spec=True)',
        'check_string(f"{f}.target", disk.target)',
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: empty kernel accepted",
        "xenpvh/render/xl.py",
        '    if not spec.kernel:\n        raise RenderError("kernel: empty path")\n    kernel',
        "    kernel",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: disk format not checked",
        "xenpvh/render/xl.py",
        '    _check_choice(f"{f}.format", disk.format, DISK_FORMATS)\n',
        "",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: action not checked",
        "xenpvh/render/xl.py",
        "key: _check_choice(key, getattr(spec, key), ACTIONS)",
        "key: getattr(spec, key)",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "xl: version parse ignores minor order",
        "xenpvh/render/xl.py",
        "@dataclass(frozen=True, order=True)\nclass XenVersion",
        "@dataclass(frozen=True)\nclass XenVersion",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    # issue 25 rule coverage: libvirt XML (render/libvirt.py)
    Mutant(
        "libvirt: U+001F accepted",
        "xenpvh/render/libvirt.py",
        '(o < 0x20 and ch not in "\\t")',
        '(o < 0x1F and ch not in "\\t")',
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "libvirt: tab refused",
        "xenpvh/render/libvirt.py",
        '(o < 0x20 and ch not in "\\t")',
        "(o < 0x20)",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "libvirt: C1 accepted",
        "xenpvh/render/libvirt.py",
        "0x7F <= o <= 0x9F",
        "o == 0x7F",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "libvirt: surrogates accepted",
        "xenpvh/render/libvirt.py",
        " or 0xD800 <= o <= 0xDFFF:",
        ":",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "libvirt: non-characters accepted",
        "xenpvh/render/libvirt.py",
        "        if o in (0xFFFE, 0xFFFF):",
        "        if False:",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "libvirt: NUL message lost",
        "xenpvh/render/libvirt.py",
        "        if o == 0:",
        "        if False:",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "libvirt: pvhv1 accepted",
        "xenpvh/render/libvirt.py",
        '    if spec.mode != "pvh":',
        "    if False:",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "libvirt: name not checked",
        "xenpvh/render/libvirt.py",
        "    check_name(spec.name)\n",
        "",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "libvirt: zero vcpus accepted",
        "xenpvh/render/libvirt.py",
        "if isinstance(v, bool) or not isinstance(v, int) or v < 1:",
        "if isinstance(v, bool) or not isinstance(v, int) or v < 0:",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "libvirt: coredump on poweroff accepted",
        "xenpvh/render/libvirt.py",
        '_choice("on_poweroff", spec.on_poweroff, POWER_ACTIONS)',
        '_choice("on_poweroff", spec.on_poweroff, CRASH_ACTIONS)',
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "libvirt: disk target not checked",
        "xenpvh/render/libvirt.py",
        '        _check_text(f"{f}.target", d.target)\n',
        "",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "libvirt: bad vdev accepted",
        "xenpvh/render/libvirt.py",
        '        if not (d.vdev.startswith("xvd") and d.vdev[3:].isalpha() and'
        " d.vdev[3:].islower()):",
        "        if False:",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "libvirt: duplicate vdev accepted",
        "xenpvh/render/libvirt.py",
        "        if d.vdev in seen:",
        "        if False:",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "libvirt: qcow2 on phy",
        "xenpvh/render/libvirt.py",
        'name="phy" if fmt == "raw" else "qemu"',
        'name="phy"',
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "libvirt: ro disk writable",
        "xenpvh/render/libvirt.py",
        '        if d.access == "ro":',
        "        if False:",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "libvirt: bridge not checked",
        "xenpvh/render/libvirt.py",
        '_check_text(f"vifs[{i}].bridge", v.bridge)',
        "v.bridge",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "libvirt: MAC not checked",
        "xenpvh/render/libvirt.py",
        'check_mac(f"vifs[{i}].mac", v.mac)',
        "v.mac",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "libvirt: cmdline not checked",
        "xenpvh/render/libvirt.py",
        '_check_text("cmdline", spec.cmdline)',
        "spec.cmdline",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "libvirt: kernel not checked",
        "xenpvh/render/libvirt.py",
        '_check_text("kernel", spec.kernel)',
        "spec.kernel",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "libvirt: ramdisk not checked",
        "xenpvh/render/libvirt.py",
        '_check_text("ramdisk", spec.ramdisk)',
        "spec.ramdisk",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
    Mutant(
        "libvirt: empty target accepted",
        "xenpvh/render/libvirt.py",
        "        if not d.target:\n",
        "        if False:\n",
        ("-o", "python_files=test_render_*.py", "tests"),
    ),
)


def _copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc", "artifacts", ".ruff*")
    for name in ("xenpvh", "tests", "guestcfg", "pyproject.toml"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)


def _pytest(tree: Path, args: tuple[str, ...]) -> tuple[int, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "XENPVH_GUESTCFG": str(tree / "guestcfg")}
    t0 = time.monotonic()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "-m",
            "not xen",
            "-p",
            "no:cacheprovider",
            *args,
        ],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    return r.returncode, time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="substrings of mutant names to run")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    chosen = [m for m in MUTANTS if not args.only or any(o in m.name for o in args.only)]
    if args.list:
        for m in chosen:
            print(f"{m.name}  ({m.path})")
        return 0
    killed = 0
    baselines: dict[tuple[str, ...], int] = {}
    with tempfile.TemporaryDirectory(prefix="xenpvh-mutants-") as tmp:
        tree = Path(tmp) / "tree"
        _copy_tree(tree)
        for m in chosen:
            target = tree / m.path
            original = target.read_text()
            if original.count(m.old) != 1:
                print(f"ERROR   {m.name}: the text to mutate occurs {original.count(m.old)}x")
                return 2
            if m.tests not in baselines:
                baselines[m.tests] = _pytest(tree, m.tests)[0]
            if baselines[m.tests] != 0:
                print(f"ERROR   {m.name}: its tests fail without the mutant")
                return 2
            target.write_text(original.replace(m.old, m.new))
            try:
                rc, seconds = _pytest(tree, m.tests)
            finally:
                target.write_text(original)
            status = "killed" if rc != 0 else "SURVIVED"
            killed += rc != 0
            print(f"{status:8} {m.name}  [{seconds:.1f}s: {' '.join(m.tests)}]", flush=True)
    total = len(chosen)
    print(f"mutation score: {killed}/{total} killed ({100 * killed / max(total, 1):.0f}%)")
    return 0 if killed == total else 1


if __name__ == "__main__":
    sys.exit(main())
