"""ur5_servo_node: timestamped waypoints -> servoL stream at the robot's rate, inside the safety
envelope, holding position when no valid waypoint arrives in time.

The decisions (what to follow, when to hold and why, the envelope) are core/servo_controller.py;
this node converts messages, drives the backend, publishes the command and its state.

Runs in its own process with its own loop (sleep-then-spin), not an rclpy timer: rclpy timers
lose ticks at 500 Hz on small machines. Every command passes SafetyEnvelope.clamp first.
"""

import collections
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from std_srvs.srv import SetBool
from trajectory_msgs.msg import MultiDOFJointTrajectory

from dp_ros import topics
from dp_ros.core.envelope import SafetyEnvelope
from dp_ros.core.priority import realtime
from dp_ros.core.servo_controller import ServoController
from dp_ros.nodes import backends
from dp_ros.nodes.common import Diagnostics, declare, run
from dp_ros.nodes.msgs import msg_to_pose, msg_to_trajectory, ns_to_time, pose_to_msg

# the servo's state on every change; a late subscriber gets the current one
STATE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class Ur5ServoNode(Node):
    def __init__(self):
        super().__init__("ur5_servo_node")
        self.p = p = declare(self, "ur5_servo_node")
        self.period_s = 1.0 / p["rate_hz"]
        self.controller = ServoController(
            SafetyEnvelope(p["workspace_min"], p["workspace_max"], p["max_lin_speed"], p["max_lin_acc"],
                           p["max_ang_speed"], orientation_limit=(p["orientation_reference"],
                                                                  p["orientation_limit_rad"])
                           if p["orientation_limit_rad"] > 0 else None),
            self.period_s, p["watchdog_timeout_s"])
        self.backend = backends.robot_control(self, p)
        self.diag = Diagnostics(self)
        self.cmd_pub = self.create_publisher(PoseStamped, topics.SERVO_COMMAND, qos_profile_sensor_data)
        self.state_pub = self.create_publisher(DiagnosticArray, topics.SERVO_STATE, STATE_QOS)
        self.create_subscription(MultiDOFJointTrajectory, topics.SERVO_WAYPOINTS, self._on_waypoints, 10)
        self.create_subscription(PoseStamped, topics.SERVO_TARGET, self._on_target, 10)
        self.create_subscription(PoseStamped, topics.ROBOT_TCP_POSE,
                                 lambda msg: self.controller.on_measured(msg_to_pose(msg)), qos_profile_sensor_data)
        self.create_service(SetBool, topics.SERVO_ENABLE, self._on_enable)
        self.missed_ticks = 0
        self.period_errors = collections.deque(maxlen=int(10 * p["rate_hz"]))   # last 10 s, seconds late
        self.scheduling = "default"
        self._published_reason = None
        self.create_timer(1.0, self._report)

    # --- inputs
    def _now(self):
        return self.get_clock().now().nanoseconds

    def _on_waypoints(self, msg):
        now = self._now()
        try:
            times, poses = msg_to_trajectory(msg)
        except ValueError as exc:   # malformed / NaN: drop it, keep holding safely
            self.controller.on_rejected_input(now)
            self.get_logger().error(f"waypoints rejected: {exc}", throttle_duration_sec=1.0)
            return
        try:
            self.controller.on_waypoints(times, poses, now)
        except ValueError as exc:
            self.get_logger().error(f"waypoints rejected: {exc}", throttle_duration_sec=1.0)

    def _on_target(self, msg):
        self.controller.on_target(msg_to_pose(msg), self._now())

    def _on_enable(self, request, response):
        self.controller.set_enabled(request.data)
        response.success = True
        response.message = "following" if request.data else "holding"
        return response

    # --- the control step
    def tick(self):
        now = self._now()
        cmd = self.controller.step(now)
        if cmd is None:
            return                       # no robot state yet
        if cmd.hold_started:
            self.backend.hold()
            self.get_logger().info(f"holding: {cmd.reason.value}")
        elif not cmd.holding:
            self.backend.servo(cmd.pose, self.period_s)
        self.cmd_pub.publish(pose_to_msg(cmd.pose, now))
        if cmd.reason is not self._published_reason:
            self._publish_state(cmd, now)

    def _publish_state(self, cmd, now_ns):
        status = DiagnosticStatus(level=DiagnosticStatus.WARN if cmd.holding else DiagnosticStatus.OK,
                                  name=self.get_fully_qualified_name(), hardware_id="dp_ros",
                                  message=cmd.reason.value or "following")
        status.values = [KeyValue(key="holding", value=str(cmd.holding))]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = ns_to_time(now_ns)
        self.state_pub.publish(msg)
        self._published_reason = cmd.reason

    def _report(self):
        err = np.abs(np.asarray(self.period_errors)) * 1e3
        c = self.controller
        values = dict(c.counts.as_dict(), missed_ticks=self.missed_ticks, holding=c.holding,
                      hold_reason=c.reason.value, scheduling=self.scheduling)
        if err.size:
            values.update(period_error_ms_p50=f"{np.percentile(err, 50):.3f}",
                          period_error_ms_p99=f"{np.percentile(err, 99):.3f}", period_error_ms_max=f"{err.max():.3f}")
        self.diag.publish("ok", c.reason.value or "following", values)

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
            self.missed_ticks += int((now - deadline) / self.period_s)   # whole periods late
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
