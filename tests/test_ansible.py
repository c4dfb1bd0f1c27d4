"""The ansible roles (syntax, lint, rendered units) and xenpvh.provision's plumbing.

Tests with marker `host` run real processes: ansible-playbook against a real sshd on
loopback, and the roles applied to a real debootstrapped Debian tree through the chroot
connection.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import remove_tree

from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.provisioning import provision_ssh
from xenpvh.host.ssh import SSHAddress
from xenpvh.provision import (
    ANSIBLE_DIR,
    CHROOT_CONNECTION,
    PlaybookEvents,
    PlaybookRun,
    RecapCounts,
    TaskFailed,
    apply_roles_to_chroot,
    chroot_inventory,
    playbook_env,
    ssh_inventory,
)
from xenpvh.util.progress import Note, ProgressEvent, TaskAdvanced, TaskFinished, TaskStarted

BIN = Path(sys.executable).parent
PLAYBOOK = BIN / "ansible-playbook"
LINT = BIN / "ansible-lint"
ENV = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    kw.setdefault("env", ENV)
    return subprocess.run(argv, capture_output=True, text=True, cwd=ANSIBLE_DIR, **kw)  # type: ignore[call-overload]


# -- the playbook ---------------------------------------------------------------------------


def test_site_syntax_check(tmp_path: Path) -> None:
    inv = tmp_path / "inventory.json"
    inv.write_text(json.dumps(chroot_inventory(tmp_path)))
    r = _run([str(PLAYBOOK), "--syntax-check", "-i", str(inv), "site.yml"])
    assert r.returncode == 0, r.stdout + r.stderr
    # The chroot connection must resolve: it comes from community.general.
    r = _run([str(BIN / "ansible-doc"), "-t", "connection", CHROOT_CONNECTION])
    assert r.returncode == 0, r.stderr


def test_example_inventory_parses() -> None:
    r = _run([str(BIN / "ansible-inventory"), "-i", "inventory.example.yml", "--list"])
    assert r.returncode == 0, r.stderr
    hosts = json.loads(r.stdout)["_meta"]["hostvars"]
    assert hosts["xenbox1"]["xen_host_bridge_nic"] == "eno1"


def test_ansible_lint_production_profile() -> None:
    r = _run([str(LINT), "--profile", "production", "--offline", "--nocolor"], timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_nightly_units_verify(tmp_path: Path) -> None:
    """The role's unit templates, rendered by ansible, pass `systemd-analyze verify`.

    ExecStart must name an executable: the venv running this test has the real `xenpvh`
    entry point, so the rendered unit points there.
    """
    if shutil.which("systemd-analyze") is None:
        pytest.skip("needs systemd-analyze")
    venv = Path(sys.prefix)
    assert (venv / "bin/xenpvh").is_file()
    units = tmp_path / "units"
    units.mkdir()
    play = tmp_path / "render.yml"
    role = ANSIBLE_DIR / "roles/xenpvh_runner"
    play.write_text(
        json.dumps(
            [
                {
                    "name": "Render the nightly units",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "vars_files": [str(role / "defaults/main.yml")],
                    "tasks": [
                        {
                            "name": "Render",
                            "ansible.builtin.template": {
                                "src": f"{role}/templates/{{{{ item }}}}.j2",
                                "dest": f"{units}/{{{{ item }}}}",
                                "mode": "0644",
                            },
                            "loop": ["xenpvh-nightly.service", "xenpvh-nightly.timer"],
                        }
                    ],
                }
            ]
        )
    )
    r = _run(
        [
            str(PLAYBOOK),
            "-i",
            "localhost,",
            str(play),
            "-e",
            json.dumps(
                {
                    "xenpvh_runner_venv": str(venv),
                    "xenpvh_runner_home": str(tmp_path),
                    "xenpvh_runner_nightly_args": ["--baseline", "staging"],
                }
            ),
        ]
    )
    assert r.returncode == 0, r.stdout + r.stderr
    service = (units / "xenpvh-nightly.service").read_text()
    assert (
        f"ExecStart={venv}/bin/xenpvh plan run nightly --hosts local --db "
        f"{tmp_path}/history.sqlite --out {tmp_path}/plan-runs --keep 14 --baseline staging\n"
    ) in service
    assert "OnCalendar=*-*-* 02:30:00" in (units / "xenpvh-nightly.timer").read_text()
    v = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            "--man=no",
            str(units / "xenpvh-nightly.service"),
            str(units / "xenpvh-nightly.timer"),
        ],
        capture_output=True,
        text=True,
    )
    assert v.returncode == 0, v.stdout + v.stderr
    # A broken unit must fail the same check (guards the check itself).
    (units / "xenpvh-nightly.service").write_text(
        service.replace(f"{venv}/bin/xenpvh", "xenpvh-nowhere")
    )
    v = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(units / "xenpvh-nightly.service")],
        capture_output=True,
        text=True,
    )
    assert v.returncode != 0


def _events(stdout: str) -> PlaybookEvents:
    events = PlaybookEvents()
    for line in stdout.splitlines():
        events.feed(line)
    return events


def test_xen_host_rejects_bad_input(tmp_path: Path) -> None:
    """The role's input checks stop the play before anything touches the host."""
    inv = tmp_path / "inventory.json"
    inv.write_text(json.dumps({"all": {"hosts": {"localhost": {"ansible_connection": "local"}}}}))
    r = _run(
        [
            str(PLAYBOOK),
            "-i",
            str(inv),
            "site.yml",
            "-e",
            json.dumps({"xen_host_bridge": "br0; reboot", "xen_artifact": ""}),
        ],
        env=playbook_env(),
    )
    assert r.returncode == 2, r.stdout
    events = _events(r.stdout)
    assert events.recap == {"localhost": RecapCounts(ok=1, changed=0, unreachable=0, failed=1)}
    [fatal] = events.fatal()
    assert fatal.host == "localhost" and "xen_host: bad input" in fatal.msg


