"""Linux PVH consoles for the checker tests, line by line from Linux's own printk formats
(the sources are cited in guestcfg/linux-pvh.toml): Debian's 6.1 kernel booting PVH with a
modular initramfs, so blkfront and netfront load after `Run /init`."""

from __future__ import annotations

# (stage whose window the line belongs to, the line).  The window of a stage is the lines
# printed while it is the stage in progress (linux-pvh order: early-init, ap-launch,
# root-mount, xenbus, login).
DEBIAN_61_PVH: list[tuple[str, str]] = [
    (
        "early-init",
        "[    0.000000] Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) "
        "(gcc-12 (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP "
        "PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)",
    ),
    ("early-init", "[    0.000000] Command line: console=hvc0 root=/dev/xvda1"),
    # x86_hyper_xen_hvm detects PVH guests too (enlighten_hvm.c): not evidence of HVM.
    ("early-init", "[    0.000000] Hypervisor detected: Xen HVM"),
    ("early-init", "[    0.000000] Xen version 4.17."),
    ("early-init", "[    0.000000] DMI not present or invalid."),
    ("early-init", "[    0.010000] Booting paravirtualized kernel on Xen PVH"),
    ("ap-launch", "[    0.051234] smp: Bringing up secondary CPUs ..."),
    ("ap-launch", "[    0.061234] x86: Booting SMP configuration:"),
    ("ap-launch", "[    0.071234] .... node  #0, CPUs:      #1"),
    ("ap-launch", "[    0.081234] smp: Brought up 1 node, 2 CPUs"),
    ("root-mount", "[    0.301234] Freeing unused kernel image (initmem) memory: 2908K"),
    ("root-mount", "[    0.912345] Run /init as init process"),
    (
        "xenbus",
        "[    1.000000] blkfront: xvda: flush diskcache: enabled; persistent grants: "
        "enabled; indirect descriptors: enabled; bounce buffer: enabled",
    ),
    ("xenbus", "[    1.010000]  xvda: xvda1"),
    ("xenbus", "[    1.100000] xen_netfront: Initialising Xen virtual ethernet driver"),
    (
        "login",
        "[    2.500000] EXT4-fs (xvda1): mounted filesystem with ordered data mode. "
        "Quota mode: none.",
    ),
    ("login", ""),
    ("login", "Debian GNU/Linux 12 debian hvc0"),
    ("login", ""),
    ("login", "debian login: "),
]

# The line that completes each stage in DEBIAN_61_PVH.
COMPLETING = {
    "early-init": "Booting paravirtualized kernel on Xen PVH",
    "ap-launch": "smp: Brought up 1 node, 2 CPUs",
    "root-mount": "Run /init as init process",
    "xenbus": "blkfront: xvda:",
    "login": "debian login:",
}


def lines() -> list[str]:
    return [line for _, line in DEBIAN_61_PVH]


def oops(frames: list[str], *, t: str = "5.000000") -> list[str]:
    """An x86-64 6.1 Oops (arch/x86/mm/fault.c, arch/x86/kernel/dumpstack.c) whose call
    trace holds `frames` ("name+0x1f/0x80")."""
    head = [
        "BUG: kernel NULL pointer dereference, address: 0000000000000008",
        "#PF: supervisor read access in kernel mode",
        "#PF: error_code(0x0000) - not-present page",
        "PGD 0 P4D 0 ",
        "Oops: 0000 [#1] PREEMPT SMP NOPTI",
        "CPU: 0 PID: 1 Comm: swapper/0 Not tainted 6.1.0-18-amd64 #1  Debian 6.1.76-1",
        f"RIP: 0010:{frames[0]}",
        "Code: 48 8b 47 08 48 85 c0 74 0b 48 8b 00 c3 cc cc cc cc 31 c0 c3 cc cc cc cc",
        "RSP: 0018:ffffc9000001bd80 EFLAGS: 00010246",
        "RAX: 0000000000000000 RBX: ffff888003a1c000 RCX: 0000000000000000",
        "Call Trace:",
        " <TASK>",
    ]
    tail = [
        " </TASK>",
        "Modules linked in: xen_netfront xen_blkfront ext4 crc16 mbcache jbd2",
        "CR2: 0000000000000008",
        "---[ end trace 0000000000000000 ]---",
        "Kernel panic - not syncing: Fatal exception",
    ]
    return [f"[    {t}] {x}" for x in head + [f" {f}" for f in frames[1:]] + tail]


# Frames of generic init code only: a crash no stage's code is named in.
GENERIC_FRAMES = [
    "kmem_cache_alloc+0x2d/0x2a0",
    "do_one_initcall+0x46/0x1d0",
    "kernel_init_freeable+0x1c3/0x21f",
    "kernel_init+0x16/0x130",
    "ret_from_fork+0x1f/0x30",
]
BLKFRONT_FRAMES = [
    "blkif_interrupt+0x41/0x3c0 [xen_blkfront]",
    "blkfront_connect+0x2bd/0x4f0 [xen_blkfront]",
    "blkback_changed+0x7a/0x110 [xen_blkfront]",
    "xenwatch_thread+0x9b/0x190",
    "kthread+0xd7/0x100",
]
