"""Guest profiles and their stage pattern sets, loaded from `guestcfg/` (pure data)."""

from xenpvh.profile.loader import guestcfg_dir, list_profiles, load_profile, parse_profile
from xenpvh.profile.model import GUEST_STAGES, STAGE_ORDER, Pattern, Profile, StageSpec

__all__ = [
    "GUEST_STAGES",
    "STAGE_ORDER",
    "Pattern",
    "Profile",
    "StageSpec",
    "guestcfg_dir",
    "list_profiles",
    "load_profile",
    "parse_profile",
]
