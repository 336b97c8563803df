"""ur5_servo_node: timestamped waypoints (or teleop targets) -> servoL stream at the robot's rate,
inside the safety envelope, holding when no valid input arrives in time.

The decisions (which source commands, when to hold and why, latches, the envelope) are
core/servo_controller.py; this node reads messages, drives the backend and publishes the command
and its state.

Two threads: the fixed-rate loop (SCHED_FIFO when permitted) only steps the controller and talks
to the robot; message handling runs in a callback thread, so a flood of messages or a large one
can never delay a tick or the watchdog. Waypoint messages are received serialized and refused
by size before anything is deserialized. Only the configured publisher node of the active source
is followed; anyone else on the topics is counted and ignored.
"""

import collections
import sys
import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.executors import ExternalShutdownException, ShutdownException
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rclpy.serialization import deserialize_message
from std_msgs.msg import Empty
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import MultiDOFJointTrajectory

from dp_ros import topics
from dp_ros.core.priority import NODE_RT_PRIORITY, realtime
from dp_ros.core.servo_controller import MOVING_TO_START, Action, ServoController
from dp_ros.nodes import backends
from dp_ros.nodes.common import STATE_QOS, Diagnostics, declare, run
from dp_ros.nodes.msgs import BASE_FRAME, msg_to_pose, msg_to_trajectory, ns_to_time, pose_to_msg, time_to_ns

WARN_THROTTLE_S = 1.0           # rclpy keys throttling by call site: one value for every warning here
BYTES_PER_WAYPOINT = 160
UNKNOWN_NODE = "_NODE_NAME_UNKNOWN_"   # what the graph says before discovery has named a node        # a MultiDOFJointTrajectoryPoint with one transform, serialized, with margin


