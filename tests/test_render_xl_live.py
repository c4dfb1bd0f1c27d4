"""Real xl 4.17 parses what render_xl_config emits (`xl -N create`: parse, do not create)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xenpvh.host.base import Host
from xenpvh.profile.domain import DiskSpec, DomainSpec, VifSpec
from xenpvh.render.xl import render_xl_config

pytestmark = pytest.mark.xen

SPEC = DomainSpec(
    name="xenpvh-render-probe",
    kernel="/boot/probe kernel",
    ramdisk="/boot/probe-initrd",
    cmdline="console=hvc0 root=/dev/xvda init=/bin/sh x=a,b #not-a-comment é",
    memory_mb=128,
    vcpus=2,
    disks=(
        DiskSpec(target="/var/tmp/probe disk.raw"),
        DiskSpec("xvdb", "/v/d.qcow2", "qcow2", "ro"),
    ),
    vifs=(VifSpec(bridge="xenbr0", mac="00:16:3e:12:34:56"),),
    on_crash="preserve",
    on_reboot="restart",
)


def test_xl_parses_rendered_config(xen_host: Host, tmp_path: Path) -> None:
    host = xen_host  # the session's host (nested by default): booted once per test session
    ver = host.run(["xl", "info", "xen_version"], check=True).out.strip()
    text = render_xl_config(SPEC, ver)
    host.put_bytes(text.encode(), "/tmp/xenpvh-render-probe.cfg")
    # -N: dry run, print the domain config libxl would get, as JSON.
    res = host.run(["xl", "-N", "create", "/tmp/xenpvh-render-probe.cfg"], check=True)
    cfg = json.loads(res.out)
    assert cfg["c_info"]["type"] == "pvh"
    assert cfg["c_info"]["name"] == SPEC.name
    assert cfg["b_info"]["kernel"] == SPEC.kernel
    assert cfg["b_info"]["ramdisk"] == SPEC.ramdisk
    assert cfg["b_info"]["cmdline"] == SPEC.cmdline
    assert cfg["b_info"]["max_vcpus"] == 2
    assert cfg["b_info"]["target_memkb"] == 128 * 1024
    assert cfg["on_crash"] == "preserve"
    assert cfg["on_reboot"] == "restart"
    disks = cfg["disks"]
    assert [d["pdev_path"] for d in disks] == [d.target for d in SPEC.disks]
    assert [d["vdev"] for d in disks] == ["xvda", "xvdb"]
    assert [d.get("format") for d in disks] == ["raw", "qcow2"]
    assert [bool(d.get("readwrite")) for d in disks] == [True, False]
    assert [(n["bridge"], n["mac"]) for n in cfg["nics"]] == [("xenbr0", "00:16:3e:12:34:56")]
