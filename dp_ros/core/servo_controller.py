"""The servo's control logic, apart from ROS (ROS-free, unit-tested directly).

Each tick of the servo loop asks `ServoController.step(now_ns)` for one command. The controller
decides what to track, when to hold and why (`HoldReason`), and passes every command through
the `SafetyEnvelope`. The node only converts messages, calls the backend and publishes.

Sources: exactly one commanding source is active, "policy" (waypoint trajectories from the
scheduler) or "teleop" (streamed targets); input from the other one is counted, never executed.
`select_source` switches, explicitly.

Holds, in order of precedence:
  NO_ROBOT_STATE   until the first finite measured pose (no command at all before it)
  ESTOP            latched by estop(); cleared only by reset()
  FAULT            latched by fault(reason) (robot or graph fault, e.g. the measured pose going
                   stale while following); cleared only by reset() once the cause is gone
  DISABLED         set_enabled(False), and after reset() until enabled again
  NO_INPUT_YET     the active source has sent nothing since (re)start
  WATCHDOG         its last input is older than watchdog_timeout_s
  NO_TRAJECTORY    its last trajectory was empty or refused
A hold never stops the command dead: it brakes at max_lin_acc toward the point where the arm
naturally stops (action BRAKE, still sent to the robot) and only then asks the robot to stop
(action STOP, once); a stopped hold sends nothing (action NONE). Following resumes from a fresh
measured pose with zero velocity when the arm had stopped (enable, reset then enable, new input
after a watchdog hold), or continues from the command when it was still braking.

Move to start: with a start pose configured, move_to_start() (arm enabled, stopped, no latch) drives
the command from the measured pose to it through a slower copy of the envelope (start_move_speed,
rotation at the same fraction of max_ang_speed; the same box, acceleration and orientation limit),
ahead of any source's input, with status "moving to start". It ends held at the pose (inputs that
arrived meanwhile are dropped: the arm waits there for fresh ones); an e-stop, a fault, disabling
or a reset stops it, braking as any hold. `start_move` says how the last one went.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from dp_ros.core.envelope import SafetyEnvelope
from dp_ros.core.interpolator import PoseTrajectory
from dp_ros.core.transforms import normalize_quat, quat_angle

SOURCES = ("policy", "teleop")
STOPPED_SPEED = 1e-4   # m/s: below this a braking hold counts as stopped
AT_START_M, AT_START_RAD = 1e-6, 1e-6   # the move to start has arrived (the envelope lands exactly)
MOVING_TO_START = "moving to start"


class HoldReason(str, enum.Enum):
    NONE = ""                                   # following
    NO_ROBOT_STATE = "waiting for robot state"
    ESTOP = "emergency stop (latched: reset to clear)"
    FAULT = "fault (latched: reset to clear)"
    DISABLED = "disabled"
    NO_INPUT_YET = "no waypoints yet"
    WATCHDOG = "watchdog: no waypoints within timeout"
    NO_TRAJECTORY = "no future waypoints"


class Action(str, enum.Enum):
    SERVO = "servo"     # send the pose (following, or braking into a hold)
    STOP = "stop"       # the arm has stopped: the robot leaves servo mode (once per hold)
    NONE = "none"       # holding still: nothing to send


@dataclass
class ServoCommand:
    pose: np.ndarray
    reason: HoldReason
    action: Action
    clamped: bool = False
    resynced: bool = False        # this tick's pose was re-synced to the measured one (a jump back to reality)

    @property
    def holding(self) -> bool:
        return self.reason is not HoldReason.NONE


@dataclass
class ServoCounts:
    ticks: int = 0
    clamped: int = 0
    rejected_inputs: int = 0      # unreadable, wrong frame, unsorted, past-dated, oversized, NaN
    ignored_inputs: int = 0       # from the inactive source, or from a publisher that is not the source
    holds: int = 0
    latches: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ServoController:
    envelope: SafetyEnvelope
    period_s: float
    watchdog_timeout_s: float
    max_measured_age_s: float = 0.25
    source: str = "policy"
    measured: np.ndarray | None = None        # latest finite measured TCP pose
    measured_ns: int | None = None            # when it arrived
    command: np.ndarray | None = None         # last commanded pose (None until the robot state is known)
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))
    trajectory: PoseTrajectory | None = None  # from the policy source
    direct_target: np.ndarray | None = None   # from the teleop source
    last_input_ns: int | None = None
    enabled: bool = True
    estopped: bool = False
    fault_reason: str = ""                    # latched fault, "" = none
    start_pose: np.ndarray | None = None      # where move_to_start() goes (None: no start pose configured)
    start_envelope: SafetyEnvelope | None = None   # the slower limits of that move
    moving_to_start: bool = False
    start_moves: int = 0                      # moves to start begun
    start_move: str = ""                      # the last one: "" none yet, "moving", "done", "stopped: <why>"
    reason: HoldReason = HoldReason.NO_ROBOT_STATE
    counts: ServoCounts = field(default_factory=ServoCounts)
    _hold_target: np.ndarray | None = None    # where the braking hold stops
    _stopped: bool = True                     # the robot was told to stop (or never moved)

    @classmethod
    def from_params(cls, p: dict) -> "ServoController":
        """As ur5_servo_node builds it from its parameters (also the lockstep evaluator's servo)."""
        limit = (p["orientation_reference"], p["orientation_limit_rad"]) if p["orientation_limit_rad"] > 0 else None
        envelope = SafetyEnvelope(p["workspace_min"], p["workspace_max"], p["max_lin_speed"], p["max_lin_acc"],
                                  p["max_ang_speed"], orientation_limit=limit)
        start_pose = start_envelope = None
        if p.get("move_to_start"):
            speed = float(p["start_move_speed"])
            if speed > p["max_lin_speed"]:
                raise ValueError(f"start_move_speed {speed:g} m/s is above max_lin_speed {p['max_lin_speed']:g} m/s")
            start_pose = p["start_pose"]
            start_envelope = SafetyEnvelope(p["workspace_min"], p["workspace_max"], speed, p["max_lin_acc"],
                                            p["max_ang_speed"] * speed / p["max_lin_speed"], orientation_limit=limit)
        return cls(envelope, 1.0 / p["rate_hz"], p["watchdog_timeout_s"], p["max_measured_age_s"],
                   source=p["source"], start_pose=start_pose, start_envelope=start_envelope)

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.start_pose is not None:
            self.start_pose = self._checked_start_pose(self.start_pose)
            self.start_envelope = self.start_envelope or self.envelope

    def _checked_start_pose(self, pose) -> np.ndarray:
        """The start pose with a unit quaternion; ValueError when it is outside the envelope (a start
        pose the servo would clamp is a configuration error, said at start-up, not a surprise later)."""
        pose = np.asarray(pose, dtype=np.float64).reshape(-1)
        if pose.shape != (7,) or not np.all(np.isfinite(pose)) or np.linalg.norm(pose[3:]) < 1e-6:
            raise ValueError(f"start_pose must be x y z qx qy qz qw with a non-zero quaternion, got {pose.tolist()}")
        pose = np.concatenate([pose[:3], normalize_quat(pose[3:])])
        env = self.envelope
        if np.any(pose[:3] < env.workspace_min) or np.any(pose[:3] > env.workspace_max):
            raise ValueError(f"start_pose position {pose[:3].tolist()} is outside the workspace box "
                             f"{env.workspace_min.tolist()}..{env.workspace_max.tolist()}")
        if not env.contains(pose):
            raise ValueError(f"start_pose orientation {pose[3:].tolist()} is "
                             f"{quat_angle(env.orientation_ref, pose[3:]):.3f} rad from orientation_reference, "
                             f"beyond orientation_limit_rad {env.orientation_max_angle:g}")
        return pose

    @property
    def holding(self) -> bool:
        return self.reason is not HoldReason.NONE

    @property
    def latched(self) -> bool:
        return self.estopped or bool(self.fault_reason)

    # --- inputs
    def on_measured(self, pose, now_ns: int) -> None:
        pose = np.asarray(pose, dtype=np.float64)
        if pose.shape == (7,) and np.all(np.isfinite(pose)):
            self.measured, self.measured_ns = pose, int(now_ns)

    def measured_fresh(self, now_ns: int) -> bool:
        return self.measured_ns is not None and (now_ns - self.measured_ns) * 1e-9 <= self.max_measured_age_s

    def _accept(self, source: str) -> bool:
        if source != self.source:
            self.counts.ignored_inputs += 1
            return False
        return True

    def on_waypoints(self, times, poses, now_ns: int, source: str = "policy") -> None:
        """A new trajectory replaces the old one. Raises ValueError (and holds) for one that
        PoseTrajectory refuses (unsorted times, NaN, bad shapes)."""
        if not self._accept(source):
            return
        self.last_input_ns = now_ns
        self.trajectory = None
        times, poses = np.asarray(times, dtype=np.int64), np.asarray(poses, dtype=np.float64)
        if not len(times):
            return
        if self.command is not None and times[0] > now_ns:
            # start from where the command is now, so the path ramps into the first waypoint
            # instead of stepping to it; after a stop, from where the arm is (step resumes there):
            # it may have been moved meanwhile (by hand, a reset), and the old command would
            # first pull it back
            start = self.measured if self._stopped and self.measured is not None else self.command
            times = np.concatenate([[now_ns], times])
            poses = np.vstack([start, poses])
        try:
            self.trajectory = PoseTrajectory(times, poses)
        except ValueError:
            self.counts.rejected_inputs += 1
            raise

    def on_rejected_input(self, now_ns: int, source: str = "policy") -> None:
        """A message of the active source that could not be used: drop what was followed and hold."""
        if not self._accept(source):
            return
        self.counts.rejected_inputs += 1
        self.trajectory = self.direct_target = None
        self.last_input_ns = now_ns

    def on_target(self, pose, now_ns: int, source: str = "teleop") -> bool:
        """A streamed target. Returns False (and ignores it) when it is not finite or not from
        the active source."""
        if not self._accept(source):
            return False
        pose = np.asarray(pose, dtype=np.float64)
        if pose.shape != (7,) or not np.all(np.isfinite(pose)):
            self.counts.rejected_inputs += 1
            return False
        self.direct_target = pose
        self.last_input_ns = now_ns
        return True

    # --- operator
    def select_source(self, source: str) -> None:
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        if source != self.source:
            self.source = source
            self.trajectory = self.direct_target = self.last_input_ns = None

    def set_enabled(self, enabled: bool, now_ns: int) -> str:
        """Returns "" or why enabling is refused (latched, or no fresh robot state to start from)."""
        if enabled:
            if self.latched:
                return f"{self._latch_text()}: reset first"
            if not self.measured_fresh(now_ns):
                return "no fresh robot state to start from"
        else:
            self._stop_start_move("disabled")
        self.enabled = bool(enabled)
        self.trajectory = self.direct_target = self.last_input_ns = None
        return ""

    def estop(self) -> None:
        self.estopped = True
        self._stop_start_move("emergency stop")
        self.trajectory = self.direct_target = None

    def fault(self, reason: str) -> None:
        """Latch a fault (first reason kept)."""
        if not self.fault_reason:
            self.fault_reason = str(reason) or "fault"
            self.counts.latches += 1
        self._stop_start_move(f"fault: {self.fault_reason}")
        self.trajectory = self.direct_target = None

    def reset(self, now_ns: int, active_fault: str | None = None) -> str:
        """Clear the latch when its cause is gone; the servo stays disabled until enabled.
        Returns "" or why not (active_fault: a fault still reported by the robot)."""
        if active_fault:
            return f"still faulted: {active_fault}"
        if not self.measured_fresh(now_ns):
            return "no fresh robot state"
        if self.estopped:
            self.counts.latches += 1
        self._stop_start_move("reset")
        self.estopped, self.fault_reason = False, ""
        self.enabled = False
        self.trajectory = self.direct_target = self.last_input_ns = None
        return ""

    def move_to_start(self, now_ns: int) -> str:
        """Begin the slow move to start_pose. Returns "" or why not: no start pose configured, a
        latch, disabled, no fresh robot state, or the arm still moving (it starts from rest, from
        the measured pose, so that the slower speed limit never asks for a jump in velocity)."""
        if self.start_pose is None:
            return "no start pose configured (move_to_start is false)"
        if self.latched:
            return f"{self._latch_text()}: reset first"
        if not self.enabled:
            return "disabled: enable the servo first"
        if not self.measured_fresh(now_ns):
            return "no fresh robot state to start from"
        if not self._stopped:
            return f"the arm is moving ({self.status()}): disable the servo or wait until it holds"
        self.moving_to_start = True
        self.start_moves += 1
        self.start_move = "moving"
        self.trajectory = self.direct_target = self.last_input_ns = None
        return ""

    def _stop_start_move(self, why: str) -> None:
        if self.moving_to_start:
            self.moving_to_start = False
            self.start_move = f"stopped: {why}"

    def _at_start(self) -> bool:
        return (float(np.linalg.norm(self.command[:3] - self.start_pose[:3])) <= AT_START_M
                and float(np.linalg.norm(self.velocity)) < STOPPED_SPEED
                and quat_angle(self.command[3:], self.start_pose[3:]) <= AT_START_RAD)

    def _latch_text(self) -> str:
        return "emergency stop" if self.estopped else f"fault: {self.fault_reason}"

    # --- the control step
    def _target(self, now_ns: int):
        """The pose to track now and HoldReason.NONE, or (None, why to hold)."""
        if self.estopped:
            return None, HoldReason.ESTOP
        if self.fault_reason:
            return None, HoldReason.FAULT
        if not self.enabled:
            return None, HoldReason.DISABLED
        if self.moving_to_start:
            return self.start_pose, HoldReason.NONE
        if self.last_input_ns is None:
            return None, HoldReason.NO_INPUT_YET
        if (now_ns - self.last_input_ns) * 1e-9 > self.watchdog_timeout_s:
            return None, HoldReason.WATCHDOG
        if self.source == "teleop":
            return self.direct_target, HoldReason.NONE
        if self.trajectory is None:
            return None, HoldReason.NO_TRAJECTORY
        return self.trajectory(now_ns), HoldReason.NONE

    def _stop_point(self) -> np.ndarray:
        """Where the command stops when braking at max_lin_acc from its velocity."""
        speed = float(np.linalg.norm(self.velocity))
        out = self.command.copy()
        if speed > 0:
            out[:3] += self.velocity * (speed / (2.0 * self.envelope.max_lin_acc))
        return out

    def step(self, now_ns: int) -> ServoCommand | None:
        """The command for this tick; None while no robot state has arrived."""
        if self.command is None:
            if self.measured is None:
                return None
            self.command = self.measured.copy()
        if self.moving_to_start and self._at_start():
            # arrived and at rest: hold here; what the source sent meanwhile is not followed
            self.moving_to_start, self.start_move = False, "done"
            self.trajectory = self.direct_target = self.last_input_ns = None
        if not self.latched and self.reason is HoldReason.NONE and not self.measured_fresh(now_ns):
            self.fault(f"robot state stale: no measured pose for more than {self.max_measured_age_s:g} s")
        target, reason = self._target(now_ns)
        if target is not None and self._stopped and not self.measured_fresh(now_ns):
            self.fault(f"robot state stale: no measured pose for more than {self.max_measured_age_s:g} s")
            target, reason = self._target(now_ns)
        resynced = False
        if target is None:
            if not self.holding or self._hold_target is None:
                self._hold_target = self._stop_point()
                self.counts.holds += int(not self.holding)
            if self._stopped:
                action = Action.NONE
            else:
                self.command, self.velocity, _ = self.envelope.clamp(self._hold_target, self.command,
                                                                     self.velocity, self.period_s)
                if float(np.linalg.norm(self.velocity)) < STOPPED_SPEED:
                    self.velocity = np.zeros(3)
                    action, self._stopped = Action.STOP, True
                else:
                    action = Action.SERVO
            out = ServoCommand(self.command, reason, action)
        else:
            if self._stopped:
                # resume from where the arm really is (moved by hand, or its tracking lag)
                resynced = not np.array_equal(self.command, self.measured)
                self.command, self.velocity = self.measured.copy(), np.zeros(3)
            self._hold_target = None
            envelope = self.start_envelope if self.moving_to_start else self.envelope
            self.command, self.velocity, flags = envelope.clamp(target, self.command, self.velocity, self.period_s)
            self._stopped = False
            out = ServoCommand(self.command, reason, Action.SERVO, clamped=any(flags.values()), resynced=resynced)
            self.counts.clamped += int(out.clamped)
        self.reason = reason
        self.counts.ticks += 1
        return out

    def fault_status(self) -> str:
        """The latched fault as status() says it, also before a step has made it the hold reason."""
        return f"fault: {self.fault_reason} (latched: reset to clear)"

    def status(self) -> str:
        """For logs and /servo/state: the hold reason with the latched fault's cause."""
        if self.reason is HoldReason.FAULT:
            return self.fault_status()
        if self.reason is HoldReason.NONE and self.moving_to_start:
            return MOVING_TO_START
        return self.reason.value or f"following {self.source}"
