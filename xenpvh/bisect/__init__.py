"""Bisection: `git bisect run` over a scratch clone, each step a build + boot + stage
verdict of one plan point (xenpvh.bisect.driver)."""

from xenpvh.bisect.driver import Bisector, BisectResult, Step, StepOutcome

__all__ = ["BisectResult", "Bisector", "Step", "StepOutcome"]
