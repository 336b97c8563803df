"""action_scheduler_node: keeps the current chunk, streams its Ta still-future waypoints (counted
from its arrival or from its observation: parameter horizon_start) to the servo, and asks the
policy for the next chunk early enough that it is planned while the current one executes. Stops
streaming (the servo then holds) when the policy goes silent."""

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from std_msgs.msg import Header
from std_srvs.srv import SetBool
from trajectory_msgs.msg import MultiDOFJointTrajectory

from dp_ros import topics
from dp_ros.core.scheduler import ActionScheduler
from dp_ros.nodes.common import STATE_QOS, Diagnostics, declare, run
from dp_ros.nodes.msgs import msg_to_trajectory, trajectory_to_msg


class ActionSchedulerNode(Node):
    def __init__(self):
        super().__init__("action_scheduler_node")
        self.p = declare(self, "action_scheduler_node")   # Ta and dt_s: resolved by the graph
        self.diag = Diagnostics(self)
        self.scheduler = ActionScheduler.from_params(self.p)
        self.get_logger().info(f"executing Ta={self.p['action_horizon']} waypoints per chunk "
                               f"(counted from the {self.p['horizon_start']}), stitch {self.scheduler.stitch}")
        self.enabled = bool(self.p["autostart"])
        self.last_heartbeat_ns = None
        self.policy_alive = False
        self.wp_pub = self.create_publisher(MultiDOFJointTrajectory, topics.SERVO_WAYPOINTS, 10)
        self.request_pub = self.create_publisher(MultiDOFJointTrajectory, topics.POLICY_REQUEST, 10)
        self.create_subscription(MultiDOFJointTrajectory, topics.POLICY_CHUNK, self._on_chunk, 10)
        self.create_subscription(Header, topics.POLICY_HEARTBEAT, self._on_heartbeat, 10)
        self.create_subscription(DiagnosticArray, topics.SERVO_STATE, self._on_servo_state, STATE_QOS)
        self.create_service(SetBool, topics.SCHEDULER_ENABLE, self._on_enable)
        self.create_timer(1.0 / self.p["publish_rate_hz"], self._tick)
        self.create_timer(1.0, self._report)

    def _now(self):
        return self.get_clock().now().nanoseconds

    def _on_heartbeat(self, msg):
        self.last_heartbeat_ns = self._now()

    def _on_servo_state(self, msg):
        values = {kv.key: kv.value for kv in msg.status[0].values}
        if values.get("latched") == "True" and self.enabled:
            # e-stop or fault: stop streaming; resuming needs an explicit /scheduler/enable
            self.enabled = False
            self.scheduler.reset()
            self._publish([], [])
            self.get_logger().error(f"servo latched ({msg.status[0].message}): streaming stopped, "
                                    "enable again after /servo/reset")

    def _on_enable(self, request, response):
        self.enabled = bool(request.data)
        self.scheduler.reset()   # a fresh start either way: no stale chunk survives (counters stay)
        self._publish([], [])
        response.success = True
        response.message = "streaming enabled" if self.enabled else "streaming disabled, chunk dropped"
        return response

    def _on_chunk(self, msg):
        now = self._now()
        try:
            times, poses = msg_to_trajectory(msg)
        except ValueError as exc:
            self.get_logger().error(f"malformed chunk dropped: {exc}")
            return
        if not self.enabled:
            return
        if self.scheduler.on_chunk(times, poses, now):
            self._stream(now)
        else:
            self.get_logger().warning(f"chunk rejected: {self.scheduler.last_reject_reason}",
                                   throttle_duration_sec=1.0)

    def _tick(self):
        now = self._now()
        alive = self.last_heartbeat_ns is not None and \
            (now - self.last_heartbeat_ns) * 1e-9 < self.p["policy_timeout_s"]
        if self.policy_alive and not alive:
            self.get_logger().error("policy heartbeat lost: streaming stopped, servo holds")
            self.scheduler.reset()
        self.policy_alive = alive
        if not (self.enabled and alive):
            self._publish([], [])   # explicit empty stream: the servo holds now, not at its watchdog
            return
        # needs_inference is false while a request is outstanding, until its timeout (lost request)
        if self.scheduler.needs_inference(now):
            # stitch inpaint: the request carries the path the new chunk must continue (else empty)
            times, poses = self.scheduler.committed_path(now)
            self.request_pub.publish(trajectory_to_msg(times, poses, stamp_ns=times[0] if len(times) else now))
            self.scheduler.mark_requested(now)   # the scheduler measures the latency from here
        self._stream(now)

    def _stream(self, now):
        times, poses = self.scheduler.waypoints(now)
        self._publish(times, poses, now)

    def _publish(self, times, poses, now=None):
        # header.stamp = the time the stream was cut: every time_from_start is then > 0, i.e. each
        # waypoint is in the future when sent (trajectory_to_msg refuses anything earlier).
        self.wp_pub.publish(trajectory_to_msg(times, poses, stamp_ns=self._now() if now is None else now))

    def _report(self):
        values = dict(self.scheduler.stats)
        values.update(enabled=self.enabled, policy_alive=self.policy_alive)
        self.diag.publish("ok" if self.policy_alive or not self.enabled else "error",
                          "streaming" if self.enabled and self.policy_alive else "idle", values)


def main(args=None):
    return run(ActionSchedulerNode, args, realtime=True)


if __name__ == "__main__":
    raise SystemExit(main())