class Ur5ServoNode(Node):
    def __init__(self):
        super().__init__("ur5_servo_node")
        self.p = p = declare(self, "ur5_servo_node")
        self.period_s = 1.0 / p["rate_hz"]
        self.controller = ServoController.from_params(p)
        self.backend = backends.robot_control(self, p)
        self._lock = threading.Lock()             # the controller, between callbacks and the loop
        # the robot connection, between a reset and the loop: ur_rtde's interfaces are not thread-safe
        self._backend_lock = threading.Lock()
        self.max_waypoint_bytes = 1024 + BYTES_PER_WAYPOINT * p["max_waypoints"]
        self.publishers_of = {"policy": p["waypoint_publisher"], "teleop": p["target_publisher"]}
        self._gid_nodes = {}                      # publisher gid -> node name, from the ROS graph
        self._next_graph_query = {}               # unknown gid -> when to ask the graph again
        self.diag = Diagnostics(self)
        self.cmd_pub = self.create_publisher(PoseStamped, topics.SERVO_COMMAND, qos_profile_sensor_data)
        self.state_pub = self.create_publisher(DiagnosticArray, topics.SERVO_STATE, STATE_QOS)
        self.create_subscription(MultiDOFJointTrajectory, topics.SERVO_WAYPOINTS, self._on_waypoints, 10, raw=True)
        self.create_subscription(PoseStamped, topics.SERVO_TARGET, self._on_target, 10)
        self.create_subscription(PoseStamped, topics.ROBOT_TCP_POSE, self._on_measured, qos_profile_sensor_data)
        self.create_subscription(Empty, topics.ESTOP, lambda _: self._estop("topic"), 10)
        self.create_service(SetBool, topics.SERVO_ENABLE, self._on_enable)
        self.create_service(Trigger, topics.ESTOP, lambda _, r: self._answer(r, self._estop("service")))
        self.create_service(Trigger, topics.SERVO_RESET, self._on_reset)
        self.create_service(Trigger, topics.SERVO_MOVE_TO_START, self._on_move_to_start)
        for source in self.publishers_of:
            self.create_service(Trigger, topics.SERVO_USE_SOURCE.format(source=source),
                                lambda _, r, s=source: self._answer(r, self._select(s)))
        self.missed_ticks = 0
        self.period_errors = collections.deque(maxlen=int(10 * p["rate_hz"]))   # last 10 s, seconds late
        self.scheduling = "default"
        self._published_status = None
        self._published_move = None
        self._state_lock = threading.Lock()       # /servo/state: the loop and the stall watch publish it
        self._tick_since = None                   # monotonic start of the tick in progress (None: between ticks)
        self._stalled = False
        self.create_timer(1.0, self._report)
        self.create_timer(0.1, self._watch_backend_calls)
        if self.controller.start_pose is not None:
            self.get_logger().info(f"start pose {np.round(self.controller.start_pose, 4).tolist()}, "
                                   f"reached at {p['start_move_speed']:g} m/s on {topics.SERVO_MOVE_TO_START}")

    # --- inputs (callback thread)
    def _now(self):
        return self.get_clock().now().nanoseconds

    def _publisher_node(self, info, topic) -> str:
        gid = bytes(info["publisher_gid"]["data"])
        name = self._gid_nodes.get(gid)
        now = time.monotonic()
        if name is None and now >= self._next_graph_query.get(gid, 0.0):
            # a publisher not known yet: ask the graph who it is. Its first messages can arrive
            # before discovery has told us, so an unknown one is asked about again, at most 5x/s.
            for endpoint in self.get_publishers_info_by_topic(topic):
                if endpoint.node_name != UNKNOWN_NODE:   # endpoint known, its node's name not yet
                    self._gid_nodes[bytes(endpoint.endpoint_gid)] = endpoint.node_name
            name = self._gid_nodes.get(gid)
            self._next_graph_query[gid] = now + 0.2
        return name or "?"

    def _source_of(self, info, topic, source) -> str:
        """The source a message counts for: its topic's source when its publisher is the expected
        node, else "foreign" (counted as ignored by the controller)."""
        expected = self.publishers_of[source]
        if not expected:
            return source
        node = self._publisher_node(info, topic)
        if node == expected:
            return source
        self.get_logger().warning(f"ignoring {topic} from node {node!r}: only {expected!r} is followed",
                               throttle_duration_sec=WARN_THROTTLE_S)
        return "foreign"

    def _on_waypoints(self, data, info):
        now = self._now()
        source = self._source_of(info, topics.SERVO_WAYPOINTS, "policy")
        error = None
        try:
            if len(data) > self.max_waypoint_bytes:
                raise ValueError(f"{len(data)} bytes, more than {self.p['max_waypoints']} waypoints")
            msg = deserialize_message(data, MultiDOFJointTrajectory)
            if msg.header.frame_id != BASE_FRAME:
                raise ValueError(f"frame {msg.header.frame_id!r}, expected {BASE_FRAME!r}")
            times, poses = msg_to_trajectory(msg)
            if len(times) and times[0] <= time_to_ns(msg.header.stamp):
                raise ValueError("a waypoint at or before the message's stamp (time_from_start must be > 0)")
        except ValueError as exc:
            error = exc
        with self._lock:
            try:
                if error is not None:
                    self.controller.on_rejected_input(now, source)
                else:
                    self.controller.on_waypoints(times, poses, now, source)
            except ValueError as exc:
                error = exc
        if error is not None and source != "foreign":
            self.get_logger().error(f"waypoints rejected: {error}", throttle_duration_sec=WARN_THROTTLE_S)

    def _on_target(self, msg, info):
        source = self._source_of(info, topics.SERVO_TARGET, "teleop")
        pose = msg_to_pose(msg) if msg.header.frame_id == BASE_FRAME else np.full(7, np.nan)
        with self._lock:
            self.controller.on_target(pose, self._now(), source)

    def _on_measured(self, msg):
        with self._lock:
            self.controller.on_measured(msg_to_pose(msg), self._now())

    # --- operator (callback thread)
    @staticmethod
    def _answer(response, error: str):
        response.success = not error
        response.message = error or "ok"
        return response

    def _on_enable(self, request, response):
        with self._lock:
            error = self.controller.set_enabled(request.data, self._now())
        self._answer(response, error)
        if not error:
            response.message = "following" if request.data else "holding"
        return response

    def _estop(self, via: str) -> str:
        with self._lock:
            self.controller.estop()
        self.get_logger().error(f"emergency stop ({via}): holding until /servo/reset")
        return ""

    def _select(self, source: str) -> str:
        with self._lock:
            self.controller.select_source(source)
        self.get_logger().info(f"commanding source: {source}")
        return ""

    def _on_move_to_start(self, request, response):
        # answers at once: the move takes seconds and this thread also carries the robot state;
        # /servo/state says when it has ended (start_move: done or stopped) and how
        with self._lock:
            c = self.controller
            error = c.move_to_start(self._now())
            if not error:   # `dp-ros deploy` reads the move's number from the end of this answer
                distance = float(np.linalg.norm(c.start_pose[:3] - c.measured[:3]))
                started = (f"{MOVING_TO_START}: {distance:.3f} m at {self.p['start_move_speed']:g} m/s "
                           f"(move {c.start_moves})")
        self._answer(response, error)
        if not error:
            response.message = started
            self.get_logger().info(response.message)
        return response

    def _on_reset(self, request, response):
        # the loop skips its ticks meanwhile (latched: nothing to send); a loop stuck in the robot's
        # client library keeps the lock, and the answer says so instead of waiting with it
        if not self._backend_lock.acquire(timeout=1.0):
            return self._answer(response, "robot not recovered: the servo loop is still stuck in a call to the "
                                          "robot; check the connection, then reset again")
        try:
            try:
                self.backend.recover()
                error = ""
            except RuntimeError as exc:
                error = f"robot not recovered: {exc}"
            if not error:
                with self._lock:
                    error = self.controller.reset(self._now(), self.backend.fault())
        finally:
            self._backend_lock.release()
        if not error:
            self.get_logger().info("reset: latch cleared; enable to follow again")
        return self._answer(response, error)

    # --- the control step (loop thread)
    def tick(self):
        if not self._backend_lock.acquire(blocking=False):
            return                       # a reset is talking to the controller
        self._tick_since = time.monotonic()
        try:
            self._tick()
        finally:
            self._tick_since = None
            self._backend_lock.release()

    def _watch_backend_calls(self):
        """Callback thread, 10 Hz: a tick that has not returned within backend_call_timeout_s is
        stuck in the robot's client library (ur_rtde blocks while it reconnects): latch a fault and
        say so on /servo/state, since the loop itself can say nothing until the call returns."""
        since = self._tick_since
        if since is None:
            if self._stalled:
                self._stalled = False
                self.get_logger().warning("servo loop running again after a stuck call to the robot")
            return
        stuck_s = time.monotonic() - since
        if self._stalled or stuck_s < self.p["backend_call_timeout_s"]:
            return
        self._stalled = True
        with self._lock:
            self.controller.fault(f"robot: {self.backend.unanswered(stuck_s)}")
            status, latched = self.controller.fault_status(), self.controller.latched   # no step has run since
            move = (self.controller.start_moves, self.controller.start_move)
        self._publish_state(True, False, status, latched, self._now(), move)

    def _tick(self):
        now = self._now()
        fault = self.backend.fault()
        with self._lock:
            if fault:
                self.controller.fault(f"robot: {fault}")
            cmd = self.controller.step(now)
            status, latched = self.controller.status(), self.controller.latched
            move = (self.controller.start_moves, self.controller.start_move)
        if cmd is None:
            return                       # no robot state yet
        if cmd.action is Action.SERVO:
            self.backend.servo(cmd.pose, self.period_s)
        elif cmd.action is Action.STOP:
            self.backend.hold()
        self.cmd_pub.publish(pose_to_msg(cmd.pose, now))
        if status != self._published_status or cmd.resynced or move != self._published_move:
            self._publish_state(cmd.holding, cmd.resynced, status, latched, now, move)

    def _publish_state(self, holding, resynced, status, latched, now_ns, move):
        with self._state_lock:   # the loop and the stall watch both publish
            level = DiagnosticStatus.ERROR if latched else DiagnosticStatus.WARN if holding else DiagnosticStatus.OK
            state = DiagnosticStatus(level=level, name=self.get_fully_qualified_name(), hardware_id="dp_ros",
                                     message=status)
            state.values = [KeyValue(key="holding", value=str(holding)), KeyValue(key="latched", value=str(latched)),
                            KeyValue(key="resynced", value=str(resynced)),
                            KeyValue(key="source", value=self.controller.source),
                            KeyValue(key="start_moves", value=str(move[0])), KeyValue(key="start_move", value=move[1])]
            msg = DiagnosticArray(status=[state])
            msg.header.stamp = ns_to_time(now_ns)
            self.state_pub.publish(msg)
            if status != self._published_status:
                # one call site per severity: rclpy refuses a severity change at one site
                if latched:
                    self.get_logger().error(f"servo: {status}")
                else:
                    self.get_logger().info(f"servo: {status}")
            self._published_status, self._published_move = status, move

    def _report(self):
        err = np.abs(np.asarray(self.period_errors)) * 1e3
        with self._lock:
            c = self.controller
            values = dict(c.counts.as_dict(), missed_ticks=self.missed_ticks, holding=c.holding, latched=c.latched,
                          hold_reason=c.reason.value, source=c.source, scheduling=self.scheduling,
                          start_moves=c.start_moves, start_move=c.start_move)
            status, latched = c.status(), c.latched
        if err.size:
            values.update(period_error_ms_p50=f"{np.percentile(err, 50):.3f}",
                          period_error_ms_p99=f"{np.percentile(err, 99):.3f}", period_error_ms_max=f"{err.max():.3f}")
        self.diag.publish("error" if latched else "ok", status, values)

    def _spin_callbacks(self, executor):
        # SCHED_RR for this thread itself: a new thread starts in the normal class (reset on
        # fork), and preempted by busy processes while holding the interpreter lock it stalled the
        # FIFO loop for up to 0.4 s (bench servo beside two busy loops)
        realtime("SCHED_RR", NODE_RT_PRIORITY)
        try:
            while rclpy.ok():
                executor.spin_once(timeout_sec=0.2)
        except (ExternalShutdownException, ShutdownException, KeyboardInterrupt):
            pass

    def loop(self, executor):
        """Fixed-rate loop: sleep to each deadline, step, command. Callbacks run in their own
        thread under SCHED_RR, below the loop's SCHED_FIFO."""
        threading.Thread(target=self._spin_callbacks, args=(executor,), name="servo-callbacks", daemon=True).start()
        sys.setswitchinterval(0.0001)    # the loop thread gets the interpreter back within 0.1 ms
        # SCHED_FIFO when the OS permits (root, CAP_SYS_NICE or an rtprio limit): the loop then
        # preempts everything else on its core, inference included. Otherwise it says so.
        self.scheduling = realtime("SCHED_FIFO", int(self.p["realtime_priority"]))
        self.get_logger().info(f"servo loop at {self.p['rate_hz']:g} Hz, scheduling: {self.scheduling}, "
                               f"source: {self.controller.source}")
        deadline = time.monotonic()
        while rclpy.ok():
            deadline += self.period_s
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
        locked = self._backend_lock.acquire(timeout=2.0)   # a hung reset must not block shutdown
        try:
            self.backend.hold()
        finally:
            try:
                self.backend.stop()
            finally:
                if locked:
                    self._backend_lock.release()


def main(args=None):
    # SCHED_RR from the start like the streaming nodes (start-up, then the loop thread raises
    # itself to SCHED_FIFO and the callback thread sets its own SCHED_RR)
    return run(Ur5ServoNode, args, realtime=True)


if __name__ == "__main__":
    raise SystemExit(main())
