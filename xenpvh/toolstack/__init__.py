"""Toolstack drivers (xl, later libvirt), console capture and XenStore, all via a Host."""

from xenpvh.toolstack.base import Domain, Prepared, Toolstack, get_toolstack
from xenpvh.toolstack.console import ConsoleCapture, ConsoleSource
from xenpvh.toolstack.xenstore import DeviceState, XenStore
from xenpvh.toolstack.xl import Xl

__all__ = [
    "ConsoleCapture",
    "ConsoleSource",
    "DeviceState",
    "Domain",
    "Prepared",
    "Toolstack",
    "XenStore",
    "Xl",
    "get_toolstack",
]
