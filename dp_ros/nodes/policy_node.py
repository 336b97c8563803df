"""policy_node: To-step observation buffer -> DDIM inference -> Tp-step chunk with absolute times.

Inference runs in its own thread (never on the executor), triggered by the action scheduler's
requests, so subscriptions keep filling the buffer while the network runs.
"""

import threading
import time

import cv2
import numpy as np
import torch
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Header
from trajectory_msgs.msg import MultiDOFJointTrajectory

from dp_ros import topics
from dp_ros.core.action_space import ActionSpace
from dp_ros.core.obs_buffer import ObservationBuffer, StaleObservation
from dp_ros.core.robot_features import feature, robot_spec
from dp_ros.nodes.common import Diagnostics, declare, run
from dp_ros.nodes.msgs import msg_to_image, msg_to_pose, ns_to_time, time_to_ns, trajectory_to_msg
from dp_ros.policy.checkpoint import load_checkpoint


class ChunkPlanner:
    """ROS-free: observation -> policy -> (times_ns, poses). Kept apart from the node for testing."""

    def __init__(self, policy, robot: dict, device):
        self.policy = policy
        self.cfg = policy.config
        self.device = device
        self.action_space = ActionSpace(robot["action_space"], np.asarray(robot["fixed_pose"]))
        self.dt_ns = int(round(1e9 / self.cfg.control_frequency_hz))

    def to_tensors(self, obs):
        batch = {}
        for cam, frames in obs.images.items():
            x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
            batch[cam] = x.permute(0, 3, 1, 2).float().div_(255.0).unsqueeze(0)
        for key, values in obs.lowdim.items():
            batch[key] = torch.as_tensor(values, dtype=torch.float32, device=self.device).unsqueeze(0)
        return batch

    def plan(self, obs, generator=None):
        with torch.inference_mode():
            out = self.policy.predict_action(self.to_tensors(obs), generator=generator)
        actions = out["action_pred"][0].float().cpu().numpy()
        if not np.all(np.isfinite(actions)):
            raise ValueError("policy produced non-finite actions; chunk discarded")
        # Action k of the chunk is meant for the k-th step of the grid that starts at the first
        # observation: index To-1 is the newest observation's time.
        t0 = int(obs.stamps_ns[0])
        times = np.array([t0 + k * self.dt_ns for k in range(len(actions))], dtype=np.int64)
        poses = np.stack([self.action_space.to_pose(a) for a in actions])
        return times, poses

    def warm_up(self, n=2):
        cfg = self.cfg
        To = cfg.obs_horizon
        batch = {cam: torch.zeros(1, To, 3, h, w, device=self.device) for cam, (h, w) in cfg.cameras.items()}
        for key, dim in cfg.lowdim_obs.items():
            batch[key] = torch.zeros(1, To, dim, device=self.device)
        for _ in range(n):
            with torch.inference_mode():
                self.policy.predict_action(batch)
        if self.device.type == "cuda":
            torch.cuda.synchronize()


