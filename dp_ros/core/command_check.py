"""How far a stream of servo commands went: per tick speed, acceleration and rotation speed, and
distance outside the workspace box (ROS-free). Used by the tests and by `dp-ros faults`."""

from __future__ import annotations

import numpy as np


def tick_limits(ticks, poses, period_s: float, resynced=None) -> dict:
    """ticks: the servo's tick number of each command (missing ones allowed); poses (N, 7).
    resynced[i]: command i re-synced to the measured pose, which starts a new segment (a jump back
    to where the arm is, not a motion). Returns the largest speed (m/s), acceleration (m/s^2)
    and rotation speed (rad/s) within segments."""
    ticks = np.asarray(ticks, dtype=np.float64)
    poses = np.asarray(poses, dtype=np.float64).reshape(-1, 7)
    starts = np.zeros(len(ticks), dtype=bool) if resynced is None else np.asarray(resynced, dtype=bool)
    out = {"max_speed": 0.0, "max_acc": 0.0, "max_ang_speed": 0.0}
    bounds = list(np.flatnonzero(starts)) + [len(ticks)]
    lo = 0
    for hi in bounds:
        seg_t, seg_p = ticks[lo:hi], poses[lo:hi]
        lo = hi
        if len(seg_t) < 2:
            continue
        dticks = np.maximum(np.diff(seg_t), 1.0) * period_s
        vel = np.diff(seg_p[:, :3], axis=0) / dticks[:, None]
        out["max_speed"] = max(out["max_speed"], float(np.linalg.norm(vel, axis=1).max()))
        if len(vel) > 1:
            acc = np.linalg.norm(np.diff(vel, axis=0), axis=1) / ((dticks[1:] + dticks[:-1]) / 2)
            out["max_acc"] = max(out["max_acc"], float(acc.max()))
        q = seg_p[:, 3:] / np.linalg.norm(seg_p[:, 3:], axis=1, keepdims=True)
        ang = 2 * np.arccos(np.clip(np.abs(np.sum(q[1:] * q[:-1], axis=1)), 0.0, 1.0))
        out["max_ang_speed"] = max(out["max_ang_speed"], float((ang / dticks).max()))
    return out


def outside_box(positions, lo, hi) -> float:
    """Largest distance (m) of any position outside the box [lo, hi]; 0 when all are inside."""
    p = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if not len(p):
        return 0.0
    d = np.maximum(np.asarray(lo) - p, 0.0) + np.maximum(p - np.asarray(hi), 0.0)
    return float(np.linalg.norm(d, axis=1).max())
