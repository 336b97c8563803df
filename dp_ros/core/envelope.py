"""Safety envelope applied to every servo command before it reaches the robot.

clamp(target, last_cmd, last_velocity, dt) returns the next command:
  1. a non-finite / malformed target is replaced by "hold at last_cmd" (flag invalid_target);
     the hold still goes through the limits below, so a moving arm brakes (at max_lin_acc)
     instead of stopping in one tick;
  2. the target orientation is pulled into orientation_limit (a cone around a reference), the
     target position into the workspace box (flag workspace);
  3. linear motion: the wanted velocity points at the target with speed
     min(max_lin_speed, braking speed), the braking speed being the fastest from which the
     arm, decelerating by max_lin_acc*dt per step, still stops at the target. Without it an
     acceleration-limited follower overshoots a jumped target and oscillates around it;
  4. the new velocity is the one nearest the wanted one that satisfies, together:
       |v_new - last_velocity| <= max_lin_acc*dt,  |v_new| <= max_lin_speed, and
       per axis, a braking speed toward each wall of the box (with max_lin_acc/sqrt(3) per axis,
       so that braking on all three axes at once still fits the acceleration limit).
     The wall braking keeps every command inside the box without a velocity jump at a wall;
     the walls win over acceleration only if the caller's state was already inconsistent;
  5. rotation: at most max_ang_speed*dt per step (partial slerp toward the target; no
     angular acceleration limit);
  6. a hard clamp into the box as the last line (flag hard_clamp: should never happen). An axis
     already outside the box (robot started outside it) is not snapped in, which would be a
     jump: it may only move back toward the box (flag outside_box).

The limits are safety limits, not a trajectory shaper: following a moving target the command
lags by about v^2/(2*max_lin_acc), so set max_lin_acc well above what the policy's motion needs.
The stateless clamp assumes the velocity it returned is fed back as last_velocity, and dt_s
should be the loop's nominal period: the braking bounds are exact for a constant dt (checked
with 5 % jitter); a dt that varies by tens of percent between calls can exceed the acceleration
limit by a few percent near a wall or target (the box still holds).
Plain floats inside: the servo loop runs this at up to 500 Hz.
"""

from __future__ import annotations

import math

import numpy as np

from dp_ros.core.transforms import angle4, normalize_quat, quat_angle, slerp4

FLAG_NAMES = ("invalid_target", "workspace", "orientation", "speed", "acceleration",
              "wall_brake", "rotation", "hard_clamp", "outside_box")
_SQRT3 = math.sqrt(3.0)


def _cap(dist: float, acc: float, dt: float) -> float:
    """Largest speed toward a point dist ahead from which the arm, decelerating by acc*dt per
    step, stops without passing it. The exact discrete stopping distance from speed v is at
    most v*dt/2 + v^2/(2*acc) + acc*dt^2/8; the second term lets the last step land exactly."""
    if dist <= 0.0:
        return 0.0
    h = 0.5 * acc * dt
    x = dist - acc * dt * dt / 8.0
    brake = -h + math.sqrt(h * h + 2.0 * acc * x) if x > 0.0 else 0.0
    return max(brake, min(dist / dt, acc * dt))


def _norm(v) -> float:
    return math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])


