"""Hardware behind small interfaces (base.py); vendor libraries are imported only when a real
backend is constructed, so this package imports on machines without them."""

from .base import (
    CameraBackend,
    CameraStats,
    Frame,
    RobotControlBackend,
    RobotReceiveBackend,
    RobotStateSample,
    SpaceMouseBackend,
    SpaceMouseEvent,
)

__all__ = [
    "CameraBackend",
    "CameraStats",
    "Frame",
    "RobotControlBackend",
    "RobotReceiveBackend",
    "RobotStateSample",
    "SpaceMouseBackend",
    "SpaceMouseEvent",
]
