"""xl.cfg rendering: version rules, validation, injection refusal, round-trip."""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenpvh.errors import BlockedError, RenderError
from xenpvh.profile.domain import DiskSpec, DomainSpec, VifSpec
from xenpvh.render.xl import (
    XenVersion,
    parse_spec_string,
    parse_xl_config,
    render_xl_config,
)

BASE = DomainSpec(name="guest1", kernel="/boot/kernel", cmdline="console=hvc0", vcpus=2)
V1 = dataclasses.replace(BASE, mode="pvhv1")

INJECT = ["'", '"', "\n", "\r", "\x00", "]", "\\"]
NAMES = {
    "'": "single quote",
    '"': "double quote",
    "\n": "newline",
    "\r": "carriage return",
    "\x00": "NUL",
    "]": "']'",
    "\\": "backslash",
    ",": "comma",
    "=": "'='",
}


def test_version_parse_and_order() -> None:
    assert XenVersion.parse("4.17") == XenVersion(4, 17, 0)
    assert XenVersion.parse("4.17.5") == XenVersion(4, 17, 5)
    assert XenVersion.parse("4.17.5-pre") == XenVersion(4, 17, 5)
    assert XenVersion.parse("4.9") < XenVersion.parse("4.10")
    assert XenVersion.parse("4.17") < XenVersion.parse("4.17.1")
    assert sorted(map(XenVersion.parse, ["4.10", "4.9", "4.4.1"])) == [
        XenVersion(4, 4, 1),
        XenVersion(4, 9),
        XenVersion(4, 10),
    ]
    for bad in ["", "4", "four.17", "4.17.5.1", "4.x"]:
        with pytest.raises(RenderError, match="cannot parse"):
            XenVersion.parse(bad)


def test_pvhv2_for_new_xen() -> None:
    cfg = parse_xl_config(render_xl_config(BASE, "4.17"))
    assert cfg["type"] == "pvh"
    assert "pvh" not in cfg
    assert cfg["cmdline"] == "console=hvc0"
    assert "extra" not in cfg
    assert cfg["vcpus"] == 2
    assert render_xl_config(BASE, XenVersion(4, 10)) == render_xl_config(BASE, "4.10.0")


@pytest.mark.parametrize("ver", ["4.4", "4.5.1", "4.8.5"])
def test_pvhv1_for_old_xen(ver: str) -> None:
    cfg = parse_xl_config(render_xl_config(V1, ver))
    assert cfg["pvh"] == 1
    assert "type" not in cfg
    # 4.4 does not know `cmdline`; PVHv1 guests take the PV-style `extra`.
    assert cfg["extra"] == "console=hvc0"
    assert "cmdline" not in cfg


@pytest.mark.parametrize(
    ("spec", "ver", "match"),
    [
        (BASE, "4.9", "PVHv1 was removed in 4.9"),
        (V1, "4.9.2", "PVHv1 was removed in 4.9"),
        (BASE, "4.3", "PVHv1 appeared in 4.4"),
        (V1, "3.4", "PVHv1 appeared in 4.4"),
        (V1, "4.17", "silently build"),
        (V1, "4.10", "silently build"),
        (BASE, "4.8", "needs Xen >= 4.10"),
        (dataclasses.replace(BASE, mode="pv"), "4.17", "mode"),
    ],
)
def test_unsupported_combinations_are_blocked(spec: DomainSpec, ver: str, match: str) -> None:
    with pytest.raises(RenderError, match=match) as e:
        render_xl_config(spec, ver)
    assert isinstance(e.value, BlockedError)


