"""The move to a configured start pose through the real middleware: the sim world, the robot-state
node and the servo node as their own processes; `dp-ros deploy`'s client asks /servo/move_to_start
and waits on /servo/state. The simulated arm ends at the pose, every command within the slower
limits of the move."""

import math

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from rclpy.qos import qos_profile_sensor_data

from dp_ros import topics
from dp_ros.cli.deploy import move_to_start
from dp_ros.core.transforms import quat_angle
from dp_ros.graph import NodeSpec, check_graph, default_config, load_params
from dp_ros.nodes.msgs import msg_to_pose
from dp_ros.runtime.monitor import GraphMonitor, check_alive, wait_until
from dp_ros.runtime.processes import NodeProcesses
from servo_commands import ServoCommandLog, check_envelope

# 12 cm from the sim world's home pose, the tool turned 0.2 rad about the vertical
START = [0.50, 0.08, 0.12, math.cos(0.1), math.sin(0.1), 0.0, 0.0]
OVERRIDES = {"backend": "sim", "move_to_start": True, "start_pose": START, "start_move_speed": 0.05}


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    specs = check_graph([NodeSpec("sim_world_node", "sim_world_node", {}),
                         NodeSpec("robot_state_node", "robot_state_node", {"backend": "sim"}),
                         NodeSpec("ur5_servo_node", "ur5_servo_node", OVERRIDES)], default_config())
    procs = NodeProcesses(specs, default_config(), tmp_path_factory.mktemp("start_move")).start()
    monitor = GraphMonitor()
    commands = ServoCommandLog(monitor.node)
    measured = []
    monitor.node.create_subscription(PoseStamped, topics.ROBOT_TCP_POSE, lambda m: measured.append(msg_to_pose(m)),
                                     qos_profile_sensor_data)
    try:
        wait_until(lambda: len(commands) > 0 and measured, 120, procs, "the servo to hold at the measured pose")
        yield monitor, procs, commands, measured
    finally:
        monitor.close()
        procs.stop()


def test_move_to_start_service_moves_the_sim_arm_to_the_start_pose(graph):
    monitor, procs, commands, measured = graph
    servo = {**load_params(default_config())["ur5_servo_node"], **OVERRIDES}
    start_at = np.asarray(measured[-1])
    assert np.linalg.norm(start_at[:3] - START[:3]) > 0.1
    answer = move_to_start(monitor, servo, lambda: check_alive(procs))
    assert answer.startswith("moving to start: ") and answer.endswith("(move 1)")

    # every command of the move within the move's limits: its speed, the rotation at the same
    # fraction of max_ang_speed, the servo's acceleration, the box
    slow = dict(servo, max_lin_speed=servo["start_move_speed"],
                max_ang_speed=servo["max_ang_speed"] * servo["start_move_speed"] / servo["max_lin_speed"])
    cmds = list(commands)
    check_envelope(cmds, slow)
    final = cmds[-1][1]
    assert np.linalg.norm(final[:3] - START[:3]) < 1e-5 and quat_angle(final[3:], START[3:]) < 1e-5
    # the simulated arm follows (a first-order lag): it settles at the pose, and the servo holds
    wait_until(lambda: np.linalg.norm(measured[-1][:3] - START[:3]) < 2e-3
               and quat_angle(measured[-1][3:], START[3:]) < 0.01, 10, procs, "the arm to reach the start pose")
    wait_until(lambda: monitor.diagnostics.get("ur5_servo_node", ("", {}))[1].get("start_move") == "done", 5, procs,
               "the servo's diagnostics to report the move done")
    assert monitor.diagnostics["ur5_servo_node"][0] == "no waypoints yet"      # holding there
