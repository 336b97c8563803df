"""Small hardware interfaces: the nodes code against these, real and scripted backends fill them.

Poses are numpy (7,) [x, y, z, qx, qy, qz, qw] in the robot base frame, metres. Each backend's
docstring states which clock its times are in.
"""

import abc
from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class Frame:
    capture_time_s: float  # seconds, clock stated by the backend
    image: np.ndarray  # uint8 HxWx3 RGB
    frame_number: int


@dataclass
class CameraStats:
    frames: int = 0  # frames delivered by read()
    dropped: int = 0  # frames the device produced that never reached read() (frame-number gaps)


@dataclass
class RobotStateSample:
    time_s: float  # seconds, clock stated by the backend
    tcp_pose: np.ndarray  # (7,)
    joints: np.ndarray  # (6,) radians
    robot_time_s: Optional[float] = None  # the controller's own timestamp, when it has one


@dataclass
class SpaceMouseEvent:
    translation: np.ndarray  # (3,) in [-1, 1]
    rotation: np.ndarray  # (3,) in [-1, 1]
    buttons: tuple = ()  # tuple[bool, ...], True = pressed
    time_s: float = field(default=0.0)  # time.monotonic() when the event was read


class CameraBackend(abc.ABC):
    @abc.abstractmethod
    def start(self):
        """Open the device and start streaming."""

    @abc.abstractmethod
    def read(self, timeout_s: float) -> Optional[Frame]:
        """The next frame, or None if none arrived within timeout_s."""

    @abc.abstractmethod
    def stop(self):
        """Stop streaming and release the device (idempotent)."""

    @property
    @abc.abstractmethod
    def stats(self) -> CameraStats:
        ...


class RobotReceiveBackend(abc.ABC):
    @abc.abstractmethod
    def read(self) -> RobotStateSample:
        """The latest robot state."""

    def fault(self) -> Optional[str]:
        """Why the robot cannot be trusted or moved right now (protective / emergency stop,
        connection lost, controller clock frozen, ...), or None when all is well. Polled by the
        nodes each tick: must be cheap."""
        return None

    def close(self):
        """Release the connection (idempotent)."""


class RobotControlBackend(abc.ABC):
    @abc.abstractmethod
    def servo(self, pose: np.ndarray, dt_s: float):
        """Command one servo step towards pose, meant to last dt_s seconds."""

    def fault(self) -> Optional[str]:
        """Why commands are not being executed (program stopped, protective / emergency stop,
        a servo call refused, connection lost), or None. Polled by the servo loop each tick:
        must be cheap. A fault latches in the servo until the operator resets it."""
        return None

    def unanswered(self, seconds: float) -> str:
        """The fault latched when a call to this backend has not returned for `seconds` (the servo
        node's watch on its loop): what the operator should check."""
        return f"the robot backend has not answered for {seconds:.1f} s"

    def recover(self) -> None:
        """Make the robot accept commands again after a fault (e.g. re-upload the control script);
        called only on the operator's reset. Raises RuntimeError saying what is still wrong."""

    @abc.abstractmethod
    def hold(self):
        """Leave servo mode and decelerate to a standstill; servo() may resume later."""

    @abc.abstractmethod
    def stop(self):
        """Hold, then shut the control connection down (idempotent)."""


class SpaceMouseBackend(abc.ABC):
    @abc.abstractmethod
    def read(self, timeout_s: float) -> Optional[SpaceMouseEvent]:
        """The next event (motion or button), or None if none within timeout_s."""

    @abc.abstractmethod
    def close(self):
        """Release the device (idempotent)."""
