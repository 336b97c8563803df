"""ur5_servo_node: timestamped waypoints -> servoL stream at the robot's rate, inside the safety
envelope, holding position when no valid waypoint arrives in time.

Runs in its own process with its own loop (sleep-then-spin), not an rclpy timer: rclpy timers
lose ticks at 500 Hz on small machines. Every command passes SafetyEnvelope.clamp first.
"""

import collections
import time

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from std_srvs.srv import SetBool
from trajectory_msgs.msg import MultiDOFJointTrajectory

from dp_ros import topics
from dp_ros.core.envelope import SafetyEnvelope
from dp_ros.core.priority import realtime
from dp_ros.core.interpolator import PoseTrajectory
from dp_ros.nodes.common import Diagnostics, declare, run
from dp_ros.nodes.msgs import msg_to_pose, msg_to_trajectory, pose_to_msg


class Ur5ServoNode(Node):
    def __init__(self):
        super().__init__("ur5_servo_node")
        self.p = p = declare(self, "ur5_servo_node")
        self.envelope = SafetyEnvelope.from_dict({k: p[k] for k in (
            "workspace_min", "workspace_max", "max_lin_speed", "max_lin_acc", "max_ang_speed")})
        self.period_s = 1.0 / p["rate_hz"]
        if p["backend"] == "sim":
            from dp_ros.nodes.sim_backends import SimRobotControl
            self.backend = SimRobotControl(self)
        elif p["backend"] == "rtde":
            from dp_ros.hardware.ur_rtde_backend import RTDEServo
            self.backend = RTDEServo(p["robot_host"], frequency_hz=p["rate_hz"],
                                     lookahead_time=p["lookahead_time"], gain=p["gain"],
                                     rt_priority=p["realtime_priority"])
        else:
            raise ValueError(f"unknown servo backend {p['backend']!r} (expected rtde or sim)")
        self.diag = Diagnostics(self)
        self.cmd_pub = self.create_publisher(PoseStamped, topics.SERVO_COMMAND, qos_profile_sensor_data)
        self.create_subscription(MultiDOFJointTrajectory, topics.SERVO_WAYPOINTS, self._on_waypoints, 10)
        self.create_subscription(PoseStamped, topics.SERVO_TARGET, self._on_target, 10)
        self.create_subscription(PoseStamped, topics.ROBOT_TCP_POSE, self._on_measured, qos_profile_sensor_data)
        self.create_service(SetBool, topics.SERVO_ENABLE, self._on_enable)

        self.measured = None          # latest measured TCP pose
        self.cmd = None               # last commanded pose (None until the robot state is known)
        self.velocity = np.zeros(3)
        self.trajectory = None        # PoseTrajectory from the scheduler
        self.direct_target = None     # streamed target from teleop
        self.last_input_ns = None
        self.enabled = True
        self.holding = True
        self.hold_reason = "waiting for robot state"
        self.counts = {"ticks": 0, "clamped": 0, "rejected_inputs": 0, "holds": 0, "missed_ticks": 0}
        self.period_errors = collections.deque(maxlen=int(10 * p["rate_hz"]))   # last 10 s, seconds late
        self.scheduling = "default"
        self.create_timer(1.0, self._report)

    # --- inputs
    def _now(self):
        return self.get_clock().now().nanoseconds

    def _on_measured(self, msg):
        pose = msg_to_pose(msg)
        if np.all(np.isfinite(pose)):
            self.measured = pose

    def _on_waypoints(self, msg):
        try:
            times, poses = msg_to_trajectory(msg)
            now = self._now()
            if len(times) and self.cmd is not None and times[0] > now:
                # start from where the command is now, so the path ramps into the first waypoint
                # instead of stepping to it
                times = np.concatenate([[now], times])
                poses = np.vstack([self.cmd, poses])
            self.trajectory = PoseTrajectory(times, poses) if len(times) else None
        except ValueError as exc:   # malformed / NaN: drop it, keep holding safely
            self.counts["rejected_inputs"] += 1
            self.trajectory = None
            self.get_logger().error(f"waypoints rejected: {exc}", throttle_duration_sec=1.0)
        self.direct_target = None
        self.last_input_ns = self._now()

    def _on_target(self, msg):
        pose = msg_to_pose(msg)
        if not np.all(np.isfinite(pose)):
            self.counts["rejected_inputs"] += 1
            return
        self.direct_target = pose
        self.trajectory = None
        self.last_input_ns = self._now()

    def _on_enable(self, request, response):
        self.enabled = bool(request.data)
        self.trajectory = self.direct_target = None
        if self.enabled:
            # Re-sync to where the arm really is: the next command starts from there, no jump.
            self.cmd = None if self.measured is None else self.measured.copy()
            self.velocity = np.zeros(3)
        response.success = True
        response.message = "following" if self.enabled else "holding"
        return response

    # --- the control step
    def _target(self, now_ns):
        """The pose to track now, or (None, reason) to hold."""
        if not self.enabled:
            return None, "disabled"
        if self.last_input_ns is None:
            return None, "no waypoints yet"
        if (now_ns - self.last_input_ns) * 1e-9 > self.p["watchdog_timeout_s"]:
            return None, "watchdog: no waypoints within timeout"
        if self.direct_target is not None:
            return self.direct_target, ""
        if self.trajectory is None:
            return None, "no future waypoints"
        return self.trajectory(now_ns), ""

    def tick(self):
        now = self._now()
        if self.cmd is None:
            if self.measured is None:
                return
            self.cmd = self.measured.copy()
        target, reason = self._target(now)
        if target is None:
            if not self.holding:
                self.backend.hold()
                self.counts["holds"] += 1
                self.get_logger().info(f"holding: {reason}")
            self.holding, self.hold_reason = True, reason
            self.velocity = np.zeros(3)
        else:
            self.holding, self.hold_reason = False, ""
            cmd, self.velocity, flags = self.envelope.clamp(target, self.cmd, self.velocity, self.period_s)
            if any(flags.values()):
                self.counts["clamped"] += 1
            self.cmd = cmd
            self.backend.servo(self.cmd, self.period_s)
        self.counts["ticks"] += 1
        msg = pose_to_msg(self.cmd, now)
        msg.header.frame_id = "base/hold" if self.holding else "base"
        self.cmd_pub.publish(msg)

    def _report(self):
        err = np.abs(np.asarray(self.period_errors)) * 1e3
        values = dict(self.counts, holding=self.holding, hold_reason=self.hold_reason, scheduling=self.scheduling)
        if err.size:
            values.update(period_error_ms_p50=f"{np.percentile(err, 50):.3f}",
                          period_error_ms_p99=f"{np.percentile(err, 99):.3f}", period_error_ms_max=f"{err.max():.3f}")
        self.diag.publish("ok", self.hold_reason or "following", values)

    def loop(self, executor):
        """Fixed-rate loop: spin callbacks until just before each deadline, then sleep to it."""
        # SCHED_FIFO when the OS permits (root, CAP_SYS_NICE or an rtprio limit): the loop then
        # preempts everything else on its core, inference included. Otherwise it says so.
        self.scheduling = realtime("SCHED_FIFO", int(self.p["realtime_priority"]))
        self.get_logger().info(f"servo loop at {self.p['rate_hz']:g} Hz, scheduling: {self.scheduling}")
        deadline = time.monotonic()
        while rclpy.ok():
            deadline += self.period_s
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0.0015:
                    break
                executor.spin_once(timeout_sec=remaining - 0.0015)
            remaining = deadline - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)
            now = time.monotonic()
            self.period_errors.append(now - deadline)
            self.counts["missed_ticks"] += int((now - deadline) / self.period_s)   # whole periods late
            if now - deadline > 5 * self.period_s:
                deadline = now   # fell far behind (machine stalled): resynchronise, don't burst
            self.tick()

    def close(self):
        try:
            self.backend.hold()
        finally:
            self.backend.stop()


def main(args=None):
    return run(Ur5ServoNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
