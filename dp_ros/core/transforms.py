"""Pose and rotation helpers shared by the runtime core.

A pose is a float array of shape (7,) = [x, y, z, qx, qy, qz, qw] in the robot base frame
(metres). Quaternions are scalar-last, as scipy's Rotation uses them. Hot paths (the servo loop
evaluates trajectories at up to 500 Hz) use plain numpy quaternion maths; scipy is used for the
conversions where its per-call overhead does not matter.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

_EPS = 1e-12


def normalize_quat(q) -> np.ndarray:
    """Unit quaternion(s) of shape (..., 4); ValueError on non-finite or zero-norm input."""
    q = np.asarray(q, dtype=np.float64)
    if q.shape[-1:] != (4,):
        raise ValueError(f"quaternion must have shape (..., 4), got {q.shape}")
    if not np.all(np.isfinite(q)):
        raise ValueError("quaternion contains NaN or inf")
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(n < 1e-9):
        raise ValueError("quaternion has (near-)zero norm")
    return q / n


def as_pose(pose, name: str = "pose") -> np.ndarray:
    """Validated float64 copy of a (7,) pose with a unit quaternion; ValueError otherwise."""
    p = np.array(pose, dtype=np.float64)
    if p.shape != (7,):
        raise ValueError(f"{name} must have shape (7,) [x y z qx qy qz qw], got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} contains NaN or inf")
    p[3:] = normalize_quat(p[3:])
    return p


def make_pose(position, quat) -> np.ndarray:
    return as_pose(np.concatenate([np.asarray(position, dtype=np.float64).reshape(3),
                                   np.asarray(quat, dtype=np.float64).reshape(4)]))


def pose_to_pos_rot(pose) -> tuple[np.ndarray, Rotation]:
    p = as_pose(pose)
    return p[:3].copy(), Rotation.from_quat(p[3:])


def pos_rot_to_pose(position, rotation: Rotation) -> np.ndarray:
    return make_pose(position, rotation.as_quat())


def quat_mul(a, b) -> np.ndarray:
    """Hamilton product a*b of scalar-last quaternions (broadcasting over leading axes)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ax, ay, az, aw = np.moveaxis(a, -1, 0)
    bx, by, bz, bw = np.moveaxis(b, -1, 0)
    return np.stack([
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    ], axis=-1)


def quat_conj(q) -> np.ndarray:
    q = np.array(q, dtype=np.float64)
    q[..., :3] *= -1.0
    return q


def slerp4(q0, q1, w: float) -> tuple:
    """Scalar fast path of quat_slerp for two unit quaternions given as 4 floats (no checks).
    The servo loop calls this at up to 500 Hz; numpy's per-call overhead would dominate."""
    x0, y0, z0, w0 = q0
    x1, y1, z1, w1 = q1
    d = x0 * x1 + y0 * y1 + z0 * z1 + w0 * w1
    if d < 0.0:
        x1, y1, z1, w1, d = -x1, -y1, -z1, -w1, -d
    if d > 1.0:
        d = 1.0
    theta = math.acos(d)
    s = math.sin(theta)
    if s < 1e-6:
        c0, c1 = 1.0 - w, w
    else:
        c0, c1 = math.sin((1.0 - w) * theta) / s, math.sin(w * theta) / s
    x, y, z, r = c0 * x0 + c1 * x1, c0 * y0 + c1 * y1, c0 * z0 + c1 * z1, c0 * w0 + c1 * w1
    n = math.sqrt(x * x + y * y + z * z + r * r)
    return x / n, y / n, z / n, r / n


def angle4(q0, q1) -> float:
    """Scalar fast path of quat_angle for two unit quaternions given as 4 floats (no checks)."""
    x0, y0, z0, w0 = q0
    x1, y1, z1, w1 = q1
    # conj(q0) * q1
    rx = w0 * x1 - x0 * w1 - y0 * z1 + z0 * y1
    ry = w0 * y1 + x0 * z1 - y0 * w1 - z0 * x1
    rz = w0 * z1 - x0 * y1 + y0 * x1 - z0 * w1
    rw = w0 * w1 + x0 * x1 + y0 * y1 + z0 * z1
    return 2.0 * math.atan2(math.sqrt(rx * rx + ry * ry + rz * rz), abs(rw))


