"""Timestamped pose trajectory: linear in position, slerp in rotation, held outside its range.

The servo loop evaluates it at the robot's rate (125/500 Hz), so evaluation is plain numpy.
Times are int64 nanoseconds; differences are taken in integers before converting to float, since
absolute ROS times (~1.7e18 ns) lose sub-microsecond precision as float64.
"""

from __future__ import annotations

import bisect

import numpy as np

from dp_ros.core.transforms import continuous_quats, normalize_quat, quat_slerp, slerp4


def _as_times(times_ns) -> np.ndarray:
    t = np.asarray(times_ns)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"times_ns must be a non-empty 1-D array, got shape {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        if not np.all(np.isfinite(t)):
            raise ValueError("times_ns contains NaN or inf")
        t = np.round(t)
    return t.astype(np.int64)


class PoseTrajectory:
    def __init__(self, times_ns, poses):
        t = _as_times(times_ns)
        p = np.array(poses, dtype=np.float64)
        if p.shape != (len(t), 7):
            raise ValueError(f"poses must have shape ({len(t)}, 7) to match times, got {p.shape}")
        if not np.all(np.isfinite(p)):
            raise ValueError("poses contain NaN or inf")
        if np.any(np.diff(t) <= 0):
            raise ValueError("times_ns must be strictly increasing")
        p[:, 3:] = continuous_quats(normalize_quat(p[:, 3:]))
        t.flags.writeable = False
        p.flags.writeable = False
        self._t = t
        self._p = p
        self._tl = t.tolist()          # Python copies for the scalar fast path
        self._pl = p.tolist()

    @property
    def times_ns(self) -> np.ndarray:
        return self._t

    @property
    def poses(self) -> np.ndarray:
        return self._p

    @property
    def start_ns(self) -> int:
        return int(self._t[0])

    @property
    def end_ns(self) -> int:
        return int(self._t[-1])

    def __len__(self):
        return len(self._t)

    def __repr__(self):
        return f"PoseTrajectory({len(self)} waypoints, {self.start_ns}..{self.end_ns} ns)"

    def __call__(self, t_ns) -> np.ndarray:
        """Pose (7,) at a scalar time, or (M, 7) at an array of times."""
        if isinstance(t_ns, (int, np.integer)):
            return np.array(self._at(int(t_ns)))
        ts = np.asarray(t_ns)
        scalar = ts.ndim == 0
        ts = np.atleast_1d(ts).astype(np.int64)
        if len(self._t) == 1:
            out = np.repeat(self._p, len(ts), axis=0)
        else:
            i = np.clip(np.searchsorted(self._t, ts, side="right") - 1, 0, len(self._t) - 2)
            t0 = self._t[i]
            span = (self._t[i + 1] - t0).astype(np.float64)
            w = np.clip((ts - t0).astype(np.float64) / span, 0.0, 1.0)   # clip = hold outside
            p0, p1 = self._p[i], self._p[i + 1]
            pos = p0[:, :3] + w[:, None] * (p1[:, :3] - p0[:, :3])
            out = np.concatenate([pos, quat_slerp(p0[:, 3:], p1[:, 3:], w)], axis=1)
        return out[0] if scalar else out

    def _at(self, t: int) -> list:
        # Scalar path in plain Python: the servo loop calls this at up to 500 Hz.
        tl, pl = self._tl, self._pl
        if t <= tl[0]:
            return pl[0]
        if t >= tl[-1]:
            return pl[-1]
        i = bisect.bisect_right(tl, t) - 1
        w = (t - tl[i]) / (tl[i + 1] - tl[i])       # exact integer differences
        a, b = pl[i], pl[i + 1]
        return [a[0] + w * (b[0] - a[0]), a[1] + w * (b[1] - a[1]), a[2] + w * (b[2] - a[2]),
                *slerp4(a[3:], b[3:], w)]
