"""Rules of the renderers that no other test pinned (issue 25: each one's mutant, in
bench/mutants.py, fails here)."""

from __future__ import annotations

import dataclasses

import pytest

from xenpvh.errors import RenderError
from xenpvh.profile.domain import DiskSpec, DomainSpec, VifSpec
from xenpvh.render.libvirt import render_libvirt_xml
from xenpvh.render.xl import parse_xl_config, render_xl_config

BASE = DomainSpec(name="guest1", kernel="/boot/kernel", cmdline="console=hvc0", vcpus=2)


def xl(xen: str = "4.17", **change: object) -> dict:
    return parse_xl_config(render_xl_config(dataclasses.replace(BASE, **change), xen))


def libvirt(**change: object) -> str:
    return render_libvirt_xml(dataclasses.replace(BASE, **change))


# ---------------------------------------------------------------- xl


def test_xl_name_is_at_most_64_characters() -> None:
    assert xl(name="a" * 64)["name"] == "a" * 64
    with pytest.raises(RenderError, match=r"name: .* must be 1-64"):
        xl(name="a" * 65)


@pytest.mark.parametrize(
    "change",
    [
        {"disks": (DiskSpec(target="/img/a.raw", script="block-custom"),)},
        {"vifs": (VifSpec(script="vif-custom"),)},
    ],
)
def test_xl_hotplug_script_must_be_absolute(change: dict[str, object]) -> None:
    with pytest.raises(RenderError, match=r"script: .* must be an absolute path on the host"):
        xl(**change)
    absolute = {
        k: tuple(dataclasses.replace(x, script="/etc/xen/scripts/" + x.script) for x in v)
        for k, v in change.items()
    }
    assert "script=/etc/xen/scripts/" in str(xl(**absolute))


# ---------------------------------------------------------------- libvirt


def test_libvirt_accepts_a_tab() -> None:
    assert "<cmdline>a\tb</cmdline>" in libvirt(cmdline="a\tb")


@pytest.mark.parametrize("ch", ["\ud800", "\udfff", "\ufffe", "\uffff", "\x1f", "\x7f", "\x85"])
def test_libvirt_refuses_what_xml_cannot_carry(ch: str) -> None:
    with pytest.raises(RenderError, match="cmdline: refusing"):
        libvirt(cmdline=f"a{ch}b")


def test_libvirt_coredump_only_on_crash() -> None:
    assert "<on_crash>coredump-destroy</on_crash>" in libvirt(on_crash="coredump-destroy")
    for key in ("on_poweroff", "on_reboot"):
        with pytest.raises(RenderError, match=f"{key}: 'coredump-destroy' is not one of"):
            libvirt(**{key: "coredump-destroy"})


@pytest.mark.parametrize("ch", ["\x1f", "\x01", "\x7f", "\x9f"])
def test_xl_refuses_every_control_character(ch: str) -> None:
    with pytest.raises(RenderError, match=f"cmdline: refusing control character U\\+{ord(ch):04X}"):
        xl(cmdline=f"a{ch}b")


def test_libvirt_refuses_a_duplicate_vdev_and_an_empty_target() -> None:
    disk = DiskSpec(target="/img/a.raw")
    with pytest.raises(RenderError, match="disks: vdev 'xvda' used twice"):
        libvirt(disks=(disk, disk))
    with pytest.raises(RenderError, match=r"disks\[0\].target: empty"):
        libvirt(disks=(DiskSpec(),))


def test_libvirt_refuses_a_control_character_in_a_bridge() -> None:
    with pytest.raises(RenderError, match=r"vifs\[0\].bridge: refusing control character"):
        libvirt(vifs=(VifSpec(bridge="br\x010"),))