def quat_slerp(q0, q1, w) -> np.ndarray:
    """Shortest-path slerp from q0 (w=0) to q1 (w=1); broadcasts over leading axes and w.

    The result stays in q0's hemisphere, so sequences built from it have continuous signs.
    """
    q0 = normalize_quat(q0)
    q1 = normalize_quat(q1)
    w = np.asarray(w, dtype=np.float64)[..., None]
    d = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(d < 0.0, -q1, q1)            # q and -q are the same rotation: take the short way
    d = np.clip(np.abs(d), 0.0, 1.0)
    theta = np.arccos(d)
    s = np.sin(theta)
    small = s < 1e-6                            # nearly equal: lerp is exact to O(theta^3)
    safe_s = np.where(small, 1.0, s)
    c0 = np.where(small, 1.0 - w, np.sin((1.0 - w) * theta) / safe_s)
    c1 = np.where(small, w, np.sin(w * theta) / safe_s)
    out = c0 * q0 + c1 * q1
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def rot_slerp(r0: Rotation, r1: Rotation, w) -> Rotation:
    return Rotation.from_quat(quat_slerp(r0.as_quat(), r1.as_quat(), w))


def pose_interp(p0, p1, w) -> np.ndarray:
    """Linear in position, slerp in rotation; w=0 gives p0, w=1 gives p1. Broadcasts."""
    p0 = np.asarray(p0, dtype=np.float64)
    p1 = np.asarray(p1, dtype=np.float64)
    wa = np.asarray(w, dtype=np.float64)
    pos = p0[..., :3] + wa[..., None] * (p1[..., :3] - p0[..., :3])
    return np.concatenate([pos, quat_slerp(p0[..., 3:], p1[..., 3:], wa)], axis=-1)


def quat_angle(q0, q1) -> np.ndarray | float:
    """Angle in [0, pi] of the rotation taking q0 to q1 (sign-invariant, accurate near 0)."""
    rel = quat_mul(quat_conj(normalize_quat(q0)), normalize_quat(q1))
    ang = 2.0 * np.arctan2(np.linalg.norm(rel[..., :3], axis=-1), np.abs(rel[..., 3]))
    return float(ang) if np.ndim(ang) == 0 else ang


def rot_angle(r0: Rotation, r1: Rotation) -> float:
    return quat_angle(r0.as_quat(), r1.as_quat())


def pose_distance(p0, p1) -> tuple[float, float]:
    """(position distance in m, rotation angle in rad) between two poses."""
    p0 = np.asarray(p0, dtype=np.float64)
    p1 = np.asarray(p1, dtype=np.float64)
    return float(np.linalg.norm(p1[:3] - p0[:3])), float(quat_angle(p0[3:], p1[3:]))


def rotvec_to_quat(rotvec) -> np.ndarray:
    rv = np.asarray(rotvec, dtype=np.float64)
    if not np.all(np.isfinite(rv)):
        raise ValueError("rotation vector contains NaN or inf")
    if rv.shape[-1:] != (3,):
        raise ValueError(f"rotation vector must have shape (..., 3), got {rv.shape}")
    return Rotation.from_rotvec(rv.reshape(-1, 3)).as_quat().reshape(rv.shape[:-1] + (4,))


def quat_to_rotvec(q) -> np.ndarray:
    """Rotation vector (axis * angle, angle in [0, pi]) of the quaternion(s)."""
    q = normalize_quat(q)
    return Rotation.from_quat(q.reshape(-1, 4)).as_rotvec().reshape(q.shape[:-1] + (3,))


def pose_to_pos_rotvec(pose) -> np.ndarray:
    """(6,) [x y z rx ry rz]: the UR / RTDE pose convention."""
    p = as_pose(pose)
    return np.concatenate([p[:3], quat_to_rotvec(p[3:])])


def pos_rotvec_to_pose(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    if v.shape != (6,):
        raise ValueError(f"[x y z rx ry rz] must have shape (6,), got {v.shape}")
    return make_pose(v[:3], rotvec_to_quat(v[3:]))


def continuous_quats(quats) -> np.ndarray:
    """Flip signs along axis 0 so consecutive quaternions have a non-negative dot product.

    q and -q are the same rotation; per-segment interpolation and any linear mixing (blending,
    averaging, network inputs) need neighbours in the same hemisphere.
    """
    q = np.array(quats, dtype=np.float64)
    if len(q) < 2:
        return q
    flips = np.where(np.sum(q[1:] * q[:-1], axis=-1) < 0.0, -1.0, 1.0)
    q[1:] *= np.cumprod(flips)[:, None]     # a flip carries over to every later quaternion
    return q
