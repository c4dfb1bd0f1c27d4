"""Toolstack drivers (xl, later libvirt), console capture and XenStore, all via a Host."""

from xenpvh.toolstack.base import Domain, Prepared, Toolstack
from xenpvh.toolstack.console import ConsoleCapture, ConsoleSource
from xenpvh.toolstack.registry import get_toolstack, register
from xenpvh.toolstack.xenstore import DeviceState, XenStore

__all__ = [
    "ConsoleCapture",
    "ConsoleSource",
    "DeviceState",
    "Domain",
    "Prepared",
    "Toolstack",
    "XenStore",
    "get_toolstack",
    "register",
]
