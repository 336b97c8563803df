"""policy_node: To-step observation buffer -> DDIM inference -> Tp-step chunk with absolute times.

The network runs in an inference process of its own (dp_ros.policy.worker), fed by a thread of
this node on the scheduler's requests: the executor keeps filling the observation buffer while
the network runs, and neither waits for the other's interpreter lock. The heartbeat is published
only while that thread and the inference process are alive.
"""

import threading
import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Header
from trajectory_msgs.msg import MultiDOFJointTrajectory

from dp_ros import topics
from dp_ros.core.obs_buffer import ObservationBuffer, StaleObservation, fit_frame
from dp_ros.core.robot_features import feature, fixed_pose_problem, object_feature, split_sources
from dp_ros.nodes.common import Diagnostics, declare, run
from dp_ros.nodes.msgs import msg_to_image, msg_to_pose, msg_to_trajectory, ns_to_time, time_to_ns, trajectory_to_msg
from dp_ros.policy.config import PolicyConfig
from dp_ros.policy.planner import Commitment
from dp_ros.policy.worker import InferenceProcess

WARN_THROTTLE_S = 1.0


class PolicyNode(Node):
    def __init__(self):
        super().__init__("policy_node")
        self.p = declare(self, "policy_node")
        if not self.p["checkpoint"]:
            raise ValueError("parameter 'checkpoint' is empty: pass a checkpoint directory")
        self.worker = InferenceProcess.from_params(self.p)
        info = self.worker.start()
        cfg = PolicyConfig.from_dict(info["config"])
        self.robot = info["robot"]
        self.buffer = ObservationBuffer(list(cfg.cameras), dict(cfg.lowdim_obs), cfg.obs_horizon,
                                        1.0 / cfg.control_frequency_hz,
                                        max_frame_age_s=self.p["max_frame_age_s"])
        self.diag = Diagnostics(self)
        self.chunk_pub = self.create_publisher(MultiDOFJointTrajectory, topics.POLICY_CHUNK, 10)
        self.heartbeat_pub = self.create_publisher(Header, topics.POLICY_HEARTBEAT, 10)
        for cam, size in cfg.cameras.items():
            self.create_subscription(Image, topics.CAMERA_IMAGE.format(name=cam),
                                     lambda msg, cam=cam, size=tuple(size): self._on_image(cam, size, msg),
                                     qos_profile_sensor_data)
        self._joints = None
        if "joints" in self.robot["obs_sources"].values():   # 100+ msgs/s the policy need not parse otherwise
            self.create_subscription(JointState, topics.ROBOT_JOINTS, self._on_joints, qos_profile_sensor_data)
        self.create_subscription(PoseStamped, topics.ROBOT_TCP_POSE, self._on_pose, qos_profile_sensor_data)
        self.robot_sources, objects = split_sources(self.robot["obs_sources"])
        for name in sorted(set(objects.values())):
            keys = [k for k, n in objects.items() if n == name]
            self.create_subscription(PoseStamped, topics.OBJECT_POSE.format(name=name),
                                     lambda msg, keys=keys: self._on_object(keys, msg), qos_profile_sensor_data)
        self.create_subscription(MultiDOFJointTrajectory, topics.POLICY_REQUEST, self._on_request, 10)

        self.latencies = []        # request received -> chunk published, s
        self.compute_s = []        # the network alone, in the inference process
        self.held_chunks = 0       # chunks moved to keep to the demonstrations' motion (inpaint_demo_motion)
        self.held_max_m = 0.0      # and the most any was moved
        self.chunks = 0
        self.failures = 0
        self.last_error = ""
        self.fatal = ""
        self._request = threading.Event()
        self._request_t = None
        self._committed = None
        self._measured = None
        self._running = True
        self.get_logger().info(f"policy ready on {info['device']}, {info['threads']} torch thread(s), priority: "
                               f"{info['priority']} (warm-up {info['warm_up_s']:.2f} s), "
                               f"To={cfg.obs_horizon} Tp={cfg.pred_horizon} (trained with Ta={cfg.action_horizon}), "
                               f"{info['denoising_steps']} denoising steps")
        self._thread = threading.Thread(target=self._inference_loop, daemon=True)
        self._thread.start()
        self.create_timer(1.0 / self.p["heartbeat_hz"], self._heartbeat)
        self.create_timer(1.0, self._report)

    # --- subscriptions: fill the buffer
    def _on_image(self, cam, size, msg):
        try:
            image = msg_to_image(msg)
        except ValueError as exc:
            # rclpy keys log throttling by call site: every warn of this node uses WARN_THROTTLE_S
            self.get_logger().warning(f"camera {cam}: {exc}", throttle_duration_sec=WARN_THROTTLE_S)
            return
        self.buffer.add_frame(cam, time_to_ns(msg.header.stamp), fit_frame(image, size))

    def _on_joints(self, msg):
        self._joints = np.asarray(msg.position, dtype=np.float64)

    def _on_pose(self, msg):
        pose = msg_to_pose(msg)
        if not np.all(np.isfinite(pose)):
            return
        self._measured = pose
        values = {k: feature(src, pose, self._joints) for k, src in self.robot_sources.items()}
        if values:
            self.buffer.add_state(time_to_ns(msg.header.stamp), values)

    def _on_object(self, keys, msg):
        try:
            value = object_feature(msg_to_pose(msg))
        except ValueError as exc:
            self.get_logger().warning(f"object pose: {exc}", throttle_duration_sec=WARN_THROTTLE_S)
            return
        self.buffer.add_state(time_to_ns(msg.header.stamp), {k: value for k in keys})

    def _on_request(self, msg):
        self._request_t = time.perf_counter()
        try:
            times, poses = msg_to_trajectory(msg)
        except ValueError as exc:
            self.get_logger().warning(f"request's committed path unreadable, sampling freely: {exc}",
                                   throttle_duration_sec=WARN_THROTTLE_S)
            times = []
        # (path, when the request arrived): the path is frozen up to when the chunk can be back
        self._committed = (times, poses, self.get_clock().now().nanoseconds) if len(times) else None
        self._request.set()

    def _commitment(self):
        """The request's committed path as the planner takes it, or None. Certain up to the
        request's arrival + this node's recent request->chunk latency (90th percentile)."""
        if self._committed is None:
            return None
        times, poses, received_ns = self._committed
        recent = self.latencies[-20:] or [self.worker.info.get("warm_up_s", 0.0) / 2]
        until = received_ns + int(float(np.percentile(recent, 90)) * 1e9)
        return Commitment.from_params(times, poses, until, self.p)

    # --- inference thread
    def _inference_loop(self):
        try:
            while self._running:
                if not self._request.wait(timeout=0.2):
                    continue
                self._request.clear()
                t_request = self._request_t or time.perf_counter()
                try:
                    obs = self.buffer.build(self.get_clock().now().nanoseconds)
                    # a planar checkpoint would drive the tool to its fixed height / orientation
                    if self._measured is None:
                        raise StaleObservation("no measured TCP pose yet")
                    problem = fixed_pose_problem(self.robot, self._measured, self.p["fixed_pose_max_height_m"],
                                                 self.p["fixed_pose_max_angle_rad"])
                    if problem:
                        raise ValueError(problem)
                    times, poses, compute_s, held_m = self.worker.plan(obs, self._commitment())
                except (StaleObservation, ValueError) as exc:
                    self.failures += 1
                    self.last_error = str(exc)
                    self.get_logger().warning(f"no chunk: {exc}", throttle_duration_sec=WARN_THROTTLE_S)
                    continue
                self.chunk_pub.publish(trajectory_to_msg(times, poses))
                self.chunks += 1
                self.last_error = ""
                self.latencies.append(time.perf_counter() - t_request)
                self.compute_s.append(compute_s)
                del self.latencies[:-200], self.compute_s[:-200]
                if held_m > 0:    # the network left its demonstrations' motion where the chunk joins
                    self.held_chunks += 1
                    self.held_max_m = max(self.held_max_m, held_m)
        except Exception as exc:  # noqa: BLE001 - no silent death: the heartbeat stops, diagnostics say why
            self.fatal = f"inference stopped: {type(exc).__name__}: {exc}"
            self.get_logger().error(self.fatal)

    @property
    def inference_alive(self) -> bool:
        return self._thread.is_alive() and self.worker.alive and not self.fatal

    def _heartbeat(self):
        # The heartbeat means "a request will be answered": silent when inference is dead.
        if not self.inference_alive:
            return
        msg = Header(frame_id="policy")
        msg.stamp = ns_to_time(self.get_clock().now().nanoseconds)
        self.heartbeat_pub.publish(msg)

    def _report(self):
        lat = np.asarray(self.latencies[-100:]) * 1e3
        net = np.asarray(self.compute_s[-100:]) * 1e3
        values = {"chunks": self.chunks, "failures": self.failures, "device": self.worker.info.get("device", ""),
                  "chunks_held_to_demo_motion": self.held_chunks,
                  "demo_motion_held_max_cm": f"{self.held_max_m * 100:.1f}"}
        if lat.size:
            values.update(latency_ms_median=f"{np.median(lat):.1f}", latency_ms_p90=f"{np.percentile(lat, 90):.1f}",
                          latency_ms_max=f"{lat.max():.1f}", network_ms_median=f"{np.median(net):.1f}")
        if not self.inference_alive:
            self.diag.publish("error", self.fatal or "inference process died", values)
            return
        level = "warn" if self.failures and self.last_error else "ok"
        self.diag.publish(level, self.last_error or "ready", values)

    def close(self):
        self._running = False
        self._thread.join(timeout=2.0)
        self.worker.close()


def main(args=None):
    return run(PolicyNode, args, executor="events", realtime=True)


if __name__ == "__main__":
    raise SystemExit(main())
