"""robot_state_node: the UR5's TCP pose (PoseStamped) and joints (JointState) at the robot rate.

Samples are stamped with the controller's own clock mapped onto ROS time (RTDE) or the sim
world's stamp, and published only when that stamp advances: a frozen or lost robot stream
stops the topics instead of repeating the last pose as fresh data. A backend fault (safety
stop, lost connection, frozen controller clock) stops publishing and reports ERROR with the
reason on /diagnostics. A lost connection is retried every RECONNECT_INTERVAL_S: the receive side
only reads, so streaming again is safe, and the servo's reset needs a fresh robot state."""

import time

from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import JointState

from dp_ros import topics
from dp_ros.nodes import backends
from dp_ros.nodes.common import Diagnostics, declare, run
from dp_ros.nodes.msgs import ns_to_time, pose_to_msg

RECONNECT_INTERVAL_S = 2.0

UR_JOINTS = ["shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint",
             "wrist_1_joint", "wrist_2_joint", "wrist_3_joint"]


class RobotStateNode(Node):
    def __init__(self):
        super().__init__("robot_state_node")
        self.p = declare(self, "robot_state_node")
        self.backend = backends.robot_receive(self, self.p)
        self.pose_pub = self.create_publisher(PoseStamped, topics.ROBOT_TCP_POSE, qos_profile_sensor_data)
        self.joint_pub = self.create_publisher(JointState, topics.ROBOT_JOINTS, qos_profile_sensor_data)
        self.diag = Diagnostics(self)
        self.published = 0
        self.fault = None
        self.state_timeout_s = self.p["state_timeout_s"]
        self._last_sample_time = None
        self._last_publish = None   # time.monotonic() of the last publication
        self._next_reconnect = 0.0
        self.create_timer(1.0 / self.p["rate_hz"], self._tick)
        self.create_timer(1.0, self._report)

    def _tick(self):
        fault = self.backend.fault()
        if fault != self.fault:
            if fault:   # one call site per severity: rclpy refuses a severity change at one site
                self.get_logger().error(f"robot fault: {fault}")
                self._next_reconnect = time.monotonic() + RECONNECT_INTERVAL_S   # the fault is seen first
            else:
                self.get_logger().info("robot fault cleared")
            self.fault = fault
        if fault:
            self._maybe_reconnect()
            return   # nothing from a faulted robot is published as if it were valid
        sample = self.backend.read()
        if sample is None or (self._last_sample_time is not None and sample.time_s <= self._last_sample_time):
            return   # nothing new since the last tick (the sim world steps at its own rate)
        self._last_sample_time = sample.time_s
        stamp_ns = int(sample.time_s * 1e9)
        self.pose_pub.publish(pose_to_msg(sample.tcp_pose, stamp_ns))
        joints = JointState(name=UR_JOINTS, position=[float(q) for q in sample.joints])
        joints.header.stamp = ns_to_time(stamp_ns)
        self.joint_pub.publish(joints)
        self.published += 1
        self._last_publish = time.monotonic()

    def _maybe_reconnect(self):
        lost = getattr(self.backend, "connection_lost", None)
        if lost is None or not lost() or time.monotonic() < self._next_reconnect:
            return
        self._next_reconnect = time.monotonic() + RECONNECT_INTERVAL_S
        try:
            self.backend.reconnect()
            self.get_logger().info("robot connection re-established")
        except RuntimeError as exc:
            self.get_logger().warning(f"{exc}; retrying every {RECONNECT_INTERVAL_S:g} s",
                                      throttle_duration_sec=10.0)

    def _report(self):
        values = {"published": self.published}
        if self.fault:
            self.diag.publish("error", f"robot fault: {self.fault}", values)
        elif self._last_publish is None:
            self.diag.publish("warn", "no robot state yet", values)
        elif time.monotonic() - self._last_publish > max(self.state_timeout_s, 5.0 / self.p["rate_hz"]):
            self.diag.publish("warn", f"no new robot state for {time.monotonic() - self._last_publish:.2f} s", values)
        else:
            self.diag.publish("ok", "streaming", values)

    def close(self):
        self.backend.close()


def main(args=None):
    return run(RobotStateNode, args, realtime=True)


if __name__ == "__main__":
    raise SystemExit(main())
