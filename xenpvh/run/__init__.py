"""One boot run of one profile point on one host (see boot.py for the state machine)."""

from xenpvh.run.boot import BootRun, Timings, new_run_id
from xenpvh.run.events import DeviceCheckEvent, RunState, RunStateEvent

__all__ = ["BootRun", "DeviceCheckEvent", "RunState", "RunStateEvent", "Timings", "new_run_id"]