def test_disks_vifs_actions() -> None:
    spec = dataclasses.replace(
        BASE,
        ramdisk="/boot/initrd",
        memory_mb=512,
        disks=(DiskSpec(target="/var/img/root.raw"), DiskSpec("xvdb", "/d.qcow2", "qcow2", "ro")),
        vifs=(VifSpec(), VifSpec("br1", "00:16:3e:aa:bb:cc")),
        on_crash="preserve",
        on_reboot="restart",
    )
    cfg = parse_xl_config(render_xl_config(spec, "4.17"))
    assert cfg["ramdisk"] == "/boot/initrd"
    assert cfg["memory"] == 512
    assert cfg["on_crash"] == "preserve"
    assert cfg["on_reboot"] == "restart"
    assert cfg["on_poweroff"] == "destroy"
    assert [parse_spec_string(d) for d in cfg["disk"]] == [
        {"format": "raw", "vdev": "xvda", "access": "rw", "target": "/var/img/root.raw"},
        {"format": "qcow2", "vdev": "xvdb", "access": "ro", "target": "/d.qcow2"},
    ]
    assert [parse_spec_string(v) for v in cfg["vif"]] == [
        {"bridge": "xenbr0"},
        {"bridge": "br1", "mac": "00:16:3e:aa:bb:cc"},
    ]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"on_crash": "explode"}, "on_crash: 'explode' is not one of"),
        ({"on_poweroff": "Destroy"}, "on_poweroff"),
        ({"disks": (DiskSpec(target="/a", format="vmdk"),)}, r"disks\[0\]\.format"),
        ({"disks": (DiskSpec(target="/a", access="w"),)}, r"disks\[0\]\.access"),
        ({"disks": (DiskSpec(target="/a", vdev="hda"),)}, r"disks\[0\]\.vdev"),
        ({"disks": (DiskSpec(target="/a", vdev="xvd1"),)}, r"disks\[0\]\.vdev"),
        ({"disks": (DiskSpec(target=""),)}, r"disks\[0\]\.target: empty"),
        ({"disks": (DiskSpec(target=" /a"),)}, "whitespace"),
        ({"disks": (DiskSpec(target="/a"), DiskSpec(target="/b"))}, "used twice"),
        ({"vifs": (VifSpec(mac="00:16:3e:00:00"),)}, r"vifs\[0\]\.mac"),
        ({"vifs": (VifSpec(mac="01:16:3e:00:00:00"),)}, "multicast"),
        ({"vifs": (VifSpec(bridge="a/b"),)}, r"vifs\[0\]\.bridge"),
        ({"vifs": (VifSpec(bridge="x" * 16),)}, r"vifs\[0\]\.bridge"),
        ({"name": "my guest"}, "name"),
        ({"name": "123"}, "not all digits"),
        ({"name": ""}, "name"),
        ({"name": "-x"}, "name"),
        ({"kernel": ""}, "kernel: empty"),
        ({"memory_mb": 0}, "memory_mb"),
        ({"vcpus": -1}, "vcpus"),
        ({"vcpus": True}, "vcpus"),
        ({"extra": {"pvh": "1"}}, "override"),
        ({"extra": {"cmdline": "x"}}, "override"),
        ({"extra": {"Bad-Key": "x"}}, "not an xl key"),
        ({"extra": {"serial": "pty'"}}, "extra.serial: refusing single quote"),
    ],
)
def test_bad_values_named(change: dict[str, object], match: str) -> None:
    with pytest.raises(RenderError, match=match):
        render_xl_config(dataclasses.replace(BASE, **change), "4.17")  # type: ignore[arg-type]


def test_soft_reset_needs_4_6() -> None:
    with pytest.raises(RenderError, match="soft-reset"):
        render_xl_config(dataclasses.replace(V1, on_crash="soft-reset"), "4.5")
    cfg = parse_xl_config(render_xl_config(dataclasses.replace(V1, on_crash="soft-reset"), "4.6"))
    assert cfg["on_crash"] == "soft-reset"


def test_extra_keys_rendered() -> None:
    cfg = parse_xl_config(
        render_xl_config(dataclasses.replace(BASE, extra={"serial": "pty"}), "4.17")
    )
    assert cfg["serial"] == "pty"


@pytest.mark.parametrize("bad", INJECT)
@pytest.mark.parametrize("field", ["kernel", "cmdline", "ramdisk"])
def test_string_injection_refused(field: str, bad: str) -> None:
    value = f"/x{bad}name = 'evil'" if bad != "'" else f'/x{bad}name = "evil"'
    with pytest.raises(RenderError, match=f"^{field}: refusing {re.escape(NAMES[bad])}"):
        render_xl_config(dataclasses.replace(BASE, **{field: value}), "4.17")


