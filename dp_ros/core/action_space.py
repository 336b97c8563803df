"""Mapping between the policy's action vectors and robot TCP poses (position control).

kinds:
  "xy"          action (x, y); z and orientation come from fixed_pose (planar tasks, Push-T).
  "xyz"         action (x, y, z); orientation from fixed_pose.
  "xyz_rotvec"  action (x, y, z, rx, ry, rz), rotation vector as UR/RTDE uses it.

to_pose / from_pose accept one action (dim,) or a batch (..., dim) and return (..., 7) / (..., dim).
Non-finite input raises ValueError: a NaN action must never reach the robot.

Note for "xyz_rotvec": a rotation vector is discontinuous where the angle crosses pi (the UR
TCP pointing straight down is near that). from_pose returns scipy's canonical rotvec (angle in
[0, pi]); training data must be encoded with the same function.
"""

from __future__ import annotations

import numpy as np

from dp_ros.core.transforms import as_pose, normalize_quat, quat_to_rotvec, rotvec_to_quat

KINDS = {"xy": 2, "xyz": 3, "xyz_rotvec": 6}


class ActionSpace:
    def __init__(self, kind: str, fixed_pose=None):
        if kind not in KINDS:
            raise ValueError(f"unknown action space {kind!r} (expected one of {sorted(KINDS)})")
        self.kind = kind
        self.dim = KINDS[kind]
        if fixed_pose is None:
            if kind != "xyz_rotvec":
                raise ValueError(f"action space {kind!r} needs fixed_pose (7,) for the coordinates "
                                 "it does not command")
            self.fixed_pose = None
        else:
            self.fixed_pose = as_pose(fixed_pose, "fixed_pose")

    @property
    def position_dims(self) -> int:
        """How many leading action components are a position (m)."""
        return min(self.dim, 3)

    def __repr__(self):
        return f"ActionSpace({self.kind!r}, dim={self.dim})"

    def to_pose(self, action) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64)
        if a.shape[-1:] != (self.dim,):
            raise ValueError(f"{self.kind} action must have last dimension {self.dim}, got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError("action contains NaN or inf")
        batch = a.shape[:-1]
        if self.kind == "xyz_rotvec":
            return np.concatenate([a[..., :3], rotvec_to_quat(a[..., 3:])], axis=-1)
        out = np.broadcast_to(self.fixed_pose, batch + (7,)).copy()
        out[..., :self.dim] = a
        return out

    def from_pose(self, pose) -> np.ndarray:
        p = np.asarray(pose, dtype=np.float64)
        if p.shape[-1:] != (7,):
            raise ValueError(f"pose must have last dimension 7, got {p.shape}")
        if not np.all(np.isfinite(p)):
            raise ValueError("pose contains NaN or inf")
        if self.kind == "xyz_rotvec":
            return np.concatenate([p[..., :3], quat_to_rotvec(normalize_quat(p[..., 3:]))], axis=-1)
        return p[..., :self.dim].copy()