class PolicyNode(Node):
    def __init__(self):
        super().__init__("policy_node")
        self.p = declare(self, "policy_node")
        if not self.p["checkpoint"]:
            raise ValueError("parameter 'checkpoint' is empty: pass a checkpoint directory")
        want = self.p["device"]
        device = torch.device("cuda" if (want == "auto" and torch.cuda.is_available()) else
                              ("cpu" if want == "auto" else want))
        policy = load_checkpoint(self.p["checkpoint"], device=device)
        cfg = policy.config
        extra = getattr(policy, "checkpoint_extra", None) or {}
        self.robot = robot_spec(extra, cfg.lowdim_obs, cfg.action_dim)
        self.planner = ChunkPlanner(policy, self.robot, device)
        self.buffer = ObservationBuffer(list(cfg.cameras), dict(cfg.lowdim_obs), cfg.obs_horizon,
                                        1.0 / cfg.control_frequency_hz,
                                        max_frame_age_s=self.p["max_frame_age_s"],
                                        max_state_gap_s=self.p["max_state_gap_s"])
        self.diag = Diagnostics(self)
        self.chunk_pub = self.create_publisher(MultiDOFJointTrajectory, topics.POLICY_CHUNK, 10)
        self.heartbeat_pub = self.create_publisher(Header, topics.POLICY_HEARTBEAT, 10)
        for cam, size in cfg.cameras.items():
            self.create_subscription(Image, topics.CAMERA_IMAGE.format(name=cam),
                                     lambda msg, cam=cam, size=tuple(size): self._on_image(cam, size, msg),
                                     qos_profile_sensor_data)
        self._joints = None
        self.create_subscription(JointState, topics.ROBOT_JOINTS, self._on_joints, qos_profile_sensor_data)
        self.create_subscription(PoseStamped, topics.ROBOT_TCP_POSE, self._on_pose, qos_profile_sensor_data)
        self.create_subscription(Header, topics.POLICY_REQUEST, self._on_request, 10)

        self.latencies = []
        self.chunks = 0
        self.failures = 0
        self.last_error = ""
        self._request = threading.Event()
        self._running = True
        t = time.perf_counter()
        self.planner.warm_up()
        self.get_logger().info(f"policy ready on {device} (warm-up {time.perf_counter() - t:.2f} s), "
                               f"To={cfg.obs_horizon} Tp={cfg.pred_horizon} Ta={cfg.action_horizon}")
        self._thread = threading.Thread(target=self._inference_loop, daemon=True)
        self._thread.start()
        self.create_timer(1.0 / self.p["heartbeat_hz"], self._heartbeat)
        self.create_timer(1.0, self._report)

    # --- subscriptions: fill the buffer
    def _on_image(self, cam, size, msg):
        try:
            image = msg_to_image(msg)
        except ValueError as exc:
            self.get_logger().warn(f"camera {cam}: {exc}", throttle_duration_sec=2.0)
            return
        h, w = size
        if image.shape[:2] != (h, w):
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        self.buffer.add_frame(cam, time_to_ns(msg.header.stamp), image)

    def _on_joints(self, msg):
        self._joints = np.asarray(msg.position, dtype=np.float64)

    def _on_pose(self, msg):
        pose = msg_to_pose(msg)
        if not np.all(np.isfinite(pose)):
            return
        values = {k: feature(src, pose, self._joints) for k, src in self.robot["obs_sources"].items()}
        self.buffer.add_state(time_to_ns(msg.header.stamp), values)

    def _on_request(self, msg):
        self._request.set()

    # --- inference thread
    def _inference_loop(self):
        while self._running:
            if not self._request.wait(timeout=0.2):
                continue
            self._request.clear()
            t_start = time.perf_counter()
            try:
                obs = self.buffer.build(self.get_clock().now().nanoseconds)
                times, poses = self.planner.plan(obs)
            except (StaleObservation, ValueError) as exc:
                self.failures += 1
                self.last_error = str(exc)
                self.get_logger().warn(f"no chunk: {exc}", throttle_duration_sec=1.0)
                continue
            latency = time.perf_counter() - t_start
            msg = trajectory_to_msg(times, poses)
            self.chunk_pub.publish(msg)
            self.chunks += 1
            self.last_error = ""
            self.latencies.append(latency)
            del self.latencies[:-200]

    def _heartbeat(self):
        msg = Header(frame_id="policy")
        msg.stamp = ns_to_time(self.get_clock().now().nanoseconds)
        self.heartbeat_pub.publish(msg)

    def _report(self):
        lat = np.asarray(self.latencies[-100:]) * 1e3
        values = {"chunks": self.chunks, "failures": self.failures, "device": str(self.planner.device)}
        if lat.size:
            values.update(latency_ms_median=f"{np.median(lat):.1f}", latency_ms_p90=f"{np.percentile(lat, 90):.1f}",
                          latency_ms_max=f"{lat.max():.1f}")
        level = "warn" if self.failures and self.last_error else "ok"
        self.diag.publish(level, self.last_error or "ready", values)

    def close(self):
        self._running = False
        self._thread.join(timeout=2.0)


def main(args=None):
    return run(PolicyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
