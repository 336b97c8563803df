"""Safety envelope applied to every servo command before it reaches the robot.

clamp(target, last_cmd, last_velocity, dt) returns the next command:
  1. a non-finite / malformed target is replaced by "hold at last_cmd" (flag invalid_target);
     the hold still goes through the limits below, so a moving arm brakes instead of stopping
     in one tick;
  2. the target orientation is pulled into orientation_limit (a cone around a reference), the
     target position into the workspace box;
  3. linear motion: the wanted velocity points at the target with speed
     min(max_lin_speed, distance/dt, braking speed), the braking speed being the fastest speed
     from which the arm can still stop at the target with max_lin_acc. Without it an
     acceleration-limited follower overshoots a jumped target and oscillates around it.
     Then the change of velocity is clipped to max_lin_acc*dt, and each axis is braked the
     same way against the box walls, so the box holds without a velocity jump at the wall;
  4. rotation: at most max_ang_speed*dt per step (partial slerp toward the target);
  5. a hard clamp into the box as the last line (never active in normal operation). An axis
     already outside the box (robot started outside it) is not snapped in, which would be a jump:
     it may only move back toward the box.

The limits are safety limits, not a trajectory shaper: with a moving target the command lags
by about v^2/(2*max_lin_acc), so set max_lin_acc well above what the policy's motion needs.
"""

from __future__ import annotations

import math

import numpy as np

from dp_ros.core.transforms import as_pose, normalize_quat, quat_angle, quat_slerp

FLAG_NAMES = ("invalid_target", "workspace", "orientation", "speed", "acceleration",
              "wall_brake", "rotation", "hard_clamp", "outside_box")


def _brake_speed(dist, acc, dt):
    """Largest speed v with v*dt/2 + v^2/(2*acc) <= dist: the arm moving at v, decelerating by
    acc*dt per step, stops within dist (discrete-time stopping distance)."""
    dist = np.maximum(dist, 0.0)
    h = 0.5 * acc * dt
    return -h + np.sqrt(h * h + 2.0 * acc * dist)


def _clip_norm(v, limit):
    n = float(np.linalg.norm(v))
    if n > limit:
        return v * (limit / n), True
    return v, False


