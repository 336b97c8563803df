"""Simulated world (tasks, UR5, cameras): plays the hardware's part; no ROS imports."""

from .pusht import PushTTask
from .reach import ReachTask
from .world import SimUR5, SimWorld, TaskPlaneMapping

__all__ = ["PushTTask", "ReachTask", "SimUR5", "SimWorld", "TaskPlaneMapping"]
