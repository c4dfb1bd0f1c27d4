"""The profile fields of causal blame, notices and device evidence: parsed, and every mistake
named with its file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenpvh.errors import ProfileError
from xenpvh.profile import load_profile

BASE = """
name = "tiny"
blame_lines = 30
[domain]
kernel = "/boot/k"
[[stages]]
name = "early-init"
deadline = 10
required = ['hello']
[[stages]]
name = "ap-launch"
deadline = 10
required = ['aps']
[[stages]]
name = "root-mount"
deadline = 10
required = ['root']
[[stages]]
name = "xenbus"
deadline = 10
disk_devices = ['blk: (?P<dev>xvd[a-z]+)']
vif_evidence = "xenstore"
[[stages]]
name = "login"
deadline = 10
required = ['login:']
[[forbidden]]
name = "no-init"
pattern = 'No working init found'
stage = "root-mount"
[[forbidden]]
name = "panic"
pattern = 'panic: '
[[blame]]
name = "xen-driver"
pattern = 'xbd_\\w+'
stage = "xenbus"
[[notice]]
name = "warning"
pattern = 'WARNING: '
"""


def load(tmp_path: Path, text: str):
    p = tmp_path / "tiny.toml"
    p.write_text(text)
    return load_profile(str(p))


def test_new_fields_parse(tmp_path: Path) -> None:
    p = load(tmp_path, BASE)
    order = ["early-init", "ap-launch", "root-mount", "xenbus", "login"]
    assert [s.name for s in p.stages] == order
    assert [(f.name, f.stage) for f in p.forbidden] == [("no-init", "root-mount"), ("panic", None)]
    assert [(b.name, b.stage) for b in p.blame] == [("xen-driver", "xenbus")]
    assert p.blame_lines == 30
    assert [n.name for n in p.notices] == ["warning"]
    xenbus = p.stage("xenbus")
    assert (xenbus.disk_evidence, xenbus.vif_evidence) == ("console", "xenstore")


@pytest.mark.parametrize(
    ("needle", "replacement", "message"),
    [
        ('stage = "root-mount"', 'stage = "rootmount"', "forbidden[0].stage: 'rootmount' is not"),
        ('stage = "root-mount"', "stage = 3", "forbidden[0].stage: must be str"),
        ('stage = "xenbus"', "", "blame[0].stage: missing"),
        ('stage = "xenbus"', 'stage = "hvm"', "blame[0].stage: 'hvm' is not a stage"),
        ("blame_lines = 30", "blame_lines = 201", "blame_lines: must be 0..200"),
        ("blame_lines = 30", "blame_lines = -1", "blame_lines: must be 0..200"),
        ("blame_lines = 30", "blame_lines = true", "blame_lines: must be int, got bool"),
        ("pattern = 'WARNING: '", "pattern = 'WARNING: '\nstage = 'login'", "notice[0].stage"),
        ('vif_evidence = "xenstore"', 'vif_evidence = "serial"', "vif_evidence: 'serial' is not"),
        (
            'vif_evidence = "xenstore"',
            'disk_evidence = "xenstore"',
            "disk_evidence: is 'xenstore' but disk_devices has patterns",
        ),
    ],
)
def test_mistakes_are_named(tmp_path: Path, needle: str, replacement: str, message: str) -> None:
    assert needle in BASE
    with pytest.raises(ProfileError) as e:
        load(tmp_path, BASE.replace(needle, replacement, 1))
    assert "tiny.toml" in str(e.value) and message in str(e.value)
