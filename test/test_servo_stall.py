"""A servo tick stuck in the robot's client library is a fault the node reports by itself.

ur_rtde blocks its calls while its own thread reconnects after a dropped connection; the servo
loop then stops inside the call and could say nothing (seen once on the RTDE emulator: 30 s of
'following policy' after the drop). The node's stall watch, in its callback thread, latches a
fault naming the controller and publishes it on /servo/state, and a reset says why it cannot
proceed instead of waiting on the stuck loop. The blocking call is the one thing stood in for
here: the sim backend's fault check made to wait like ur_rtde's reconnect.
"""

import threading

import rclpy
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from std_srvs.srv import Trigger

from dp_ros import topics
from dp_ros.graph import default_config, load_params
from dp_ros.nodes.common import STATE_QOS
from dp_ros.nodes.msgs import pose_to_msg
from dp_ros.nodes.ur5_servo_node import Ur5ServoNode
from dp_ros.runtime import domain
from dp_ros.runtime.spin import SpinThread
from polling import wait_for


AT_START = np.asarray(load_params(default_config())["ur5_servo_node"]["start_pose"], dtype=float)


def test_a_tick_stuck_in_the_robot_client_latches_a_fault_and_a_reset_says_why_it_waits():
    claim = domain.claim({})
    rclpy.init(args=["--ros-args", "-p", "backend:=sim", "-p", "backend_call_timeout_s:=0.3"],
               domain_id=claim.domain_id)
    node = Ur5ServoNode()
    listener = rclpy.create_node("stall_listener")
    states = []
    listener.create_subscription(DiagnosticArray, topics.SERVO_STATE,
                                 lambda m: states.append((m.status[0].level, m.status[0].message)), STATE_QOS)
    pose_pub = listener.create_publisher(PoseStamped, topics.ROBOT_TCP_POSE, qos_profile_sensor_data)
    listener.create_timer(0.02, lambda: pose_pub.publish(pose_to_msg(AT_START, listener.get_clock().now().nanoseconds)))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(listener)
    spin = SpinThread(executor, "stall-test")
    entered, release = threading.Event(), threading.Event()
    answering = node.backend.fault

    def reconnecting():   # as ur_rtde's isConnected() while its receive thread reconnects
        entered.set()
        release.wait(30.0)
        return answering()
    node.backend.fault = reconnecting
    loop = threading.Thread(target=node.tick, daemon=True)
    try:
        loop.start()
        assert entered.wait(5.0)
        level, message = wait_for(lambda: next((s for s in states if s[0] == DiagnosticStatus.ERROR), None),
                                  what="a latched fault on /servo/state")
        assert "fault: robot: the robot backend has not answered for" in message and "latched" in message
        assert node.controller.latched

        answer = node._on_reset(Trigger.Request(), Trigger.Response())      # the loop still holds the robot
        assert not answer.success and "still stuck in a call to the robot" in answer.message
        release.set()
        loop.join(5.0)
        assert not loop.is_alive()
        wait_for(lambda: node.controller.measured is not None, what="the robot state")
        assert node._on_reset(Trigger.Request(), Trigger.Response()).success   # the call returned: reset works
        assert not node.controller.latched
    finally:
        release.set()
        if spin.stop():
            listener.destroy_node()
            node.destroy_node()
        rclpy.shutdown()
        claim.release()
