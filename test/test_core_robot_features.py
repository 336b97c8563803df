"""The pose a planar policy does not command: derived from recorded targets (robust to quaternion
sign and glitches) and checked against the measured tool pose before anything streams."""

import numpy as np
import pytest

from dp_ros.core.robot_features import (DEFAULT_FIXED_POSE, check_fixed_pose, fixed_pose_from_targets,
                                        mean_quaternion, object_feature, object_names, planar_pose, robot_spec,
                                        source_dim, split_sources)
from dp_ros.core.transforms import quat_angle, quat_mul, rotvec_to_quat

DOWN = np.array([1.0, 0.0, 0.0, 0.0])


def test_mean_quaternion_ignores_sign_and_outliers():
    rng = np.random.default_rng(0)
    true = quat_mul(rotvec_to_quat([0.0, 0.15, 0.05]), DOWN)
    noise = rotvec_to_quat(rng.normal(0, 0.01, (200, 3)))
    q = quat_mul(noise, np.broadcast_to(true, noise.shape)) * rng.choice([-1.0, 1.0], (200, 1))
    q[::20] = rotvec_to_quat([0.0, 0.0, 1.5])            # 5 % glitches, 86 deg away
    m = mean_quaternion(q)
    assert quat_angle(m, true) < np.radians(0.3)
    assert m @ np.asarray(DEFAULT_FIXED_POSE[3:]) > 0  # the simulator's sign convention
    assert quat_angle(mean_quaternion(q[1::20]), true) < np.radians(2.0)   # a handful is enough


def test_fixed_pose_from_targets_is_the_median_position_and_mean_orientation():
    t = np.tile(np.r_[0.5, 0.1, 0.2, DOWN], (9, 1))
    t[:, 0] += np.linspace(-0.1, 0.1, 9)
    t[0, 2] = 0.9                                          # one wild height
    t[1] = np.nan                                          # and a NaN sample, skipped
    pose = fixed_pose_from_targets(t)
    assert pose[:3] == pytest.approx([0.5125, 0.1, 0.2]) and pose[3:] == pytest.approx(list(DOWN))
    with pytest.raises(ValueError):
        fixed_pose_from_targets(np.full((3, 7), np.nan))


def test_check_fixed_pose_names_height_and_orientation():
    fixed = [0.55, 0.0, 0.05, *DOWN]
    here = [0.30, 0.2, 0.06, *(-DOWN)]                     # other x, y and quaternion sign: fine
    assert check_fixed_pose(fixed, here, max_height_m=0.02, max_angle_rad=np.radians(10)) is None
    high = [0.55, 0.0, 0.25, *DOWN]
    reason = check_fixed_pose(fixed, high, max_height_m=0.02, max_angle_rad=np.radians(10))
    assert "height 0.050 m is -0.200 m" in reason and "orientation" not in reason
    tilted = [0.55, 0.0, 0.05, *quat_mul(rotvec_to_quat([0.0, 0.3, 0.0]), DOWN)]
    reason = check_fixed_pose(fixed, tilted, max_height_m=0.02, max_angle_rad=np.radians(10))
    assert "orientation is 17.2 deg" in reason and "height" not in reason
    both = [0.55, 0.0, 0.25, *tilted[3:]]
    assert " and " in check_fixed_pose(fixed, both, 0.02, np.radians(10))
    with pytest.raises(ValueError):
        check_fixed_pose(fixed, [0.5, 0, 0.05, 0, 0, 0, 0], 0.02, 0.2)     # no measured orientation


def test_fixed_pose_problem_checks_what_the_action_space_does_not_command():
    from dp_ros.core.robot_features import fixed_pose_problem
    down = [1.0, 0.0, 0.0, 0.0]
    fixed = [0.5, 0.0, 0.05, *down]
    high = [0.5, 0.0, 0.25, *down]                     # tool 20 cm above the fixed height
    spec = {"fixed_pose": fixed}
    assert "height" in fixed_pose_problem({**spec, "action_space": "xy"}, high, 0.02, 0.17)
    assert fixed_pose_problem({**spec, "action_space": "xyz"}, high, 0.02, 0.17) is None   # z is commanded
    tilted = [0.5, 0.0, 0.05, 0.9659258, 0.0, 0.2588190, 0.0]   # 30 deg from tool-down
    assert "orientation" in fixed_pose_problem({**spec, "action_space": "xyz"}, tilted, 0.02, 0.17)
    assert fixed_pose_problem({**spec, "action_space": "xyz_rotvec"}, tilted, 0.02, 0.17) is None


def test_object_pose_feature_does_not_wrap():
    """x, y, cos yaw, sin yaw: poses either side of yaw = pi give neighbouring features."""
    a, b = object_feature(planar_pose(0.5, 0.1, np.pi - 1e-3)), object_feature(planar_pose(0.5, 0.1, -np.pi + 1e-3))
    assert np.abs(a - b).max() < 3e-3
    np.testing.assert_allclose(object_feature(planar_pose(0.4, -0.2, 0.3, z=0.02)),
                               [0.4, -0.2, np.cos(0.3), np.sin(0.3)], atol=1e-6)
    with pytest.raises(ValueError):
        object_feature([0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])        # no orientation


def test_object_sources_are_declared_like_robot_ones():
    assert source_dim("object:T") == 4 and source_dim("tcp_xy") == 2
    assert split_sources({"robot_pose": "tcp_xy", "block": "object:T"}) == ({"robot_pose": "tcp_xy"}, {"block": "T"})
    spec = robot_spec({"robot": {"obs_sources": {"robot_pose": "tcp_xy", "block": "object:T"}}},
                      {"robot_pose": 2, "block": 4}, 2)
    assert spec["obs_sources"]["block"] == "object:T"
    with pytest.raises(ValueError, match="dim 3"):
        robot_spec({"robot": {"obs_sources": {"block": "object:T"}}}, {"block": 3}, 2)
    for bad in ("object:", "object:1T", "tcp_xyzw"):
        with pytest.raises(ValueError):
            source_dim(bad)
    assert object_names(" T, cup ") == ["T", "cup"] and object_names("") == []
