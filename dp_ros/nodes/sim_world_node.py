"""sim_world_node: the simulated hardware. Steps the task physics with the simulated UR5's TCP as
the pusher, renders the cameras, publishes robot state, and takes servo targets - all on the
/sim/* topics that the sim backends of camera_node, robot_state_node and ur5_servo_node use."""

import json

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger

from dp_ros import topics
from dp_ros.nodes.common import declare, run
from dp_ros.nodes.msgs import image_to_msg, msg_to_pose, ns_to_time, pose_to_msg
from dp_ros.nodes.robot_state_node import UR_JOINTS
from dp_ros.sim.world import SimWorld


MAX_CATCH_UP_S = 0.1


class SimWorldNode(Node):
    def __init__(self):
        super().__init__("sim_world_node")
        self.p = p = declare(self, "sim_world_node")
        self.world = SimWorld.from_params(p)
        self.episode = 0
        self.episode_start_ns = self._now()
        self.frame_numbers = {cam: 0 for cam in p["camera_names"]}
        self.tcp_pub = self.create_publisher(PoseStamped, topics.SIM_ROBOT_TCP, qos_profile_sensor_data)
        self.joint_pub = self.create_publisher(JointState, topics.SIM_ROBOT_STATE, qos_profile_sensor_data)
        self.task_pub = self.create_publisher(DiagnosticStatus, topics.SIM_TASK_STATE, 10)
        self.cam_pubs = {cam: self.create_publisher(Image, topics.SIM_CAMERA.format(name=cam), qos_profile_sensor_data)
                         for cam in p["camera_names"]}
        # the tracker a real cell would have: object poses at the camera rate, stamped at capture
        self.object_pubs = {name: self.create_publisher(PoseStamped, topics.OBJECT_POSE.format(name=name),
                                                        qos_profile_sensor_data)
                            for name in self.world.object_poses()}
        self.create_subscription(PoseStamped, topics.SIM_SERVO, self._on_servo, 10)
        self.create_service(Trigger, topics.SIM_RESET, self._on_reset)
        self.physics_dt = 1.0 / p["physics_rate_hz"]
        self._last_step_ns = None
        self.create_timer(self.physics_dt, self._step)
        self.create_timer(1.0 / p["camera_fps"], self._render)
        self.create_timer(0.1, self._publish_task)
        self.get_logger().info(f"sim world: task {p['task']}, cameras {p['camera_names']}")

    def _now(self):
        return self.get_clock().now().nanoseconds

    def _on_servo(self, msg):
        pose = msg_to_pose(msg)
        if np.all(np.isfinite(pose)):   # the servo node never sends NaN; the world still checks
            self.world.servo(pose)

    def _on_reset(self, request, response):
        self.episode += 1
        seed = int(self.p["seed"]) + self.episode
        self.world.reset(seed)
        self.episode_start_ns = self._now()
        self._last_step_ns = self.episode_start_ns
        response.success = True
        response.message = json.dumps({"episode": self.episode, "seed": seed})
        return response

    def _step(self):
        # Advance by the time that really passed (in physics sub-steps): a late or skipped timer
        # tick on a busy machine must not slow the world down (real-time factor 1). A stall longer
        # than MAX_CATCH_UP_S is not replayed at once.
        now = self._now()
        elapsed = self.physics_dt if self._last_step_ns is None else (now - self._last_step_ns) * 1e-9
        self._last_step_ns = now
        self.world.step(min(max(elapsed, 0.0), MAX_CATCH_UP_S))
        self.tcp_pub.publish(pose_to_msg(self.world.tcp_pose(), now))
        joints = JointState(name=UR_JOINTS, position=[float(q) for q in self.world.joints()])
        joints.header.stamp = ns_to_time(now)
        self.joint_pub.publish(joints)

    def _render(self):
        now = self._now()
        for name, pose in self.world.object_poses().items():
            self.object_pubs[name].publish(pose_to_msg(pose, now))
        for cam, pub in self.cam_pubs.items():
            self.frame_numbers[cam] += 1
            # frame number rides in frame_id so the camera backend can count drops
            pub.publish(image_to_msg(self.world.render(cam), now, f"sim_{cam}#{self.frame_numbers[cam]}"))

    def _publish_task(self):
        state = dict(self.world.task_state())
        elapsed = (self._now() - self.episode_start_ns) * 1e-9
        state["elapsed_s"] = round(elapsed, 3)
        state["real_time_factor"] = round(state["episode_time_s"] / elapsed, 4) if elapsed > 0.5 else 1.0
        state["done"] = bool(state.get("success")) or elapsed > self.p["episode_timeout_s"]
        status = DiagnosticStatus(level=DiagnosticStatus.OK, name="sim_task", message=str(state.get("task", "")),
                                  hardware_id=f"episode {self.episode}")
        status.values = [KeyValue(key=str(k), value=json.dumps(v.tolist() if isinstance(v, np.ndarray) else v))
                         for k, v in state.items()]
        status.values.append(KeyValue(key="episode", value=str(self.episode)))
        self.task_pub.publish(status)


def main(args=None):
    # The simulated robot and cameras stand in for hardware that has processors of its own.
    return run(SimWorldNode, args, realtime=True)


if __name__ == "__main__":
    raise SystemExit(main())
