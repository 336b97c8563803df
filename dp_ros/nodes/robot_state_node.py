"""robot_state_node: the UR5's TCP pose (PoseStamped) and joints (JointState) at the robot rate."""

from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import JointState

from dp_ros import topics
from dp_ros.nodes import backends
from dp_ros.nodes.common import Diagnostics, declare, run
from dp_ros.nodes.msgs import ns_to_time, pose_to_msg

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
        self._last_sample_time = None
        self.create_timer(1.0 / self.p["rate_hz"], self._tick)
        self.create_timer(1.0, lambda: self.diag.publish("ok" if self.published else "warn",
                                                         "streaming" if self.published else "no robot state yet",
                                                         {"published": self.published}))

    def _tick(self):
        sample = self.backend.read()
        if sample is None or sample.time_s == self._last_sample_time:
            return   # nothing new since the last tick (the sim world steps at its own rate)
        self._last_sample_time = sample.time_s
        # The sim backend stamps with the world's ROS time; RTDE samples are stamped on receipt.
        stamp_ns = int(sample.time_s * 1e9) if sample.time_s else self.get_clock().now().nanoseconds
        self.pose_pub.publish(pose_to_msg(sample.tcp_pose, stamp_ns))
        joints = JointState(name=UR_JOINTS, position=[float(q) for q in sample.joints])
        joints.header.stamp = ns_to_time(stamp_ns)
        self.joint_pub.publish(joints)
        self.published += 1

    def close(self):
        stop = getattr(self.backend, "stop", None)
        if stop:
            stop()


def main(args=None):
    return run(RobotStateNode, args, realtime=True)


if __name__ == "__main__":
    raise SystemExit(main())