class SafetyEnvelope:
    def __init__(self, workspace_min, workspace_max, max_lin_speed, max_lin_acc,
                 max_ang_speed_rad_s, orientation_limit=None):
        lo = np.asarray(workspace_min, dtype=np.float64)
        hi = np.asarray(workspace_max, dtype=np.float64)
        if lo.shape != (3,) or hi.shape != (3,):
            raise ValueError(f"workspace_min/max must have 3 values, got {lo.shape} and {hi.shape}")
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError("workspace_min/max must be finite")
        if not np.all(lo < hi):
            raise ValueError(f"workspace_min must be < workspace_max on every axis, got {lo.tolist()} "
                             f"and {hi.tolist()}")
        for name, v in (("max_lin_speed", max_lin_speed), ("max_lin_acc", max_lin_acc),
                        ("max_ang_speed", max_ang_speed_rad_s)):
            if not (isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive finite number, got {v!r}")
        self.workspace_min = lo
        self.workspace_max = hi
        self.max_lin_speed = float(max_lin_speed)
        self.max_lin_acc = float(max_lin_acc)
        self.max_ang_speed = float(max_ang_speed_rad_s)
        self.orientation_ref = None
        self.orientation_max_angle = None
        if orientation_limit is not None:
            self.orientation_ref, self.orientation_max_angle = self._parse_orientation_limit(orientation_limit)

    @staticmethod
    def _parse_orientation_limit(lim):
        """(reference_quat (4,), max_angle_rad) or {"reference_quat": ..., "max_angle_rad": ...}."""
        if isinstance(lim, dict):
            unknown = set(lim) - {"reference_quat", "max_angle_rad"}
            if unknown or len(lim) != 2:
                raise ValueError("orientation_limit needs exactly reference_quat and max_angle_rad, got "
                                 f"{sorted(lim)}")
            ref, ang = lim["reference_quat"], lim["max_angle_rad"]
        else:
            try:
                ref, ang = lim
            except (TypeError, ValueError):
                raise ValueError("orientation_limit must be (reference_quat, max_angle_rad)") from None
        ref = normalize_quat(np.asarray(ref, dtype=np.float64).reshape(-1))
        ang = float(ang)
        if not (math.isfinite(ang) and 0 < ang <= math.pi):
            raise ValueError(f"orientation_limit max_angle_rad must be in (0, pi], got {ang}")
        return ref, ang

    @classmethod
    def from_dict(cls, cfg: dict) -> "SafetyEnvelope":
        """From a config mapping. Accepts max_ang_speed or max_ang_speed_rad_s; unknown keys are
        an error so that a misspelt limit is never silently ignored."""
        cfg = dict(cfg)
        if "max_ang_speed" in cfg and "max_ang_speed_rad_s" in cfg:
            raise ValueError("give max_ang_speed or max_ang_speed_rad_s, not both")
        if "max_ang_speed" in cfg:
            cfg["max_ang_speed_rad_s"] = cfg.pop("max_ang_speed")
        required = ("workspace_min", "workspace_max", "max_lin_speed", "max_lin_acc", "max_ang_speed_rad_s")
        missing = [k for k in required if k not in cfg]
        if missing:
            raise ValueError(f"safety envelope config is missing {missing}")
        unknown = set(cfg) - set(required) - {"orientation_limit"}
        if unknown:
            raise ValueError(f"unknown safety envelope keys {sorted(unknown)} (known: {list(required)} "
                             "and orientation_limit)")
        vals = {}
        for k in required[2:]:
            try:
                vals[k] = float(cfg[k])
            except (TypeError, ValueError):
                raise ValueError(f"{k} must be a number, got {cfg[k]!r}") from None
        return cls(cfg["workspace_min"], cfg["workspace_max"], vals["max_lin_speed"], vals["max_lin_acc"],
                   vals["max_ang_speed_rad_s"], cfg.get("orientation_limit"))

    # ------------------------------------------------------------------
    def contains(self, pose, tol: float = 1e-9) -> bool:
        p = np.asarray(pose, dtype=np.float64)
        if p.shape != (7,) or not np.all(np.isfinite(p)):
            return False
        if np.any(p[:3] < self.workspace_min - tol) or np.any(p[:3] > self.workspace_max + tol):
            return False
        if self.orientation_ref is not None:
            return quat_angle(self.orientation_ref, p[3:]) <= self.orientation_max_angle + 1e-9
        return True

    def clamp(self, target_pose, last_cmd_pose, last_velocity, dt_s):
        """-> (cmd_pose (7,), velocity (3,), flags {name: bool}). last_cmd_pose / last_velocity /
        dt_s are the servo's own state and must be valid (ValueError otherwise)."""
        flags = dict.fromkeys(FLAG_NAMES, False)
        dt = float(dt_s)
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt_s must be positive and finite, got {dt_s!r}")
        last = as_pose(last_cmd_pose, "last_cmd_pose")
        v = np.asarray(last_velocity, dtype=np.float64).reshape(-1)
        if v.shape != (3,) or not np.all(np.isfinite(v)):
            raise ValueError(f"last_velocity must be 3 finite values, got {last_velocity!r}")
        try:
            target = as_pose(target_pose, "target")
        except (ValueError, TypeError):
            target = last.copy()
            flags["invalid_target"] = True

        # --- orientation target into its cone
        tq = target[3:]
        if self.orientation_ref is not None:
            ang = quat_angle(self.orientation_ref, tq)
            if ang > self.orientation_max_angle:
                tq = quat_slerp(self.orientation_ref, tq, self.orientation_max_angle / ang)
                flags["orientation"] = True

        # --- position target into the box
        p = last[:3]
        lo, hi = self.workspace_min, self.workspace_max
        tp = np.clip(target[:3], lo, hi)
        if not np.array_equal(tp, target[:3]):
            flags["workspace"] = True
        outside = (p < lo) | (p > hi)
        flags["outside_box"] = bool(np.any(outside))

        # --- wanted velocity: toward the target, no faster than we can stop there
        acc, vmax = self.max_lin_acc, self.max_lin_speed
        err = tp - p
        dist = float(np.linalg.norm(err))
        if dist > 1e-12:
            speed = min(dist / dt, float(_brake_speed(dist, acc, dt)))
            if speed > vmax:
                speed = vmax
                flags["speed"] = True
            v_des = err * (speed / dist)
        else:
            v_des = np.zeros(3)
        dv, flags["acceleration"] = _clip_norm(v_des - v, acc * dt)
        v_new = v + dv
        v_new, over = _clip_norm(v_new, vmax)     # only binds if the incoming velocity was too fast
        flags["speed"] |= over

        # --- per-axis braking against the walls (axes outside the box: inward motion only)
        room_hi = np.where(outside, 0.0, hi - p)
        room_lo = np.where(outside, 0.0, p - lo)
        cap_hi = _brake_speed(room_hi, acc, dt)
        cap_lo = _brake_speed(room_lo, acc, dt)
        capped = np.clip(v_new, -cap_lo, cap_hi)
        capped = np.where(outside & (p < lo), np.maximum(v_new, 0.0), capped)
        capped = np.where(outside & (p > hi), np.minimum(v_new, 0.0), capped)
        if not np.allclose(capped, v_new, rtol=0.0, atol=1e-12):
            flags["wall_brake"] = True
        v_new = capped

        # --- integrate, then hard clamp as a backstop (only on axes that were inside)
        p_new = p + v_new * dt
        clamped = np.where(outside, p_new, np.clip(p_new, lo, hi))
        if not np.array_equal(clamped, p_new):
            flags["hard_clamp"] = True
            p_new = clamped
            v_new = (p_new - p) / dt

        # --- rotation: bounded step toward the target
        ang = quat_angle(last[3:], tq)
        step = self.max_ang_speed * dt
        if ang > step:
            q_new = quat_slerp(last[3:], tq, step / ang)
            flags["rotation"] = True
        else:
            q_new = quat_slerp(last[3:], tq, 1.0)    # keeps last's hemisphere (sign continuity)
        return np.concatenate([p_new, q_new]), v_new, flags
