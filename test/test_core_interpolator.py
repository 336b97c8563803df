import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dp_ros.core.interpolator import PoseTrajectory
from dp_ros.core.transforms import quat_angle

T0 = 1_700_000_000_000_000_000     # realistic absolute ROS time: checks integer time handling
MS = 1_000_000


def _traj():
    q0 = [0, 0, 0, 1.0]
    q1 = Rotation.from_euler("z", 90, degrees=True).as_quat()
    poses = np.array([[0, 0, 0, *q0], [1.0, 2.0, -1.0, *q1]])
    return PoseTrajectory([T0, T0 + 100 * MS], poses), q0, q1


def test_linear_position_and_slerp_midpoint():
    traj, q0, q1 = _traj()
    mid = traj(T0 + 50 * MS)
    assert np.allclose(mid[:3], [0.5, 1.0, -0.5])
    expect = Rotation.from_euler("z", 45, degrees=True).as_quat()
    assert quat_angle(mid[3:], expect) < 1e-9
    quarter = traj(T0 + 25 * MS)
    assert np.allclose(quarter[:3], [0.25, 0.5, -0.25])
    assert quat_angle(quarter[3:], q0) == pytest.approx(np.deg2rad(22.5))
    # exact at knots, vectorised evaluation agrees
    assert np.allclose(traj(T0), [0, 0, 0, *q0])
    many = traj(np.array([T0, T0 + 50 * MS, T0 + 100 * MS]))
    assert many.shape == (3, 7) and np.allclose(many[1], mid)


def test_holds_outside_range():
    traj, q0, q1 = _traj()
    assert np.allclose(traj(T0 - 10**9), traj(T0))
    assert np.allclose(traj(T0 + 10**10), traj(T0 + 100 * MS))
    single = PoseTrajectory([T0], [[1, 2, 3, 0, 0, 0, 1]])
    assert np.allclose(single(T0 + 5), [1, 2, 3, 0, 0, 0, 1])


def test_nanosecond_resolution_at_absolute_times():
    traj = PoseTrajectory([T0, T0 + 2], [[0, 0, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 0, 1]])
    assert traj(T0 + 1)[0] == pytest.approx(1.0)


def test_construction_checks():
    ok = [[0, 0, 0, 0, 0, 0, 1]] * 2
    with pytest.raises(ValueError):
        PoseTrajectory([T0, T0], ok)                 # not strictly increasing
    with pytest.raises(ValueError):
        PoseTrajectory([T0 + 1, T0], ok)
    with pytest.raises(ValueError):
        PoseTrajectory([T0, T0 + 1], [[0, 0, np.nan, 0, 0, 0, 1]] * 2)
    with pytest.raises(ValueError):
        PoseTrajectory([T0, T0 + 1], [[0, 0, 0, 0, 0, 0, 0]] * 2)   # zero quaternion
    with pytest.raises(ValueError):
        PoseTrajectory([T0, T0 + 1], [[0, 0, 0, 0, 0, 0, 1]] * 3)   # shape mismatch
    with pytest.raises(ValueError):
        PoseTrajectory([], np.zeros((0, 7)))


def test_sign_flipped_quaternions_interpolate_the_short_way():
    q = Rotation.from_euler("z", 10, degrees=True).as_quat()
    traj = PoseTrajectory([0, 10], [[0, 0, 0, *q], [0, 0, 0, *(-q)]])
    assert quat_angle(traj(5)[3:], q) < 1e-9