# -- xenpvh.provision plumbing --------------------------------------------------------------


TINY_PLAY = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: say hello
      ansible.builtin.command: echo hello
    - name: a failure that is ignored
      ansible.builtin.command: /bin/false
      ignore_errors: true
    - name: this one fails
      ansible.builtin.shell: echo "no disk for xen" >&2; exit 3
    - name: never reached
      ansible.builtin.command: echo unreachable
"""


def _tiny_run(tmp_path: Path, play: str, sink: list[ProgressEvent]) -> PlaybookRun:
    """A real ansible-playbook run of `play` against this machine (connection local)."""
    d = tmp_path / "ansible"
    d.mkdir()
    (d / "site.yml").write_text(play)
    (d / "ansible.cfg").write_text("[defaults]\nretry_files_enabled = False\n")
    inventory = {
        "all": {
            "hosts": {
                "box1": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": sys.executable,
                }
            }
        }
    }
    return PlaybookRun(
        inventory, extra_vars={}, log=tmp_path / "run.log", progress=sink.append, ansible_dir=d
    )


def test_results_come_from_ansibles_json_events(tmp_path: Path) -> None:
    """One ok task, an ignored failure, a failing task: the recap, the failure that
    stopped the host (with the module's msg and stderr), the task names as progress."""
    sink: list[ProgressEvent] = []
    events = _tiny_run(tmp_path, TINY_PLAY, sink).run()
    assert events.recap == {
        "box1": RecapCounts(ok=2, changed=2, unreachable=0, failed=1, ignored=1)
    }
    assert [f.task for f in events.failures] == ["a failure that is ignored", "this one fails"]
    [fatal] = events.fatal()
    assert fatal == TaskFailed(
        "box1", "this one fails", "non-zero return code: no disk for xen", unreachable=False
    )
    details = [e.detail for e in sink if isinstance(e, TaskAdvanced)]
    assert details == ["say hello", "a failure that is ignored", "this one fails"]
    assert isinstance(sink[0], TaskStarted) and isinstance(sink[-1], TaskFinished)
    notes = [e.text for e in sink if isinstance(e, Note)]
    assert notes[-1] == "failed: [box1] this one fails: non-zero return code: no disk for xen"
    log = (tmp_path / "run.log").read_text()
    assert "TASK [say hello]" in log and "fatal: [box1]: non-zero return code" in log
    assert "box1 : ok=2 changed=2 unreachable=0 failed=1" in log


def test_a_playbook_that_cannot_start_is_broken_with_ansibles_words(tmp_path: Path) -> None:
    sink: list[ProgressEvent] = []
    run = _tiny_run(tmp_path, "- hosts: all\n  tasks:\n    - nosuchmodule: {}\n", sink)
    with pytest.raises(BrokenError, match="without a play recap") as ei:
        run.run()
    assert "ERROR!" in str(ei.value) and "nosuchmodule" in str(ei.value)
    assert isinstance(sink[-1], TaskFinished) and not sink[-1].ok


def test_event_lines_and_other_lines() -> None:
    events = PlaybookEvents()
    assert events.feed("[WARNING]: something") == ([], ["[WARNING]: something"])
    assert events.feed('{"not": "an event"}') == ([], ['{"not": "an event"}'])
    unreachable = json.dumps(
        {
            "_event": "v2_runner_on_unreachable",
            "task": {"name": "Gathering Facts"},
            "hosts": {"lab1": {"msg": "Failed to connect: Host key verification failed.\r\n"}},
        }
    )
    found, lines = events.feed(unreachable)
    assert found == [
        TaskFailed(
            "lab1",
            "Gathering Facts",
            "Failed to connect: Host key verification failed.",
            unreachable=True,
        )
    ]
    assert lines[0] == "fatal: [lab1]: Failed to connect: Host key verification failed."
    # Without a recap nothing is fatal yet; with one, the unreachable host's failure is.
    assert events.fatal() == []
    events.feed(
        json.dumps(
            {
                "_event": "v2_playbook_on_stats",
                "stats": {"lab1": {"ok": 0, "changed": 0, "unreachable": 1, "failures": 0}},
            }
        )
    )
    assert [f.host for f in events.fatal()] == ["lab1"]


def test_ssh_inventory_quotes_paths(tmp_path: Path) -> None:
    kh = tmp_path / "my known hosts"
    key = tmp_path / "id key"
    inv = ssh_inventory(SSHAddress("root", "box", 2222), identity=key, known_hosts=kh)
    hv = inv["all"]["children"]["xen_lab"]["hosts"]["box"]
    assert (hv["ansible_host"], hv["ansible_port"], hv["ansible_user"]) == ("box", 2222, "root")
    assert hv["ansible_ssh_private_key_file"] == str(key)
    args = shlex.split(hv["ansible_ssh_common_args"])
    assert f"UserKnownHostsFile={kh}" in args
    assert "StrictHostKeyChecking=yes" in args
    assert "GlobalKnownHostsFile=/dev/null" in args


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"address": "root@"}, "empty host name"),
        ({"address": "ssh://root@-oProxyCommand"}, "must not start with '-'"),
        ({"known_hosts": Path("/nonexistent/kh")}, "known_hosts file"),
        ({"xen_artifact": "/nonexistent/xen-1.gz"}, "does not exist"),
        ({"xen_artifact": "/etc/passwd"}, "not named xen-<id>.gz"),
    ],
)
def test_provision_ssh_rejects_bad_input(kw: dict[str, object], message: str) -> None:
    address = str(kw.pop("address", "ssh://root@127.0.0.1:2"))
    with pytest.raises(BlockedError, match=message):
        provision_ssh(address, **kw)  # type: ignore[arg-type]