@pytest.mark.parametrize("bad", [*INJECT, ",", "="])
def test_disk_and_vif_injection_refused(bad: str) -> None:
    with pytest.raises(
        RenderError, match=rf"^disks\[0\]\.target: refusing {re.escape(NAMES[bad])}"
    ):
        render_xl_config(dataclasses.replace(BASE, disks=(DiskSpec(target=f"/a{bad}b"),)), "4.17")
    with pytest.raises(RenderError, match=rf"^vifs\[0\]\.bridge: refusing {re.escape(NAMES[bad])}"):
        render_xl_config(dataclasses.replace(BASE, vifs=(VifSpec(bridge=f"br{bad}0"),)), "4.17")
    with pytest.raises(RenderError, match=rf"^vifs\[0\]\.mac: refusing {re.escape(NAMES[bad])}"):
        render_xl_config(
            dataclasses.replace(BASE, vifs=(VifSpec(mac=f"00:16:3e:00:00{bad}01"),)), "4.17"
        )


def test_parser_subset() -> None:
    text = """
    # comment
    name = 'a b' # trailing
    n = 0x10; m = -3
    l = [ "x", 'y z', 4, ]
    empty = []
    """
    assert parse_xl_config(text) == {
        "name": "a b",
        "n": 16,
        "m": -3,
        "l": ["x", "y z", 4],
        "empty": [],
    }
    for bad in ["a = ", "a 1", "= 1", "a = [1 2]", "a = 'x", "a = b"]:
        with pytest.raises(RenderError, match="xl config"):
            parse_xl_config(bad)


# ---- property tests ----

_SAFE_CHARS = st.characters(
    blacklist_categories=("Cs", "Cc"),
    blacklist_characters="'\"\\]",
)
safe_text = st.text(_SAFE_CHARS, max_size=60)
# Paths/spec fields: no ',' or '=' and no surrounding whitespace.
spec_field = st.text(
    st.characters(
        blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="'\"\\],="
    ),
    min_size=1,
    max_size=40,
)
names = st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", fullmatch=True)
macs = st.lists(st.integers(0, 255), min_size=6, max_size=6).map(
    lambda b: ":".join(f"{x:02x}" for x in [b[0] & 0xFE, *b[1:]])
)
actions = st.sampled_from(
    ["destroy", "restart", "preserve", "coredump-destroy", "rename-restart", "soft-reset"]
)


@st.composite
def specs(draw: st.DrawFn) -> DomainSpec:
    n_disks = draw(st.integers(0, 3))
    disks = tuple(
        DiskSpec(
            vdev="xvd" + "abc"[i],
            target="/" + draw(spec_field),
            format=draw(st.sampled_from(["raw", "qcow2", "vhd"])),
            access=draw(st.sampled_from(["rw", "ro"])),
        )
        for i in range(n_disks)
    )
    vifs = tuple(
        VifSpec(
            bridge=draw(st.from_regex(r"[A-Za-z0-9_.-]{1,15}", fullmatch=True)),
            mac=draw(st.none() | macs),
        )
        for _ in range(draw(st.integers(0, 2)))
    )
    return DomainSpec(
        name=draw(names),
        kernel="/" + draw(safe_text),
        cmdline=draw(safe_text),
        ramdisk=draw(st.none() | safe_text.map(lambda s: "/" + s)),
        memory_mb=draw(st.integers(1, 1 << 20)),
        vcpus=draw(st.integers(1, 128)),
        disks=disks,
        vifs=vifs,
        on_crash=draw(actions),
        on_poweroff=draw(actions),
        on_reboot=draw(actions),
    )


