"""Provisioning with the project's ansible roles: a lab box over ssh, or the nested host's
image tree through the chroot connection (`roles`), by one `ansible-playbook` run each
(`playbook`), whose structured output says what happened (`events`)."""

from xenpvh.provision.events import PlaybookEvents, RecapCounts, TaskFailed, TaskStarted
from xenpvh.provision.playbook import ANSIBLE_DIR, PlaybookRun, ansible_playbook, playbook_env
from xenpvh.provision.roles import (
    CHROOT_CONNECTION,
    ProvisionResult,
    apply_roles_to_chroot,
    chroot_inventory,
    ssh_inventory,
)

__all__ = [
    "ANSIBLE_DIR",
    "CHROOT_CONNECTION",
    "PlaybookEvents",
    "PlaybookRun",
    "ProvisionResult",
    "RecapCounts",
    "TaskFailed",
    "TaskStarted",
    "ansible_playbook",
    "apply_roles_to_chroot",
    "chroot_inventory",
    "playbook_env",
    "ssh_inventory",
]
