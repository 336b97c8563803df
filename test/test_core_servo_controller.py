"""The servo's state machine, without ROS: every transition, braking holds, latches, sources,
and (hypothesis) every command inside the envelope whatever the inputs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dp_ros.core.envelope import SafetyEnvelope
from dp_ros.core.command_check import outside_box, tick_limits
from dp_ros.core.servo_controller import Action, HoldReason, ServoController
from dp_ros.core.transforms import quat_angle

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
    # starts at the measured pose with zero velocity, the path ramping from there toward HOME
    np.testing.assert_allclose(cmd.pose[:3], moved[:3], atol=1e-12)
    cmd = c.step(t + PERIOD_NS)
    assert moved[0] - AMAX * PERIOD_S ** 2 - 1e-12 <= cmd.pose[0] < moved[0]


def test_after_the_arm_was_moved_while_stopped_new_waypoints_never_pull_it_back():
    """Disabled, the arm is moved 10 cm (by hand; in simulation, the episode reset): the first
    waypoints lead on from where it is now, and no command may head back to the old one."""
    c = controller()
    following(c, 0)
    c.set_enabled(False, MS)
    run(c, 2 * MS, 100)                                 # brakes and stops at ~HOME
    assert c.holding and np.all(c.velocity == 0)
    t = int(1.0e9)
    moved = HOME + [0.10, 0.0, 0, 0, 0, 0, 0]
    c.on_measured(moved, t)
    assert c.set_enabled(True, t) == ""
    c.on_waypoints(*waypoints(t, moved + [0.01, 0, 0, 0, 0, 0, 0]), t)
    cmds = run(c, t, 60, measured=moved)
    xs = np.array([cmd.pose[0] for _, cmd in cmds])
    assert xs.min() >= moved[0] - 1e-9, f"pulled back {moved[0] - xs.min():.4f} m toward the old command"
    assert xs[-1] > moved[0]


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


# the move to start: 20 cm away, tool tilted 0.3 rad about x; at 1/5 of the speed limits
START = np.r_[0.45, 0.1, 0.2, np.cos(0.15), np.sin(0.15), 0.0, 0.0]
START_SPEED = 0.05
SLOW = SafetyEnvelope(LO, HI, START_SPEED, AMAX, WMAX * START_SPEED / VMAX)


def start_controller(**kw):
    return controller(start_pose=START, start_envelope=SLOW, **kw)


def move_until_done(c, t0, max_ticks=2000):
    """Tick with a fresh measured pose until the move to start has ended; the commands."""
    out = []
    for k in range(max_ticks):
        now = t0 + k * PERIOD_NS
        c.on_measured(HOME, now)
        out.append((now, c.step(now)))
        if c.start_move != "moving":
            return out
    raise AssertionError(f"the move to start did not end in {max_ticks} ticks")


def test_move_to_start_reaches_the_pose_within_the_slower_limits_and_holds_there():
    c = start_controller()
    c.on_measured(HOME, 0)
    assert c.step(0).reason is HoldReason.NO_INPUT_YET
    assert c.move_to_start(MS) == "" and c.start_move == "moving" and c.start_moves == 1
    c.on_waypoints(*waypoints(MS, HOME), MS)               # the policy's input meanwhile: not followed
    cmds = move_until_done(c, 2 * MS)
    assert c.start_move == "done"
    moving = [cmd for _, cmd in cmds[:-1]]
    assert all(cmd.reason is HoldReason.NONE and cmd.action is Action.SERVO for cmd in moving)
    assert c.status() == "no waypoints yet" and cmds[-1][1].reason is HoldReason.NO_INPUT_YET
    # speed, acceleration and rotation within the slower limits, the box, no jumps
    lim = tick_limits(np.arange(len(cmds)), [cmd.pose for _, cmd in cmds], PERIOD_S, [False] * len(cmds))
    assert lim["max_speed"] <= START_SPEED * 1.001 and lim["max_acc"] <= AMAX * 1.01, lim
    assert lim["max_ang_speed"] <= WMAX * START_SPEED / VMAX * 1.001, lim
    assert outside_box([cmd.pose[:3] for _, cmd in cmds], LO, HI) == 0.0
    # at the slow speed for most of the way: about distance / speed
    duration = len(cmds) * PERIOD_S
    distance = np.linalg.norm(START[:3] - HOME[:3])
    assert distance / START_SPEED <= duration <= distance / START_SPEED + 0.5
    # ends held at the pose: stops once, then sends nothing and stays put
    final = cmds[-1][1]
    np.testing.assert_allclose(final.pose[:3], START[:3], atol=1e-6)
    assert quat_angle(final.pose[3:], START[3:]) < 1e-6
    assert final.action is Action.STOP
    later = run(c, cmds[-1][0] + PERIOD_NS, 50)
    assert all(cmd.action is Action.NONE and np.array_equal(cmd.pose, final.pose) for _, cmd in later)


@pytest.mark.parametrize("stop, reason", [
    (lambda c, now: c.estop(), HoldReason.ESTOP),
    (lambda c, now: c.fault("protective stop"), HoldReason.FAULT),
    (lambda c, now: c.set_enabled(False, now), HoldReason.DISABLED),
])
def test_an_estop_fault_or_disable_stops_the_move_to_start(stop, reason):
    c = start_controller()
    c.on_measured(HOME, 0)
    c.step(0)
    assert c.move_to_start(0) == ""
    cmds = run(c, PERIOD_NS, 100)
    assert c.status() == "moving to start"
    t = 101 * PERIOD_NS
    stop(c, t)
    assert c.start_move.startswith("stopped: ") and not c.moving_to_start
    after = run(c, t, 100)
    assert all(cmd.reason is reason for _, cmd in after)
    assert_within_limits(cmds + after)                     # brakes within the limits
    assert [cmd.action for _, cmd in after].count(Action.STOP) == 1
    still = after[-1][1].pose
    assert np.linalg.norm(still[:3] - START[:3]) > 0.1     # stopped on the way, not carried on
    c.on_measured(HOME, t + 200 * PERIOD_NS)
    if reason is not HoldReason.DISABLED:
        assert c.reset(t + 200 * PERIOD_NS) == ""
    assert c.set_enabled(True, t + 200 * PERIOD_NS) == ""
    assert c.step(t + 201 * PERIOD_NS).reason is HoldReason.NO_INPUT_YET   # the move does not resume


def test_move_to_start_refusals_and_start_up_checks():
    c = controller()
    c.on_measured(HOME, 0)
    c.step(0)
    assert "no start pose configured" in c.move_to_start(0)
    c = start_controller()
    following(c, 0)
    assert "the arm is moving" in c.move_to_start(0)      # the slower limit must not cut a velocity
    c.set_enabled(False, 0)
    assert "enable the servo first" in c.move_to_start(0)
    c.estop()
    assert "reset first" in c.move_to_start(0)
    c.reset(0)
    c.set_enabled(True, 0)
    assert c.move_to_start(int(1e9)) == "no fresh robot state to start from"
    assert c.start_moves == 0
    # a start pose the envelope would clamp is an error at start-up, naming what is wrong
    with pytest.raises(ValueError, match="outside the workspace box"):
        controller(start_pose=np.r_[0.8, 0.0, 0.1, 1.0, 0.0, 0.0, 0.0])
    tilted = ServoController(SafetyEnvelope(LO, HI, VMAX, AMAX, WMAX, orientation_limit=(HOME[3:], 0.2)),
                             PERIOD_S, WATCHDOG_S, start_pose=HOME)
    np.testing.assert_array_equal(tilted.start_pose, HOME)
    with pytest.raises(ValueError, match="beyond orientation_limit_rad"):
        ServoController(SafetyEnvelope(LO, HI, VMAX, AMAX, WMAX, orientation_limit=(HOME[3:], 0.2)),
                        PERIOD_S, WATCHDOG_S, start_pose=START)
    params = dict(workspace_min=LO.tolist(), workspace_max=HI.tolist(), max_lin_speed=VMAX, max_lin_acc=AMAX,
                  max_ang_speed=WMAX, orientation_reference=[1.0, 0.0, 0.0, 0.0], orientation_limit_rad=0.0,
                  rate_hz=125.0, watchdog_timeout_s=WATCHDOG_S, max_measured_age_s=0.25, source="policy",
                  move_to_start=True, start_pose=START.tolist(), start_move_speed=START_SPEED)
    built = ServoController.from_params(params)
    assert built.start_envelope.max_lin_speed == START_SPEED
    assert built.start_envelope.max_ang_speed == pytest.approx(WMAX * START_SPEED / VMAX)
    assert ServoController.from_params(dict(params, move_to_start=False)).start_pose is None
    with pytest.raises(ValueError, match="above max_lin_speed"):
        ServoController.from_params(dict(params, start_move_speed=0.5))


poses = st.lists(st.one_of(st.floats(-3, 3), st.sampled_from([np.nan, np.inf, -np.inf, 0.55, 0.0, 1.0])),
                 min_size=7, max_size=7)
events = st.lists(st.one_of(
    st.tuples(st.just("measured"), poses),
    st.tuples(st.just("waypoints"), st.lists(poses, min_size=0, max_size=6), st.integers(-200, 400)),
    st.tuples(st.just("target"), poses),
    st.tuples(st.just("enable"), st.booleans()),
    st.tuples(st.just("source"), st.sampled_from(["policy", "teleop"])),
    st.tuples(st.just("estop")), st.tuples(st.just("reset")), st.tuples(st.just("start")),
    st.tuples(st.just("ticks"), st.integers(1, 40)),
), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(events)
def test_every_command_stays_in_the_envelope_whatever_arrives(evs):
    c = start_controller()
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
        elif kind == "start":
            c.move_to_start(now)
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
