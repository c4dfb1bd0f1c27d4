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
from rich.console import Console

from xenpvh.errors import BlockedError, BrokenError
from xenpvh.host.ssh import SSHAddress
from xenpvh.provision import (
    ANSIBLE_DIR,
    CHROOT_CONNECTION,
    RecapCounts,
    apply_roles_to_chroot,
    chroot_inventory,
    parse_recap,
    provision_ssh,
    ssh_inventory,
)

BIN = Path(sys.executable).parent
PLAYBOOK = BIN / "ansible-playbook"
LINT = BIN / "ansible-lint"
ENV = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}

RECAP = """\
TASK [xen_host : Install Xen and the toolstack] ********************************
changed: [lab1]

PLAY RECAP *********************************************************************
lab1                       : ok=41   changed=3    unreachable=0    failed=0    skipped=9    \
rescued=0    ignored=0
/tmp/x y/root              : ok=7    changed=0    unreachable=0    failed=1    skipped=0    \
rescued=0    ignored=0
"""


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=ENV, cwd=ANSIBLE_DIR, **kw)  # type: ignore[call-overload]


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
        ]
    )
    assert r.returncode == 2, r.stdout
    assert "xen_host: bad input" in r.stdout
    assert parse_recap(r.stdout)["localhost"] == RecapCounts(
        ok=1, changed=0, unreachable=0, failed=1
    )


# -- provision.py plumbing ------------------------------------------------------------------


def test_parse_recap() -> None:
    recap = parse_recap(RECAP)
    assert recap == {
        "lab1": RecapCounts(ok=41, changed=3, unreachable=0, failed=0),
        "/tmp/x y/root": RecapCounts(ok=7, changed=0, unreachable=0, failed=1),
    }
    # Task output that merely looks like a recap line does not count before PLAY RECAP.
    assert (
        parse_recap(RECAP.split("PLAY RECAP")[0] + "x : ok=1 changed=1 unreachable=0 failed=0")
        == {}
    )


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
    console = Console(file=open(os.devnull, "w"), force_terminal=False)  # noqa: SIM115
    result = provision_ssh(
        f"ssh://root@127.0.0.1:{port}",
        identity=d / "client_key",
        known_hosts=d / "known_hosts",
        extra_vars={"xen_host_bridge": "not a bridge!"},
        progress=console,
        log=tmp_path / "run.log",
    )
    assert (result.ok, result.changed, result.failed, result.unreachable) == (1, 0, 1, 0)
    text = result.log.read_text()
    assert "TASK [Gathering Facts]" in text
    assert "xen_host: bad input" in text


# -- against a real debootstrapped tree ---------------------------------------------------------


def _remove_tree(root: Path) -> None:
    """Remove a debootstrapped tree, unmounting first what an interrupted debootstrap left
    mounted inside it (proc, sys, a bind-mounted /dev): rmtree must never walk into those."""
    prefix = str(root.resolve()) + "/"
    mounts = [
        line.split()[1]
        for line in Path("/proc/mounts").read_text().splitlines()
        if line.split()[1].startswith(prefix)
    ]
    for m in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", m], check=False)
    if any(
        ln.split()[1].startswith(prefix) for ln in Path("/proc/mounts").read_text().splitlines()
    ):
        raise RuntimeError(f"cannot unmount everything below {root}; not removing it")
    shutil.rmtree(root, ignore_errors=True)


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
        _remove_tree(root)


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
