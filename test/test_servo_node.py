"""ur5_servo_node as its own process over DDS, fed hostile input directly: whatever arrives on
its topics, every command stays in the envelope; silence makes it hold within the watchdog."""

import time

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from trajectory_msgs.msg import MultiDOFJointTrajectory, MultiDOFJointTrajectoryPoint

from dp_ros import topics
from dp_ros.graph import NodeSpec, default_config, load_params
from dp_ros.nodes.msgs import pose_to_msg, trajectory_to_msg
from dp_ros.runtime.processes import NodeProcesses
from dp_ros.runtime.spin import SpinThread
from servo_commands import ServoCommandLog, check_envelope, check_hold, final_hold_start

SERVO = load_params(default_config())["ur5_servo_node"]
HOME = np.array([0.55, 0.0, 0.05, 1.0, 0.0, 0.0, 0.0])


@pytest.fixture(scope="module")
def servo(tmp_path_factory):
    procs = NodeProcesses([NodeSpec("ur5_servo_node", "ur5_servo_node", {"backend": "sim"})],
                          default_config(), tmp_path_factory.mktemp("servo")).start()
    rclpy.init(args=[])
    node = rclpy.create_node(SERVO["waypoint_publisher"])   # the publisher the servo follows
    commands = ServoCommandLog(node)
    pose_pub = node.create_publisher(PoseStamped, topics.ROBOT_TCP_POSE, qos_profile_sensor_data)
    wp_pub = node.create_publisher(MultiDOFJointTrajectory, topics.SERVO_WAYPOINTS, 10)
    node.create_timer(0.01, lambda: pose_pub.publish(pose_to_msg(HOME, node.get_clock().now().nanoseconds)))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = SpinThread(executor)
    deadline = time.monotonic() + 60
    while not commands and time.monotonic() < deadline:
        assert not procs.dead(), procs.log_tail("ur5_servo_node")
        time.sleep(0.05)
    assert commands, "servo never started commanding"
    yield node, wp_pub, commands, procs
    procs.stop()
    if spinner.stop():
        node.destroy_node()
    rclpy.shutdown()


def stream(node, wp_pub, make_poses, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        now = node.get_clock().now().nanoseconds
        times = [now + int(k * 1e8) for k in range(1, 9)]
        wp_pub.publish(trajectory_to_msg(times, make_poses(times), stamp_ns=now))
        time.sleep(0.05)


def test_hostile_waypoints_never_leave_the_envelope(servo):
    node, wp_pub, commands, procs = servo
    rng = np.random.default_rng(0)
    start = len(commands)

    def far_and_jumpy(times):      # metres outside the box, jumping every message
        return [np.r_[rng.uniform(-3, 3, 3), HOME[3:]] for _ in times]

    def nan_poses(times):
        return [np.r_[np.nan, 0.0, 0.0, HOME[3:]] for _ in times]

    def bad_quaternions(times):
        return [np.r_[0.6, 0.1, 0.1, 0.0, 0.0, 0.0, 0.0] for _ in times]

    stream(node, wp_pub, far_and_jumpy, 1.5)
    stream(node, wp_pub, nan_poses, 0.5)
    stream(node, wp_pub, bad_quaternions, 0.5)
    # a message whose waypoint carries two transforms (malformed for a single TCP)
    msg = MultiDOFJointTrajectory()
    msg.header.stamp = node.get_clock().now().to_msg()
    point = MultiDOFJointTrajectoryPoint()
    point.transforms = [trajectory_to_msg([1], [HOME]).points[0].transforms[0]] * 2
    msg.points = [point]
    wp_pub.publish(msg)
    stream(node, wp_pub, far_and_jumpy, 1.0)
    time.sleep(0.2)
    assert not procs.dead(), procs.log_tail("ur5_servo_node")
    cmds = commands[start:]
    assert len(cmds) > 200
    check_envelope(cmds, SERVO)
    moved = np.linalg.norm(np.diff([c[1][:3] for c in cmds], axis=0), axis=1).sum()
    assert moved > 0.05, "the servo did not follow valid (clamped) targets at all"


def test_silence_makes_the_servo_hold_within_the_watchdog(servo):
    node, wp_pub, commands, procs = servo
    stream(node, wp_pub, lambda times: [HOME + np.r_[0.1, 0.1, 0, 0, 0, 0, 0]] * len(times), 1.0)
    t_last = node.get_clock().now().nanoseconds
    time.sleep(SERVO["watchdog_timeout_s"] + 1.0)
    after = [c for c in commands if c[0] > t_last]
    holds = [c for c in after if c[2]]
    assert holds, "no hold after the waypoints stopped"
    # Margin for the delivery of the last message on a loaded 2-core machine: the point is that
    # the hold comes from the watchdog (0.25 s), not from some later event.
    assert (holds[0][0] - t_last) * 1e-9 <= SERVO["watchdog_timeout_s"] + 0.5
    check_hold(list(commands), final_hold_start(list(commands)), SERVO)
    check_envelope(list(commands), SERVO)
