"""The servo's control logic, apart from ROS (ROS-free, unit-tested directly).

Each tick of the servo loop asks `ServoController.step(now_ns)` for one command. The controller
decides what to track (a scheduler trajectory or a streamed teleop target), when to hold and why
(`HoldReason`), and passes every command through the `SafetyEnvelope`. The node only converts
messages, calls the backend and publishes.

States: holding (with a reason) or following. Transitions:
  no robot state yet       -> NO_ROBOT_STATE until the first finite measured pose
  disabled                 -> DISABLED until enabled again (re-synced to the measured pose)
  no input since start     -> NO_INPUT_YET
  last input too old       -> WATCHDOG (watchdog_timeout_s)
  trajectory rejected/None -> NO_TRAJECTORY
  otherwise                -> following the target, clamped by the envelope
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from dp_ros.core.envelope import SafetyEnvelope
from dp_ros.core.interpolator import PoseTrajectory


class HoldReason(str, enum.Enum):
    NONE = ""                                   # following
    NO_ROBOT_STATE = "waiting for robot state"
    DISABLED = "disabled"
    NO_INPUT_YET = "no waypoints yet"
    WATCHDOG = "watchdog: no waypoints within timeout"
    NO_TRAJECTORY = "no future waypoints"


@dataclass
class ServoCommand:
    """One tick's output. `hold_started`: this tick began a hold (the backend stops here)."""
    pose: np.ndarray
    reason: HoldReason
    hold_started: bool = False
    clamped: bool = False

    @property
    def holding(self) -> bool:
        return self.reason is not HoldReason.NONE


@dataclass
class ServoCounts:
    ticks: int = 0
    clamped: int = 0
    rejected_inputs: int = 0
    holds: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ServoController:
    envelope: SafetyEnvelope
    period_s: float
    watchdog_timeout_s: float
    measured: np.ndarray | None = None       # latest finite measured TCP pose
    command: np.ndarray | None = None        # last commanded pose (None until the robot state is known)
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))
    trajectory: PoseTrajectory | None = None  # from the scheduler
    direct_target: np.ndarray | None = None   # streamed target from teleop
    last_input_ns: int | None = None
    enabled: bool = True
    reason: HoldReason = HoldReason.NO_ROBOT_STATE
    counts: ServoCounts = field(default_factory=ServoCounts)

    @property
    def holding(self) -> bool:
        return self.reason is not HoldReason.NONE

    # --- inputs
    def on_measured(self, pose) -> None:
        pose = np.asarray(pose, dtype=np.float64)
        if np.all(np.isfinite(pose)):
            self.measured = pose

    def on_waypoints(self, times, poses, now_ns: int) -> None:
        """A new trajectory replaces the old one and the teleop target. Raises ValueError (and
        holds) for one that PoseTrajectory refuses (unsorted times, NaN, bad shapes)."""
        self.direct_target = None
        self.last_input_ns = now_ns
        self.trajectory = None
        times, poses = np.asarray(times, dtype=np.int64), np.asarray(poses, dtype=np.float64)
        if not len(times):
            return
        if self.command is not None and times[0] > now_ns:
            # start from where the command is now, so the path ramps into the first waypoint
            # instead of stepping to it
            times = np.concatenate([[now_ns], times])
            poses = np.vstack([self.command, poses])
        try:
            self.trajectory = PoseTrajectory(times, poses)
        except ValueError:
            self.counts.rejected_inputs += 1
            raise

    def on_rejected_input(self, now_ns: int) -> None:
        """A waypoint message that could not be read: drop what was followed and hold."""
        self.counts.rejected_inputs += 1
        self.trajectory = self.direct_target = None
        self.last_input_ns = now_ns

    def on_target(self, pose, now_ns: int) -> bool:
        """A streamed target (teleop). Returns False (and ignores it) when it is not finite."""
        pose = np.asarray(pose, dtype=np.float64)
        if not np.all(np.isfinite(pose)):
            self.counts.rejected_inputs += 1
            return False
        self.direct_target = pose
        self.trajectory = None
        self.last_input_ns = now_ns
        return True

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = bool(enabled)
        self.trajectory = self.direct_target = None
        if self.enabled:
            # re-sync to where the arm really is: the next command starts from there, no jump
            self.command = None if self.measured is None else self.measured.copy()
            self.velocity = np.zeros(3)

    # --- the control step
    def _target(self, now_ns: int):
        """The pose to track now and HoldReason.NONE, or (None, why to hold)."""
        if not self.enabled:
            return None, HoldReason.DISABLED
        if self.last_input_ns is None:
            return None, HoldReason.NO_INPUT_YET
        if (now_ns - self.last_input_ns) * 1e-9 > self.watchdog_timeout_s:
            return None, HoldReason.WATCHDOG
        if self.direct_target is not None:
            return self.direct_target, HoldReason.NONE
        if self.trajectory is None:
            return None, HoldReason.NO_TRAJECTORY
        return self.trajectory(now_ns), HoldReason.NONE

    def step(self, now_ns: int) -> ServoCommand | None:
        """The command for this tick; None while no robot state has arrived."""
        if self.command is None:
            if self.measured is None:
                return None
            self.command = self.measured.copy()
        target, reason = self._target(now_ns)
        out = ServoCommand(self.command, reason)
        if target is None:
            out.hold_started = not self.holding
            self.counts.holds += int(out.hold_started)
            self.velocity = np.zeros(3)
        else:
            self.command, self.velocity, flags = self.envelope.clamp(target, self.command, self.velocity,
                                                                     self.period_s)
            out.pose, out.clamped = self.command, any(flags.values())
            self.counts.clamped += int(out.clamped)
        self.reason = reason
        self.counts.ticks += 1
        return out