def _finite_floats(x, n):
    """x as a list of n finite floats, or None."""
    try:
        a = np.asarray(x, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return None
    if a.shape != (n,):
        return None
    out = a.tolist()
    return out if all(math.isfinite(v) for v in out) else None


def _unit_quat(q):
    n = math.sqrt(sum(c * c for c in q))
    return None if n < 1e-9 else [c / n for c in q]


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
        self._lo, self._hi = lo.tolist(), hi.tolist()
        self.max_lin_speed = float(max_lin_speed)
        self.max_lin_acc = float(max_lin_acc)
        self.max_ang_speed = float(max_ang_speed_rad_s)
        self.orientation_ref = None
        self.orientation_max_angle = None
        if orientation_limit is not None:
            self.orientation_ref, self.orientation_max_angle = \
                self._parse_orientation_limit(orientation_limit)

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
        ref = normalize_quat(np.asarray(ref, dtype=np.float64).reshape(-1)).tolist()
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
        """-> (cmd_pose (7,), velocity (3,), flags {name: bool}; any(flags.values()) = something
        was limited). last_cmd_pose / last_velocity / dt_s are the servo's own state and must be
        valid (ValueError otherwise); the target may be anything."""
        flags = dict.fromkeys(FLAG_NAMES, False)
        try:
            dt = float(dt_s)
        except (TypeError, ValueError):
            raise ValueError(f"dt_s must be a number, got {dt_s!r}") from None
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt_s must be positive and finite, got {dt_s!r}")
        last = _finite_floats(last_cmd_pose, 7)
        lq = _unit_quat(last[3:]) if last is not None else None
        if lq is None:
            raise ValueError(f"last_cmd_pose must be a finite (7,) pose, got {last_cmd_pose!r}")
        v = _finite_floats(last_velocity, 3)
        if v is None:
            raise ValueError(f"last_velocity must be 3 finite values, got {last_velocity!r}")
        target = _finite_floats(target_pose, 7)
        tq = _unit_quat(target[3:]) if target is not None else None
        if tq is None:
            target, tq = last, lq                 # hold (and brake) at the last command
            flags["invalid_target"] = True

        # --- orientation target into its cone
        if self.orientation_ref is not None:
            ang = angle4(self.orientation_ref, tq)
            if ang > self.orientation_max_angle:
                tq = slerp4(self.orientation_ref, tq, self.orientation_max_angle / ang)
                flags["orientation"] = True

        acc, vmax = self.max_lin_acc, self.max_lin_speed
        acc_axis = acc / _SQRT3
        p = last[:3]
        lo, hi = self._lo, self._hi
        tp = [min(max(target[i], lo[i]), hi[i]) for i in range(3)]
        if tp != target[:3]:
            flags["workspace"] = True

        # --- wanted velocity: toward the target, no faster than we can stop there
        err = [tp[i] - p[i] for i in range(3)]
        dist = _norm(err)
        if dist > 1e-12:
            speed = _cap(dist, acc, dt)
            if speed > vmax:
                speed = vmax
                flags["speed"] = True
            v_des = [e * (speed / dist) for e in err]
        else:
            v_des = [0.0, 0.0, 0.0]

        # --- velocity box W from braking against the walls (outside axes: inward only)
        wlo, whi, outside = [0.0] * 3, [0.0] * 3, [False] * 3
        for i in range(3):
            if p[i] > hi[i]:
                outside[i] = True
                wlo[i], whi[i] = -_cap(p[i] - lo[i], acc_axis, dt), 0.0
            elif p[i] < lo[i]:
                outside[i] = True
                wlo[i], whi[i] = 0.0, _cap(hi[i] - p[i], acc_axis, dt)
            else:
                wlo[i], whi[i] = -_cap(p[i] - lo[i], acc_axis, dt), _cap(hi[i] - p[i], acc_axis, dt)
        flags["outside_box"] = any(outside)

        def in_w(x):
            return [min(max(x[i], wlo[i]), whi[i]) for i in range(3)]

        vd = in_w(v_des)
        if vd != v_des:
            flags["wall_brake"] = True
        # toward the wanted velocity, at most acc*dt of change (stays in W when v is in W)
        dv = [vd[i] - v[i] for i in range(3)]
        n = _norm(dv)
        r = acc * dt
        if n > r:
            dv = [d * (r / n) for d in dv]
            flags["acceleration"] = True
        c = [v[i] + dv[i] for i in range(3)]
        if in_w(c) != c:
            # v itself breaks a wall limit (caller reset the velocity, or dt changed): move
            # from the nearest velocity in W toward c as far as the acceleration limit allows.
            flags["wall_brake"] = True
            ps = in_w(v)
            d0 = [ps[i] - v[i] for i in range(3)]
            if _norm(d0) > r:
                c = ps                              # the box wins over the acceleration limit
            else:
                e = [ci - psi for ci, psi in zip(in_w(c), ps)]
                a2 = e[0] * e[0] + e[1] * e[1] + e[2] * e[2]
                b = d0[0] * e[0] + d0[1] * e[1] + d0[2] * e[2]
                cc = d0[0] * d0[0] + d0[1] * d0[1] + d0[2] * d0[2] - r * r
                if a2 < 1e-30:
                    t = 1.0
                else:   # largest t in [0, 1] with |d0 + t*e| <= r
                    t = min(1.0, max(0.0, (-b + math.sqrt(max(b * b - a2 * cc, 0.0))) / a2))
                c = [ps[i] + t * e[i] for i in range(3)]
        sp = _norm(c)
        if sp > vmax:                               # only if the incoming velocity was too fast
            c = [x * (vmax / sp) for x in c]
            flags["speed"] = True

        # --- integrate; hard clamp as a backstop on axes that were inside
        p_new = [p[i] + c[i] * dt for i in range(3)]
        for i in range(3):
            if not outside[i] and not (lo[i] <= p_new[i] <= hi[i]):
                p_new[i] = min(max(p_new[i], lo[i]), hi[i])
                c[i] = (p_new[i] - p[i]) / dt
                flags["hard_clamp"] = True

        # --- rotation: bounded step toward the target
        ang = angle4(lq, tq)
        step = self.max_ang_speed * dt
        if ang > step:
            q_new = slerp4(lq, tq, step / ang)
            flags["rotation"] = True
        else:
            q_new = slerp4(lq, tq, 1.0)               # keeps last's hemisphere (sign continuity)
        return np.array(p_new + list(q_new)), np.array(c), flags
