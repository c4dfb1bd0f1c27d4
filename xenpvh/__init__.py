"""xenpvh: proves Xen PVH guests boot, stage by stage."""

__version__ = "0.1.0"
