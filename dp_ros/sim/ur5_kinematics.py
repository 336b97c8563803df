"""UR5 forward and analytic inverse kinematics from the UR5 DH parameters.

Frames follow Universal Robots' published DH table, so `fk(q)` is the flange pose in the
controller's "base" frame: the same frame `getActualTCPPose` reports with a zero TCP offset.
The closed form is the standard one for UR arms (K. Hawkins, "Analytic Inverse Kinematics for
the Universal Robots UR-5/UR-10 Arms", 2013): up to 8 solutions, of which `ik_nearest` picks the
one closest to a reference configuration so the simulated joints move continuously.
"""

import numpy as np

# UR5 (CB-series) DH parameters, metres / radians, from Universal Robots.
D = np.array([0.089159, 0.0, 0.0, 0.10915, 0.09465, 0.0823])
A = np.array([0.0, -0.425, -0.39225, 0.0, 0.0, 0.0])
ALPHA = np.array([np.pi / 2, 0.0, 0.0, np.pi / 2, -np.pi / 2, 0.0])

# Elbow-up, tool-down "home" with the base turned to face +x (where the default task workspace
# lies; with base 0 the UR5 reaches towards -x). Used to pick IK branches.
HOME_Q = np.array([np.pi, -np.pi / 2, np.pi / 2, -np.pi / 2, -np.pi / 2, 0.0])


def _dh(i, theta):
    ct, st = np.cos(theta), np.sin(theta)
    ca, sa = np.cos(ALPHA[i]), np.sin(ALPHA[i])
    return np.array(
        [
            [ct, -st * ca, st * sa, A[i] * ct],
            [st, ct * ca, -ct * sa, A[i] * st],
            [0.0, sa, ca, D[i]],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


def _inv(T):
    """Inverse of a rigid transform (cheaper and exacter than a general inverse)."""
    R, p = T[:3, :3], T[:3, 3]
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ p
    return out


def fk(q):
    """Flange pose as a 4x4 homogeneous transform in the base frame."""
    T = np.eye(4)
    for i in range(6):
        T = T @ _dh(i, q[i])
    return T


def _wrap(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


def ik(T, q6_default=0.0):
    """All analytic solutions (k, 6) for the 4x4 flange pose T; empty if out of reach.

    At the wrist singularity (sin q5 = 0) q6 is free and set to `q6_default`.
    """
    T = np.asarray(T, dtype=float)
    d4, d6 = D[3], D[5]
    a2, a3 = A[1], A[2]
    sols = []

    p05 = T @ np.array([0.0, 0.0, -d6, 1.0])
    r = np.hypot(p05[0], p05[1])
    if r < abs(d4):
        return np.zeros((0, 6))
    phi = np.arctan2(p05[1], p05[0])
    psi = np.arccos(np.clip(d4 / r, -1.0, 1.0))
    T60 = _inv(T)
    for s1 in (1.0, -1.0):
        q1 = phi + s1 * psi + np.pi / 2
        c5 = (T[0, 3] * np.sin(q1) - T[1, 3] * np.cos(q1) - d4) / d6
        if abs(c5) > 1.0 + 1e-9:
            continue
        for s5 in (1.0, -1.0):
            q5 = s5 * np.arccos(np.clip(c5, -1.0, 1.0))
            sin5 = np.sin(q5)
            if abs(sin5) < 1e-9:
                q6 = q6_default
            else:
                # Columns of T60 are the base axes seen from the flange.
                q6 = np.arctan2(
                    (-T60[1, 0] * np.sin(q1) + T60[1, 1] * np.cos(q1)) / sin5,
                    (T60[0, 0] * np.sin(q1) - T60[0, 1] * np.cos(q1)) / sin5,
                )
            T01, T45, T56 = _dh(0, q1), _dh(4, q5), _dh(5, q6)
            T14 = _inv(T01) @ T @ _inv(T45 @ T56)
            # Joints 2-4 are parallel: a planar 2-link arm in frame 1's x-y plane.
            px, py = T14[0, 3], T14[1, 3]
            L2 = px * px + py * py
            c3 = (L2 - a2 * a2 - a3 * a3) / (2 * a2 * a3)
            if abs(c3) > 1.0 + 1e-9:
                continue
            for s3 in (1.0, -1.0):
                q3 = s3 * np.arccos(np.clip(c3, -1.0, 1.0))
                q2 = np.arctan2(py, px) - np.arctan2(a3 * np.sin(q3), a2 + a3 * np.cos(q3))
                T34 = _inv(_dh(1, q2) @ _dh(2, q3)) @ T14
                q4 = np.arctan2(T34[1, 0], T34[0, 0])
                sols.append(_wrap(np.array([q1, q2, q3, q4, q5, q6])))
    return np.array(sols).reshape(-1, 6)


def ik_nearest(T, q_ref, tol=1e-6):
    """The solution nearest to q_ref (each joint unwrapped to within pi of it), or None.

    Solutions whose forward kinematics miss T by more than `tol` are rejected (numerical edge
    cases near the workspace boundary).
    """
    q_ref = np.asarray(q_ref, dtype=float)
    sols = ik(T, q6_default=q_ref[5])
    if len(sols) == 0:
        return None
    sols = q_ref + _wrap(sols - q_ref)
    # Verify in order of closeness; usually only the first needs a forward-kinematics check.
    for i in np.argsort(np.sum((sols - q_ref) ** 2, axis=1)):
        if np.abs(fk(sols[i]) - T).max() <= tol:
            return sols[i]
    return None