def test_chroot_needs_python(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with pytest.raises(BlockedError, match="python3"):
        apply_roles_to_chroot(tmp_path, extra_vars={})


# -- against a real sshd --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A real OpenSSH sshd on loopback; yields its port and a directory with client_key,
    host_key.pub and known_hosts."""
    if not os.path.exists("/usr/sbin/sshd") or os.geteuid() != 0:
        pytest.skip("needs root and OpenSSH's sshd")
    d = tmp_path_factory.mktemp("sshd")
    _keygen(d / "host_key")
    _keygen(d / "client_key")
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    port = _free_port()
    Path("/run/sshd").mkdir(exist_ok=True)
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n"
        f"AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\n"
        f"PidFile {d}/sshd.pid\nSubsystem sftp internal-sftp\n"
    )
    proc = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
        stdout=subprocess.DEVNULL,
        stderr=(d / "sshd.log").open("wb"),
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("sshd did not start") from None
                time.sleep(0.1)
        keytype, data = (d / "host_key.pub").read_text().split()[:2]
        (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {keytype} {data}\n")
        yield port, d
    finally:
        proc.terminate()
        proc.wait(10)


def test_provision_ssh_refuses_proxy_hosts(tmp_path: Path) -> None:
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host lab\n  HostName 10.0.0.9\n  ProxyJump bastion\n")
    with pytest.raises(BlockedError, match="ProxyJump"):
        provision_ssh("lab", ssh_config=cfg)


@pytest.mark.host
@pytest.mark.parametrize("spec", ["address", "ssh config alias"])
def test_provision_ssh_unknown_host_key_is_refused(
    sshd: tuple[int, Path], tmp_path: Path, spec: str
) -> None:
    port, d = sshd
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    if spec == "address":
        address, kw = f"root@127.0.0.1:{port}", {"identity": d / "client_key", "known_hosts": empty}
    else:
        # Everything from the config: the alias must reach ansible as host, port, user, key.
        cfg = tmp_path / "ssh_config"
        cfg.write_text(
            f"Host lab\n  HostName 127.0.0.1\n  Port {port}\n  User root\n"
            f"  IdentityFile {d / 'client_key'}\n  UserKnownHostsFile {empty}\n"
        )
        address, kw = "lab", {"ssh_config": cfg}
    with pytest.raises(BrokenError, match="unreachable") as ei:
        provision_ssh(address, log=tmp_path / "run.log", **kw)  # type: ignore[arg-type]
    assert "Host key verification failed" in (tmp_path / "run.log").read_text()
    assert "log:" in str(ei.value)


@pytest.mark.host
def test_provision_ssh_pinned_host_key_runs_the_play(
    sshd: tuple[int, Path], tmp_path: Path
) -> None:
    """With the pinned key ansible connects and gathers facts; a bad bridge name then stops
    the play at the input check, so this machine is not provisioned."""
    port, d = sshd
    sink: list[ProgressEvent] = []
    result = provision_ssh(
        f"ssh://root@127.0.0.1:{port}",
        identity=d / "client_key",
        known_hosts=d / "known_hosts",
        extra_vars={"xen_host_bridge": "not a bridge!"},
        progress=sink.append,
        log=tmp_path / "run.log",
    )
    assert (result.ok, result.changed, result.failed, result.unreachable) == (1, 0, 1, 0)
    text = result.log.read_text()
    assert "TASK [Gathering Facts]" in text
    assert "xen_host: bad input" in text
    assert "xen_host: bad input" in result.describe_failures()
    assert any(isinstance(e, TaskAdvanced) and e.detail == "Gathering Facts" for e in sink)


# -- against a real debootstrapped tree ---------------------------------------------------------


@pytest.fixture(scope="module")
def debian_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        pytest.skip("needs root and debootstrap")
    # Several minutes of debootstrap and apt on a 2-core machine shared by the team: opt in.
    if os.environ.get("XENPVH_TEST_DEBOOTSTRAP") != "1":
        pytest.skip("set XENPVH_TEST_DEBOOTSTRAP=1 to debootstrap a tree for the chroot test")
    from xenpvh.build.apt import debian_mirror

    root = tmp_path_factory.mktemp("chroot") / "root"
    try:
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,systemd-sysv",
                "bookworm",
                str(root),
                debian_mirror("bookworm"),
            ],
            check=True,
            capture_output=True,
            timeout=1200,
        )
        yield root
    finally:
        remove_tree(root)


@pytest.mark.host
def test_roles_apply_to_a_chroot_and_are_idempotent(debian_tree: Path, tmp_path: Path) -> None:
    root = debian_tree
    first = apply_roles_to_chroot(
        root,
        extra_vars={"xenpvh_runner_nightly": True},
        log=tmp_path / "first.log",
    )
    assert first.changed > 0 and first.failed == 0
    # The image is configured as the nested host needs it...
    assert list((root / "boot").glob("xen-4.*-amd64.gz"))
    assert (root / "etc/systemd/network/20-xenpvh-uplink.network").read_text().count(
        "Name=eth0 en*"
    ) == 1
    default_xen = (root / "etc/default/xen").read_text()
    assert "XENCONSOLED_TRACE=guest" in default_xen
    assert "--log=guest" in default_xen
    assert "xen-netback" in (root / "etc/modules-load.d/xen.conf").read_text()
    wants = root / "etc/systemd/system"
    assert (wants / "multi-user.target.wants/systemd-networkd.service").is_symlink()
    assert (wants / "timers.target.wants/xenpvh-nightly.timer").is_symlink()
    assert (root / "var/lib/xenpvh/artifacts").is_dir()
    # ...nothing was started inside it, and the policy that ensured it is gone again.
    assert not (root / "usr/sbin/policy-rc.d").exists()
    assert (
        'GRUB_CMDLINE_XEN_DEFAULT="dom0_mem=1024M,max:1024M'
        in (root / "etc/default/grub.d/xenpvh.cfg").read_text()
    )
    second = apply_roles_to_chroot(
        root,
        extra_vars={"xenpvh_runner_nightly": True},
        log=tmp_path / "second.log",
    )
    assert second.changed == 0, (tmp_path / "second.log").read_text()[-3000:]
