"""The servo's state machine, without ROS: every transition, and the envelope on every command."""

import numpy as np
import pytest

from dp_ros.core.envelope import SafetyEnvelope
from dp_ros.core.servo_controller import HoldReason, ServoController

PERIOD_S = 0.008
WATCHDOG_S = 0.2
HOME = np.array([0.55, 0.0, 0.05, 1.0, 0.0, 0.0, 0.0])
MS = 1_000_000


def controller():
    env = SafetyEnvelope(np.array([0.3, -0.25, 0.02]), np.array([0.75, 0.25, 0.4]), 0.25, 1.5, 1.0)
    return ServoController(env, PERIOD_S, WATCHDOG_S)


def waypoints(start_ns, pose, n=5, step_ms=100):
    times = [start_ns + (k + 1) * step_ms * MS for k in range(n)]
    return times, np.tile(pose, (n, 1))


def following(c, t0):
    c.on_measured(HOME)
    c.on_waypoints(*waypoints(t0, HOME + [0.01, 0, 0, 0, 0, 0, 0]), t0)
    cmd = c.step(t0)
    assert cmd.reason is HoldReason.NONE
    return cmd


def test_no_command_before_robot_state_then_hold_at_the_measured_pose():
    c = controller()
    assert c.step(0) is None and c.reason is HoldReason.NO_ROBOT_STATE
    c.on_measured([np.nan] * 7)                     # a non-finite pose is not a robot state
    assert c.step(1) is None
    c.on_measured(HOME)
    cmd = c.step(2)
    assert cmd.reason is HoldReason.NO_INPUT_YET and cmd.holding
    assert not cmd.hold_started                    # it never moved: nothing to stop
    np.testing.assert_array_equal(cmd.pose, HOME)


def test_following_waypoints_ramps_from_the_command_and_stays_in_the_envelope():
    c = controller()
    following(c, 0)
    far = np.array([5.0, 5.0, 5.0, 1, 0, 0, 0])       # outside the workspace
    c.on_waypoints(*waypoints(10 * MS, far), 10 * MS)
    last = c.command.copy()
    for k in range(2, 25):                         # within the watchdog
        cmd = c.step(k * int(PERIOD_S * 1e9))
        assert cmd.reason is HoldReason.NONE
        assert np.all(cmd.pose[:3] <= [0.75, 0.25, 0.4]) and np.all(cmd.pose[:3] >= [0.3, -0.25, 0.02])
        assert np.linalg.norm(cmd.pose[:3] - last[:3]) <= 0.25 * PERIOD_S + 1e-9
        last = cmd.pose.copy()
    assert c.counts.clamped > 0


def test_watchdog_holds_once_after_silence_and_counts_one_hold():
    c = controller()
    following(c, 0)
    t = int(WATCHDOG_S * 1e9)
    assert c.step(t).reason is HoldReason.NONE     # at the limit: still following
    first = c.step(t + MS)
    assert first.reason is HoldReason.WATCHDOG and first.hold_started
    second = c.step(t + 2 * MS)
    assert second.holding and not second.hold_started
    np.testing.assert_array_equal(second.pose, first.pose)   # a hold does not move
    assert c.counts.holds == 1 and np.all(c.velocity == 0)


def test_new_waypoints_after_a_hold_resume_following():
    c = controller()
    following(c, 0)
    c.step(int(WATCHDOG_S * 1e9) + MS)
    assert c.holding
    t = int(0.5e9)
    c.on_waypoints(*waypoints(t, HOME), t)
    assert c.step(t).reason is HoldReason.NONE


def test_empty_or_rejected_waypoints_hold():
    c = controller()
    following(c, 0)
    c.on_waypoints([], np.zeros((0, 7)), MS)
    assert c.step(2 * MS).reason is HoldReason.NO_TRAJECTORY
    following(c, 3 * MS)
    with pytest.raises(ValueError):
        c.on_waypoints([5 * MS, 4 * MS], np.tile(HOME, (2, 1)), 3 * MS)   # times not increasing
    assert c.step(4 * MS).reason is HoldReason.NO_TRAJECTORY
    c.on_rejected_input(5 * MS)                                          # unreadable message
    assert c.step(6 * MS).reason is HoldReason.NO_TRAJECTORY
    assert c.counts.rejected_inputs == 2


def test_streamed_target_replaces_the_trajectory_and_a_nan_target_is_ignored():
    c = controller()
    following(c, 0)
    target = HOME + [0, 0.01, 0, 0, 0, 0, 0]
    assert c.on_target(target, MS)
    assert c.trajectory is None
    assert not c.on_target([np.nan] * 7, 2 * MS)
    np.testing.assert_array_equal(c.direct_target, target)
    assert c.counts.rejected_inputs == 1
    for k in range(1, 100):
        cmd = c.step(2 * MS + k * int(PERIOD_S * 1e9) // 10)
    assert cmd.reason is HoldReason.NONE and cmd.pose[1] > 0


def test_disable_holds_and_enable_resyncs_to_the_measured_pose():
    c = controller()
    following(c, 0)
    c.set_enabled(False)
    cmd = c.step(MS)
    assert cmd.reason is HoldReason.DISABLED and cmd.hold_started
    c.on_waypoints(*waypoints(2 * MS, HOME), 2 * MS)               # ignored while disabled
    assert c.step(3 * MS).reason is HoldReason.DISABLED
    moved = HOME + [0.05, 0, 0, 0, 0, 0, 0]                        # the arm was moved by hand
    c.on_measured(moved)
    c.set_enabled(True)
    np.testing.assert_array_equal(c.command, moved)
    assert c.step(4 * MS).reason is HoldReason.NO_TRAJECTORY       # enabled, nothing to follow yet
