"""libvirt domain XML for the libxl driver: structure, refusal, round-trip."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenpvh.errors import RenderError
from xenpvh.profile.domain import DiskSpec, DomainSpec, VifSpec
from xenpvh.render.libvirt import render_libvirt_xml

BASE = DomainSpec(
    name="guest1",
    kernel="/boot/kernel",
    ramdisk="/boot/initrd",
    cmdline="console=hvc0 root=/dev/xvda",
    memory_mb=512,
    vcpus=2,
    disks=(DiskSpec(target="/img/root.raw"), DiskSpec("xvdb", "/img/d.qcow2", "qcow2", "ro")),
    vifs=(VifSpec(mac="00:16:3e:01:02:03"),),
    on_crash="coredump-destroy",
)


def test_structure() -> None:
    root = ET.fromstring(render_libvirt_xml(BASE))
    assert root.tag == "domain" and root.get("type") == "xen"
    t = root.find("os/type")
    assert t is not None
    assert (t.text, t.get("arch"), t.get("machine")) == ("xenpvh", "x86_64", "xenpvh")
    assert root.findtext("os/kernel") == "/boot/kernel"
    assert root.findtext("os/initrd") == "/boot/initrd"
    assert root.findtext("os/cmdline") == "console=hvc0 root=/dev/xvda"
    mem = root.find("memory")
    assert mem is not None and mem.get("unit") == "MiB" and mem.text == "512"
    assert root.findtext("vcpu") == "2"
    assert root.findtext("on_crash") == "coredump-destroy"
    d0, d1 = root.findall("devices/disk")
    assert d0.attrib == {"type": "file", "device": "disk"}
    # raw files go to libxl's phy backend (what xl picks), qcow2 needs qdisk.
    assert d0.find("driver").attrib == {"name": "phy", "type": "raw"}  # type: ignore[union-attr]
    assert d1.find("driver").attrib == {"name": "qemu", "type": "qcow2"}  # type: ignore[union-attr]
    assert d0.find("target").attrib == {"dev": "xvda", "bus": "xen"}  # type: ignore[union-attr]
    assert d0.find("readonly") is None and d1.find("readonly") is not None
    iface = root.find("devices/interface")
    assert iface is not None and iface.get("type") == "bridge"
    assert iface.find("source").get("bridge") == "xenbr0"  # type: ignore[union-attr]
    assert iface.find("mac").get("address") == "00:16:3e:01:02:03"  # type: ignore[union-attr]
    con = root.find("devices/console/target")
    assert con is not None and con.attrib == {"type": "xen", "port": "0"}


def test_optional_elements_omitted() -> None:
    root = ET.fromstring(render_libvirt_xml(DomainSpec(name="g", kernel="/k")))
    assert root.find("os/initrd") is None
    assert root.find("os/cmdline") is None
    assert root.findall("devices/disk") == []


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"mode": "pvhv1"}, "only knows PVHv2"),
        ({"name": "a b"}, "name"),
        ({"kernel": "/k\x00"}, "kernel: refusing NUL"),
        ({"cmdline": "a\x1b[31m"}, "cmdline: refusing control character U\\+001B"),
        ({"cmdline": "a\nb"}, "cmdline: refusing control"),
        ({"ramdisk": "/i\x7f"}, "ramdisk"),
        ({"on_crash": "soft-reset"}, "on_crash"),
        ({"on_reboot": "coredump-restart"}, "on_reboot"),
        ({"disks": (DiskSpec(target="/a\x01"),)}, r"disks\[0\]\.target"),
        ({"disks": (DiskSpec(target="/a", vdev="sda"),)}, r"disks\[0\]\.vdev"),
        ({"disks": (DiskSpec(target="/a", format="vmdk"),)}, r"disks\[0\]\.format"),
        ({"vifs": (VifSpec(mac="zz"),)}, r"vifs\[0\]\.mac"),
        ({"vcpus": 0}, "vcpus"),
    ],
)
def test_refused(change: dict[str, object], match: str) -> None:
    with pytest.raises(RenderError, match=match):
        render_libvirt_xml(dataclasses.replace(BASE, **change))  # type: ignore[arg-type]


def test_markup_is_escaped_not_interpreted() -> None:
    evil = "</cmdline></os><devices><disk/></devices>&amp;'\""
    root = ET.fromstring(render_libvirt_xml(dataclasses.replace(BASE, cmdline=evil)))
    assert root.findtext("os/cmdline") == evil
    assert len(root.findall("devices/disk")) == 2


xml_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
    min_size=1,
    max_size=50,
)


@given(xml_text, xml_text, xml_text, xml_text, st.integers(1, 1 << 20), st.integers(1, 64))
def test_roundtrip(kernel: str, cmdline: str, ramdisk: str, target: str, mem: int, n: int) -> None:
    spec = dataclasses.replace(
        BASE,
        kernel=kernel,
        cmdline=cmdline,
        ramdisk=ramdisk,
        memory_mb=mem,
        vcpus=n,
        disks=(DiskSpec(target=target),),
    )
    root = ET.fromstring(render_libvirt_xml(spec))
    assert root.findtext("os/kernel") == kernel
    assert root.findtext("os/cmdline") == cmdline
    assert root.findtext("os/initrd") == ramdisk
    assert root.findtext("memory") == str(mem)
    assert root.findtext("vcpu") == str(n)
    assert root.find("devices/disk/source").get("file") == target  # type: ignore[union-attr]


SCHEMA = Path("/usr/share/libvirt/schemas/domain.rng")


@pytest.mark.host
@pytest.mark.skipif(
    shutil.which("xmllint") is None or not SCHEMA.exists(),
    reason="needs xmllint (libxml2-utils) and libvirt's domain.rng (libvirt0)",
)
@pytest.mark.parametrize(
    "spec",
    [
        BASE,
        DomainSpec(name="min", kernel="/k"),
        dataclasses.replace(BASE, cmdline="a<b>&c ]]> 'q' \"q\" é", on_crash="rename-restart"),
    ],
)
def test_validates_against_libvirt_schema(spec: DomainSpec, tmp_path: Path) -> None:
    """The real libvirt 9.0 RelaxNG schema accepts what we render."""
    xml = tmp_path / "dom.xml"
    xml.write_text(render_libvirt_xml(spec), encoding="utf-8")
    res = subprocess.run(
        ["xmllint", "--noout", "--relaxng", str(SCHEMA), str(xml)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
