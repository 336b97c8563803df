"""SpaceMouse twist -> TCP target pose, as robot-learning teleop setups do it.

- Deadzone per axis, then translation velocity = axis * max_speed (m/s), rotation velocity =
  axis * max_rot_speed (rad/s, about the base frame's axes).
- Planar by default: the target moves in the table plane only (z and orientation locked), the
  usual mode for Push-T style tasks. While button 0 is held, height and rotation unlock.
- The target is clipped to the workspace box, so what is recorded as the action is a pose the
  servo can actually reach (not one the envelope would silently clamp).
- Button 1's rising edge is reported as a toggle (start/stop recording).
"""

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from dp_ros.core.transforms import as_pose


@dataclass
class TeleopStep:
    target: np.ndarray        # (7,) pose
    unlocked: bool            # height/rotation unlocked this step
    toggle_record: bool       # button 1 pressed (rising edge)


class TeleopMapper:
    def __init__(self, workspace_min, workspace_max, max_speed_m_s=0.25, max_rot_speed_rad_s=0.6,
                 deadzone=0.05, planar=True):
        self.lo = np.asarray(workspace_min, dtype=float)
        self.hi = np.asarray(workspace_max, dtype=float)
        if self.lo.shape != (3,) or self.hi.shape != (3,) or np.any(self.lo >= self.hi):
            raise ValueError("workspace_min/max must be 3-vectors with min < max")
        if max_speed_m_s <= 0 or max_rot_speed_rad_s < 0 or not 0 <= deadzone < 1:
            raise ValueError("need max_speed > 0, max_rot_speed >= 0, 0 <= deadzone < 1")
        self.max_speed = float(max_speed_m_s)
        self.max_rot_speed = float(max_rot_speed_rad_s)
        self.deadzone = float(deadzone)
        self.planar = bool(planar)
        self.target = None
        self._last_buttons = ()

    def reset(self, pose):
        """Start from where the arm is (after a reset or when the operator takes over)."""
        pose = as_pose(pose)
        self.target = pose.copy()
        self.target[:3] = np.clip(self.target[:3], self.lo, self.hi)

    def _dead(self, v):
        v = np.clip(np.nan_to_num(np.asarray(v, dtype=float), nan=0.0, posinf=0.0, neginf=0.0), -1.0, 1.0)
        # rescale outside the deadzone so small deliberate motions are still possible
        return np.sign(v) * np.maximum(0.0, (np.abs(v) - self.deadzone) / (1.0 - self.deadzone))

    def step(self, translation, rotation, buttons, dt_s) -> TeleopStep:
        if self.target is None:
            raise RuntimeError("TeleopMapper.reset(pose) must be called before step()")
        buttons = tuple(bool(b) for b in buttons)
        pressed = [b and not (i < len(self._last_buttons) and self._last_buttons[i]) for i, b in enumerate(buttons)]
        self._last_buttons = buttons
        unlocked = (not self.planar) or (len(buttons) > 0 and buttons[0])
        vel = self._dead(translation) * self.max_speed
        if not unlocked:
            vel[2] = 0.0
        target = self.target.copy()
        target[:3] = np.clip(target[:3] + vel * dt_s, self.lo, self.hi)
        if unlocked and self.max_rot_speed > 0:
            omega = self._dead(rotation) * self.max_rot_speed
            if np.any(omega):
                rot = Rotation.from_rotvec(omega * dt_s) * Rotation.from_quat(target[3:])
                target[3:] = rot.as_quat()
        self.target = target
        return TeleopStep(target=target.copy(), unlocked=unlocked,
                          toggle_record=len(pressed) > 1 and pressed[1])
