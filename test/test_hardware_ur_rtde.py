"""Only the pose conversions are testable without a robot (RTDE itself is not mocked)."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dp_ros.hardware.ur_rtde_backend import (
    pose_to_ur_pose,
    quat_to_rotvec,
    rotvec_to_quat,
    ur_pose_to_pose,
)

S = np.sqrt(0.5)


@pytest.mark.parametrize(
    "rotvec, quat",
    [
        ([0, 0, 0], [0, 0, 0, 1]),
        ([np.pi, 0, 0], [1, 0, 0, 0]),  # tool pointing down
        ([0, 0, np.pi / 2], [0, 0, S, S]),
        ([0, -np.pi / 2, 0], [0, -S, 0, S]),
    ],
)
def test_known_values(rotvec, quat):
    np.testing.assert_allclose(rotvec_to_quat(rotvec), quat, atol=1e-12)
    np.testing.assert_allclose(quat_to_rotvec(quat), rotvec, atol=1e-12)


def test_round_trip_random_poses():
    rng = np.random.default_rng(0)
    for _ in range(200):
        ur = np.concatenate([rng.uniform(-1, 1, 3), Rotation.random(random_state=rng).as_rotvec()])
        pose = ur_pose_to_pose(ur)
        assert pose.shape == (7,) and np.linalg.norm(pose[3:]) == pytest.approx(1.0)
        back = pose_to_ur_pose(pose)
        assert isinstance(back, list) and len(back) == 6 and all(isinstance(v, float) for v in back)
        np.testing.assert_allclose(back[:3], ur[:3])
        # Same rotation (the rotvec itself may differ by representation only near pi).
        d = Rotation.from_rotvec(back[3:]) * Rotation.from_rotvec(ur[3:]).inv()
        assert d.magnitude() < 1e-9


def test_unnormalised_quaternion_is_accepted():
    np.testing.assert_allclose(pose_to_ur_pose([0, 0, 0, 2, 0, 0, 0])[3:], [np.pi, 0, 0], atol=1e-12)


def test_quaternion_sign_stays_continuous_across_rotvec_flip():
    # Near 180 deg the controller's rotation vector flips between +pi and -pi representations.
    a = ur_pose_to_pose([0.5, 0, 0.1, np.pi - 1e-3, 0, 0])
    b = ur_pose_to_pose([0.5, 0, 0.1, -(np.pi - 1e-3), 0, 0], prev_quat=a[3:])
    assert np.dot(a[3:], b[3:]) > 0.99
    b_raw = ur_pose_to_pose([0.5, 0, 0.1, -(np.pi - 1e-3), 0, 0])
    assert np.dot(a[3:], b_raw[3:]) < -0.99  # what a naive conversion would stream
