"""Pose conversions, the robot clock mapping and the status words, without a controller (the
real ur_rtde against the controller emulator: test_hardware_rtde_emulator.py)."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dp_ros.hardware import ur_status
from dp_ros.hardware.robot_clock import RobotClock
from dp_ros.hardware.ur_rtde_backend import (
    connection_error,
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


def test_quaternion_sign_follows_a_fixed_reference_not_the_first_sample():
    # Near 180 deg the controller's rotation vector flips between +pi and -pi representations;
    # both must give the quaternion on the tool-down hemisphere, whichever comes first.
    for first, second in ((np.pi - 1e-3, -(np.pi - 1e-3)), (-(np.pi - 1e-3), np.pi - 1e-3)):
        a = ur_pose_to_pose([0.5, 0, 0.1, first, 0, 0])
        b = ur_pose_to_pose([0.5, 0, 0.1, second, 0, 0])
        assert a[3] > 0.99 and b[3] > 0.99
        assert np.dot(a[3:], b[3:]) > 0.99
    # exactly pi about x or y: still the +x / reference side
    assert ur_pose_to_pose([0, 0, 0, -np.pi, 0, 0])[3] == pytest.approx(1.0)
    # another reference (tool horizontal, 90 deg about y) keeps its own hemisphere
    ref = Rotation.from_rotvec([0, np.pi / 2, 0]).as_quat()
    for sign in (1, -1):
        q = ur_pose_to_pose([0, 0, 0, 0, sign * np.pi / 2, 0], reference=ref)[3:]
        assert np.dot(q, ref) >= 0


def test_robot_clock_stamps_follow_the_controller_not_the_read_time():
    clock = RobotClock()
    host0, robot0 = 1_700_000_000.0, 100.0
    # reads arrive with 1-5 ms jitter; the stamps keep the controller's 8 ms spacing
    jitter = [0.005, 0.001, 0.004, 0.002, 0.003]
    stamps = [clock.stamp(robot0 + 0.008 * k, host0 + 0.008 * k + j) for k, j in enumerate(jitter)]
    np.testing.assert_allclose(np.diff(stamps)[1:], 0.008, atol=2e-6)   # + the drift allowance
    assert stamps[-1] == pytest.approx(host0 + 0.008 * 4 + 0.001, abs=1e-5)   # the fastest arrival sets the offset
    # a frozen controller clock gives the same stamp again, however late it is read
    assert clock.stamp(robot0 + 0.032, host0 + 5.0) == stamps[-1]
    # a controller restart (time goes back) starts afresh
    assert clock.stamp(1.0, host0 + 10.0) == pytest.approx(host0 + 10.0)


def test_status_words_name_the_fault():
    assert ur_status.controller_fault(1, 1, 7, 3, 2, need_program=True) is None
    assert ur_status.controller_fault(3, 1 << ur_status.BIT_PROTECTIVE_STOPPED) == "protective stop"
    assert "emergency stop" in ur_status.controller_fault(7, (1 << 6) | (1 << 7))
    assert "emergency stop" in ur_status.controller_fault(safety_mode=6)
    assert "not powered" in ur_status.controller_fault(1, 1, robot_mode=3)
    assert "program not running" in ur_status.controller_fault(1, 1, 7, 1, 1, need_program=True)
    assert ur_status.controller_fault(1, 1, 7, 1, 1) is None   # the receive side needs no program


@pytest.mark.parametrize("message, hint", [
    ("ur_rtde: Please enable remote control on the robot!", "Remote Control"),
    ("read: End of file", "another client"),
    ("One of the RTDE input registers are already in use!", "another client"),
    ("Error: Could not connect to: 10.0.0.9 at 30004, verify the IP", "ping 10.0.0.9"),
])
def test_connection_errors_name_host_and_cause(message, hint):
    err = str(connection_error("10.0.0.9", "RTDE receive", RuntimeError(message)))
    assert "10.0.0.9" in err and hint in err
