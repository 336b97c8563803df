"""Sim backends of the hardware nodes: the same interfaces as the RealSense / ur_rtde backends,
talking to sim_world_node over ROS topics instead of to a device, so each node runs its own code
path in simulation exactly as on the real robot."""

import queue
import threading

import numpy as np
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import Image, JointState
from rclpy.qos import qos_profile_sensor_data

from dp_ros import topics
from dp_ros.hardware.base import (CameraBackend, CameraStats, Frame, RobotControlBackend, RobotReceiveBackend,
                                  RobotStateSample)
from dp_ros.nodes.msgs import msg_to_image, msg_to_pose, pose_to_msg, time_to_ns


class SimCamera(CameraBackend):
    """Frames rendered by the sim world; capture time = the world's render stamp."""

    def __init__(self, node, name: str):
        self._queue = queue.Queue(maxsize=4)
        self._frames = 0
        self._dropped = 0
        self._last_number = None
        self._name = name
        self._sub = node.create_subscription(Image, topics.SIM_CAMERA.format(name=name), self._on_image,
                                             qos_profile_sensor_data)

    def _on_image(self, msg):
        number = int(msg.header.frame_id.rsplit("#", 1)[-1]) if "#" in msg.header.frame_id else None
        if number is not None and self._last_number is not None and number > self._last_number + 1:
            self._dropped += number - self._last_number - 1
        self._last_number = number
        frame = Frame(capture_time_s=time_to_ns(msg.header.stamp) * 1e-9, image=msg_to_image(msg),
                      frame_number=number if number is not None else self._frames)
        self._frames += 1
        try:
            self._queue.put_nowait(frame)
        except queue.Full:  # the publisher thread is behind: keep the newest frames
            self._dropped += 1
            self._queue.get_nowait()
            self._queue.put_nowait(frame)

    def start(self):
        pass

    def read(self, timeout_s: float = 1.0):
        try:
            return self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def stop(self):
        pass

    @property
    def stats(self) -> CameraStats:
        return CameraStats(frames=self._frames, dropped=self._dropped)


class SimRobotReceive(RobotReceiveBackend):
    """Latest TCP pose and joints of the simulated UR5."""

    def __init__(self, node):
        self._lock = threading.Lock()
        self._pose = None
        self._pose_time = None
        self._joints = np.zeros(6)
        node.create_subscription(PoseStamped, topics.SIM_ROBOT_TCP, self._on_pose, qos_profile_sensor_data)
        node.create_subscription(JointState, topics.SIM_ROBOT_STATE, self._on_joints, qos_profile_sensor_data)

    def _on_pose(self, msg):
        with self._lock:
            self._pose = msg_to_pose(msg)
            self._pose_time = time_to_ns(msg.header.stamp) * 1e-9

    def _on_joints(self, msg):
        with self._lock:
            self._joints = np.asarray(msg.position, dtype=np.float64)

    def read(self):
        with self._lock:
            if self._pose is None:
                return None
            return RobotStateSample(time_s=self._pose_time, tcp_pose=self._pose.copy(), joints=self._joints.copy())


class SimRobotControl(RobotControlBackend):
    """servoL targets sent to the simulated UR5."""

    def __init__(self, node):
        self._node = node
        self._pub = node.create_publisher(PoseStamped, topics.SIM_SERVO, 10)

    def servo(self, pose, dt_s: float):
        self._pub.publish(pose_to_msg(pose, self._node.get_clock().now().nanoseconds))

    def hold(self):
        pass  # the simulated servo keeps its last target, as servoStop leaves the arm standing

    def stop(self):
        pass