@given(specs(), st.sampled_from(["4.10", "4.17.5", "4.19"]))
def test_roundtrip(spec: DomainSpec, ver: str) -> None:
    cfg = parse_xl_config(render_xl_config(spec, ver))
    assert cfg["name"] == spec.name
    assert cfg["kernel"] == spec.kernel
    assert cfg.get("cmdline", "") == spec.cmdline
    assert cfg.get("ramdisk") == spec.ramdisk
    assert cfg["memory"] == spec.memory_mb
    assert cfg["vcpus"] == spec.vcpus
    assert (cfg["on_crash"], cfg["on_poweroff"], cfg["on_reboot"]) == (
        spec.on_crash,
        spec.on_poweroff,
        spec.on_reboot,
    )
    disks = [parse_spec_string(d) for d in cfg.get("disk", [])]  # type: ignore[union-attr]
    assert disks == [
        {"format": d.format, "vdev": d.vdev, "access": d.access, "target": d.target}
        for d in spec.disks
    ]
    vifs = [parse_spec_string(v) for v in cfg.get("vif", [])]  # type: ignore[union-attr]
    assert vifs == [{"bridge": v.bridge, **({"mac": v.mac} if v.mac else {})} for v in spec.vifs]


@given(
    specs(),
    st.sampled_from(["name", "kernel", "cmdline", "ramdisk", "disk", "vif"]),
    st.text(max_size=10),
    st.sampled_from([*INJECT, ",", "="]),
    st.text(max_size=10),
)
def test_every_injection_refused(
    spec: DomainSpec, field: str, pre: str, bad: str, post: str
) -> None:
    evil = pre + bad + post
    if field in ("name", "kernel", "cmdline", "ramdisk") and bad in ",=":
        # ',' and '=' are harmless inside a quoted scalar, and legal in cmdlines.
        if field == "name":
            with pytest.raises(RenderError, match=r"^name"):
                render_xl_config(dataclasses.replace(spec, name=evil), "4.17")
        return
    if field == "disk":
        spec = dataclasses.replace(spec, disks=(DiskSpec(target="/" + evil),))
        prefix = r"disks\[0\]\.target"
    elif field == "vif":
        spec = dataclasses.replace(spec, vifs=(VifSpec(bridge=evil),))
        prefix = r"vifs\[0\]\.bridge"
    else:
        spec = dataclasses.replace(spec, **{field: evil})
        prefix = field
    with pytest.raises(RenderError, match=f"^{prefix}"):
        render_xl_config(spec, "4.17")


# C0 controls, DEL and the C1 controls (U+0080-U+009F: U+009B is a one-character CSI, U+0085
# a line end to some readers) have no business in a config value; tab and Latin-1 text do.
@pytest.mark.parametrize("ch", ["\x01", "\x1b", "\x7f", "\x80", "\x85", "\x9b", "\x9f"])
@pytest.mark.parametrize("field", ["kernel", "cmdline", "name"])
def test_control_characters_refused(field: str, ch: str) -> None:
    with pytest.raises(RenderError, match=f"{field}: refusing control character U\\+{ord(ch):04X}"):
        render_xl_config(dataclasses.replace(BASE, **{field: f"a{ch}b"}), "4.17")


@pytest.mark.parametrize("text", ["a\tb", "caf\xe9", "\xa0nbsp", "\u00ff"])
def test_tab_and_printable_latin1_accepted(text: str) -> None:
    cfg = parse_xl_config(render_xl_config(dataclasses.replace(BASE, cmdline=text), "4.17"))
    assert cfg["cmdline"] == text


FULL = dataclasses.replace(
    BASE,
    ramdisk="/boot/initrd",
    disks=(DiskSpec(target="/images/root.img"),),
    vifs=(VifSpec(mac="00:16:3e:12:34:56"),),
)


def _rendered_keys(spec: DomainSpec, xen: str) -> list[str]:
    return list(parse_xl_config(render_xl_config(spec, xen)))


@pytest.mark.parametrize(
    ("spec", "xen"), [(FULL, "4.17"), (dataclasses.replace(FULL, mode="pvhv1"), "4.4")]
)
def test_extra_may_override_no_key_xenpvh_renders(spec: DomainSpec, xen: str) -> None:
    keys = _rendered_keys(spec, xen)
    # Every key of the rendered config, and the mode keys of either PVH generation.
    for key in {*keys, "pvh", "type", "extra", "cmdline", "builder"}:
        with pytest.raises(RenderError, match=f"extra.{key}: would override"):
            render_xl_config(dataclasses.replace(spec, extra={key: "x"}), xen)
    assert {"name", "kernel", "ramdisk", "memory", "vcpus", "disk", "vif", "on_crash"} <= set(keys)
