"""Plans: a nightly matrix of boot points (profile x vcpus x memory x toolstack x devices)
x Xen builds x guest kernels, loaded from TOML (`guestcfg/plans/*.toml`)."""

from xenpvh.plan.loader import load_plan, parse_plan, plans_dir
from xenpvh.plan.model import GuestKernel, Plan, PlanPoint, XenBuild

__all__ = ["GuestKernel", "Plan", "PlanPoint", "XenBuild", "load_plan", "parse_plan", "plans_dir"]
