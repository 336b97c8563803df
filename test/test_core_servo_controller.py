"""The servo's state machine, without ROS: every transition, braking holds, latches, sources,
and (hypothesis) every command inside the envelope whatever the inputs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dp_ros.core.envelope import SafetyEnvelope
from dp_ros.core.command_check import outside_box, tick_limits
from dp_ros.core.servo_controller import Action, HoldReason, ServoController

PERIOD_S = 0.008
PERIOD_NS = int(PERIOD_S * 1e9)
WATCHDOG_S = 0.2
LO, HI = np.array([0.3, -0.25, 0.02]), np.array([0.75, 0.25, 0.4])
VMAX, AMAX, WMAX = 0.25, 1.5, 1.0
HOME = np.array([0.55, 0.0, 0.05, 1.0, 0.0, 0.0, 0.0])
MS = 1_000_000


def controller(**kw):
    return ServoController(SafetyEnvelope(LO, HI, VMAX, AMAX, WMAX), PERIOD_S, WATCHDOG_S, **kw)


def waypoints(start_ns, pose, n=5, step_ms=100):
    times = [start_ns + (k + 1) * step_ms * MS for k in range(n)]
    return times, np.tile(pose, (n, 1))


def run(c, t0, ticks, measured=HOME):
    """Step `ticks` times from t0 with a fresh measured pose each tick; returns the commands."""
    out = []
    for k in range(ticks):
        now = t0 + k * PERIOD_NS
        c.on_measured(measured, now)
        out.append((now, c.step(now)))
    return out


def following(c, t0, offset=(0.01, 0, 0)):
    c.on_measured(HOME, t0)
    c.on_waypoints(*waypoints(t0, HOME + [*offset, 0, 0, 0, 0]), t0)
    cmd = c.step(t0)
    assert cmd.reason is HoldReason.NONE and cmd.action is Action.SERVO
    return cmd


def assert_within_limits(cmds):
    """cmds: (stamp, command) of consecutive ticks."""
    cmds = [c for _, c in cmds if c is not None]
    assert outside_box([c.pose[:3] for c in cmds], LO, HI) == 0.0
    lim = tick_limits(np.arange(len(cmds)), [c.pose for c in cmds], PERIOD_S, [c.resynced for c in cmds])
    assert lim["max_speed"] <= VMAX * 1.001 and lim["max_acc"] <= AMAX * 1.01, lim
    assert lim["max_ang_speed"] <= WMAX * 1.001, lim


def test_no_command_before_robot_state_then_hold_at_the_measured_pose():
    c = controller()
    assert c.step(0) is None and c.reason is HoldReason.NO_ROBOT_STATE
    c.on_measured([np.nan] * 7, 1)                  # a non-finite pose is not a robot state
    assert c.step(1) is None
    c.on_measured(HOME, 2)
    cmd = c.step(2)
    assert cmd.reason is HoldReason.NO_INPUT_YET and cmd.action is Action.NONE   # never moved: nothing to stop
    np.testing.assert_array_equal(cmd.pose, HOME)


def test_following_ramps_from_the_command_and_stays_in_the_envelope():
    c = controller()
    following(c, 0)
    far = np.array([5.0, 5.0, 5.0, 1, 0, 0, 0])       # outside the workspace
    c.on_waypoints(*waypoints(10 * MS, far), 10 * MS)
    cmds = run(c, PERIOD_NS, 24)                      # within the watchdog
    assert all(cmd.reason is HoldReason.NONE for _, cmd in cmds)
    assert_within_limits(cmds)
    assert c.counts.clamped > 0


def test_a_hold_brakes_within_the_acceleration_limit_then_stops_once():
    c = controller()
    following(c, 0, offset=(0.2, 0, 0))
    cmds = run(c, PERIOD_NS, 24)                      # accelerating toward the far waypoint
    assert np.linalg.norm(c.velocity) > 0.1
    cmds += run(c, cmds[-1][0] + PERIOD_NS + int(WATCHDOG_S * 1e9), 60)   # silence: watchdog hold
    holds = [cmd for _, cmd in cmds if cmd.holding]
    assert holds[0].reason is HoldReason.WATCHDOG and holds[0].action is Action.SERVO   # braking
    actions = [cmd.action for cmd in holds]
    assert actions.count(Action.STOP) == 1 and actions[-1] is Action.NONE
    assert c.counts.holds == 1
    # the braking commands (their own ticks, without the silent gap before the hold)
    braking = [(t, cmd) for t, cmd in cmds if cmd.holding]
    assert_within_limits(braking)


def test_new_waypoints_after_a_stopped_hold_resume_from_the_measured_pose():
    c = controller()
    following(c, 0)
    run(c, int(WATCHDOG_S * 1e9) + MS, 50)
    assert c.holding and np.all(c.velocity == 0)
    t = int(0.8e9)
    moved = HOME + [0.003, 0, 0, 0, 0, 0, 0]           # tracking lag / moved by hand
    c.on_measured(moved, t)
    c.on_waypoints(*waypoints(t, HOME), t)
    cmd = c.step(t)
    assert cmd.reason is HoldReason.NONE and cmd.resynced
    # starts at the measured pose with zero velocity: one tick of acceleration toward HOME
    np.testing.assert_allclose(cmd.pose[:3], moved[:3] - [AMAX * PERIOD_S ** 2, 0, 0], atol=1e-9)


def test_empty_refused_and_unreadable_waypoints_hold():
    c = controller()
    following(c, 0)
    c.on_waypoints([], np.zeros((0, 7)), MS)
    assert c.step(2 * MS).reason is HoldReason.NO_TRAJECTORY
    following(c, 3 * MS)
    with pytest.raises(ValueError):
        c.on_waypoints([5 * MS, 4 * MS], np.tile(HOME, (2, 1)), 3 * MS)   # times not increasing
    assert c.step(4 * MS).reason is HoldReason.NO_TRAJECTORY
    c.on_rejected_input(5 * MS)
    assert c.step(6 * MS).reason is HoldReason.NO_TRAJECTORY
    assert c.counts.rejected_inputs == 2


def test_only_the_active_source_commands():
    c = controller()
    following(c, 0)
    assert not c.on_target(HOME + [0, 0.05, 0, 0, 0, 0, 0], MS)          # teleop while the policy drives
    assert c.counts.ignored_inputs == 1 and c.direct_target is None
    c.select_source("teleop")
    assert c.step(2 * MS).reason is HoldReason.NO_INPUT_YET               # the old trajectory is gone
    c.on_waypoints(*waypoints(3 * MS, HOME), 3 * MS)                     # policy now ignored
    assert c.trajectory is None and c.counts.ignored_inputs == 2
    target = HOME + [0, 0.01, 0, 0, 0, 0, 0]
    assert c.on_target(target, 4 * MS)
    assert not c.on_target([np.nan] * 7, 5 * MS) and c.counts.rejected_inputs == 1
    cmds = run(c, 5 * MS, 20)
    assert cmds[-1][1].reason is HoldReason.NONE and cmds[-1][1].pose[1] > 0
    with pytest.raises(ValueError):
        c.select_source("joystick")


def test_disable_holds_and_enable_needs_a_fresh_robot_state():
    c = controller()
    following(c, 0)
    c.set_enabled(False, MS)
    assert c.step(MS).reason is HoldReason.DISABLED
    c.on_waypoints(*waypoints(2 * MS, HOME), 2 * MS)
    assert c.step(3 * MS).reason is HoldReason.DISABLED
    late = int(1e9)                                                      # measured pose 1 s old
    assert c.set_enabled(True, late) == "no fresh robot state to start from"
    c.on_measured(HOME, late)
    assert c.set_enabled(True, late) == ""
    assert c.step(late).reason is HoldReason.NO_INPUT_YET


def test_emergency_stop_latches_until_reset_and_then_needs_enable():
    c = controller()
    following(c, 0)
    c.estop()
    assert c.step(MS).reason is HoldReason.ESTOP
    c.on_waypoints(*waypoints(2 * MS, HOME), 2 * MS)                     # input does not clear it
    assert c.step(3 * MS).reason is HoldReason.ESTOP
    assert "reset first" in c.set_enabled(True, 3 * MS)
    c.on_measured(HOME, 4 * MS)
    assert c.reset(4 * MS) == ""
    assert c.step(5 * MS).reason is HoldReason.DISABLED                  # reset alone does not move
    assert c.set_enabled(True, 5 * MS) == ""
    c.on_waypoints(*waypoints(6 * MS, HOME), 6 * MS)
    assert c.step(6 * MS).reason is HoldReason.NONE


def test_faults_latch_and_reset_refuses_while_the_robot_still_reports_one():
    c = controller()
    following(c, 0)
    c.fault("protective stop")
    c.fault("second reason")                                            # the first cause is kept
    assert c.step(MS).reason is HoldReason.FAULT and "protective stop" in c.status()
    c.on_measured(HOME, 2 * MS)
    assert c.reset(2 * MS, active_fault="protective stop") == "still faulted: protective stop"
    assert c.step(3 * MS).reason is HoldReason.FAULT
    assert c.reset(3 * MS) == "" and c.counts.latches == 1


def test_a_stale_measured_pose_while_following_latches_a_fault():
    c = controller(max_measured_age_s=0.05)
    following(c, 0)
    c.on_waypoints(*waypoints(MS, HOME), MS)
    assert c.step(40 * MS).reason is HoldReason.NONE
    assert c.step(60 * MS).reason is HoldReason.FAULT                   # robot state node died
    assert "robot state stale" in c.status()


poses = st.lists(st.one_of(st.floats(-3, 3), st.sampled_from([np.nan, np.inf, -np.inf, 0.55, 0.0, 1.0])),
                 min_size=7, max_size=7)
events = st.lists(st.one_of(
    st.tuples(st.just("measured"), poses),
    st.tuples(st.just("waypoints"), st.lists(poses, min_size=0, max_size=6), st.integers(-200, 400)),
    st.tuples(st.just("target"), poses),
    st.tuples(st.just("enable"), st.booleans()),
    st.tuples(st.just("source"), st.sampled_from(["policy", "teleop"])),
    st.tuples(st.just("estop")), st.tuples(st.just("reset")),
    st.tuples(st.just("ticks"), st.integers(1, 40)),
), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(events)
def test_every_command_stays_in_the_envelope_whatever_arrives(evs):
    c = controller()
    now = 0
    out = []
    c.on_measured(HOME, now)
    for ev in evs:
        kind = ev[0]
        if kind == "measured":
            c.on_measured(ev[1], now)
        elif kind == "waypoints":
            times = [now + (ev[2] + 50 * k) * MS for k in range(len(ev[1]))]
            try:
                c.on_waypoints(times, np.array(ev[1]).reshape(-1, 7), now)
            except ValueError:
                pass
        elif kind == "target":
            c.on_target(ev[1], now)
        elif kind == "enable":
            c.set_enabled(ev[1], now)
        elif kind == "source":
            c.select_source(ev[1])
        elif kind == "estop":
            c.estop()
        elif kind == "reset":
            c.reset(now)
        else:
            for _ in range(ev[1]):
                now += PERIOD_NS
                c.on_measured(HOME, now)   # the arm reports where it is
                cmd = c.step(now)
                if cmd is not None and not cmd.resynced:
                    out.append((now, cmd))
                elif cmd is not None:       # a re-sync starts a new continuous segment
                    assert_segment(out)
                    out = [(now, cmd)]
    assert_segment(out)


def assert_segment(cmds):
    assert_within_limits(cmds)
