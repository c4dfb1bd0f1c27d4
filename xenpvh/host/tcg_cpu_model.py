"""The extra CPU model a nested (QEMU/TCG) dom0 needs for libvirt's libxl driver."""

from __future__ import annotations

from pathlib import Path

from xenpvh.errors import BrokenError

# libvirt 9.0 (Debian 12) refuses to load its libxl driver when no CPU model of its
# cpu_map decodes the host's features ("Cannot find suitable CPU model for given data").
# Under QEMU/TCG with SVM that is always the case: TCG has no VME and Xen hides SYSENTER
# on AMD, and every x86 model in libvirt 9.0's map needs one of them.  A dom0 of that kind
# needs this extra model in /usr/share/libvirt/cpu_map/, included from its index.xml after
# x86_features.xml.  Kept apart from the libvirt driver: building the image must not need
# libvirt-python (an optional extra).
TCG_CPU_MODEL_FILE = "x86_xenpvh-tcg.xml"
TCG_CPU_MODEL_XML = """\
<cpus>
  <!-- xenpvh: QEMU/TCG qemu64+svm under Xen; see xenpvh/host/tcg_cpu_model.py -->
  <model name='xenpvh-tcg'>
    <decode host='on' guest='off'/>
    <feature name='fpu'/>
    <feature name='de'/>
    <feature name='pse'/>
    <feature name='tsc'/>
    <feature name='msr'/>
    <feature name='pae'/>
    <feature name='mce'/>
    <feature name='cx8'/>
    <feature name='apic'/>
    <feature name='mtrr'/>
    <feature name='pge'/>
    <feature name='mca'/>
    <feature name='cmov'/>
    <feature name='pat'/>
    <feature name='pse36'/>
    <feature name='clflush'/>
    <feature name='mmx'/>
    <feature name='fxsr'/>
    <feature name='sse'/>
    <feature name='sse2'/>
    <feature name='pni'/>
    <feature name='cx16'/>
    <feature name='syscall'/>
    <feature name='nx'/>
    <feature name='lm'/>
  </model>
</cpus>
"""


def install_tcg_cpu_model(root: Path) -> None:
    """libvirtd's libxl driver refuses to load on a dom0 whose CPU matches no model in
    its map (QEMU/TCG's qemu64+svm), so the nested image, unlike a lab box, carries one
    more model (see the libvirt driver, xenpvh/toolstack/libvirt.py)."""
    cpu_map = root / "usr/share/libvirt/cpu_map"
    index = cpu_map / "index.xml"
    if not index.is_file():
        raise BrokenError(f"{index} is missing: is libvirt-daemon in the image?")
    (cpu_map / TCG_CPU_MODEL_FILE).write_text(TCG_CPU_MODEL_XML)
    text = index.read_text()
    include = f"    <include filename='{TCG_CPU_MODEL_FILE}'/>"
    if include in text:
        return
    after = "    <include filename='x86_features.xml'/>"
    if after not in text:
        raise BrokenError(f"{index} has no {after.strip()!r} line to add the TCG model after")
    index.write_text(text.replace(after, f"{after}\n{include}", 1))


__all__ = ["TCG_CPU_MODEL_FILE", "TCG_CPU_MODEL_XML", "install_tcg_cpu_model"]
