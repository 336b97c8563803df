"""The runners' window into a running graph: an rclpy node that calls the graph's services, keeps
the latest sim task state and diagnostics, and measures request -> chunk latency. Given camera
names it also feeds a RolloutTrace (frames, chunks, streamed waypoints, coverage) for the videos."""

import threading
import time

from dp_ros import topics
from dp_ros.nodes.msgs import msg_to_image, msg_to_trajectory, task_state_from_msg, time_to_ns
from dp_ros.runtime.processes import NodeProcesses
from dp_ros.runtime.spin import SpinThread


class NodeDied(RuntimeError):
    pass


def call_service(client, request, timeout_s: float = 5.0):
    """Call a service from a node that another thread spins: wait for the service, then for its
    answer; TimeoutError saying which one did not come."""
    if not client.wait_for_service(timeout_sec=timeout_s):
        raise TimeoutError(f"service {client.srv_name} not available")
    done = threading.Event()
    future = client.call_async(request)
    future.add_done_callback(lambda _: done.set())
    if not done.wait(timeout_s):
        raise TimeoutError(f"service {client.srv_name} did not answer in {timeout_s} s")
    return future.result()


def init_runner_rclpy():
    """rclpy for a runner process (deploy, eval, record, faults, benches), without rclpy's own
    SIGINT/SIGTERM handlers: those shut the context down under the runner (its spin thread dies,
    the main loop waits forever for an episode that cannot end, the nodes stay up). Without them
    Ctrl-C is a KeyboardInterrupt in the main thread, and the runner's cleanup stops the nodes."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO)


class GraphMonitor:
    """An rclpy node in the runner's process: drives episodes through the graph's services and
    collects what the summary reports."""

    def __init__(self, cameras=()):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image
        from std_srvs.srv import SetBool, Trigger
        from trajectory_msgs.msg import MultiDOFJointTrajectory

        self._rclpy = rclpy
        self._SetBool, self._Trigger = SetBool, Trigger
        init_runner_rclpy()
        self.node = rclpy.create_node("dp_ros_runner")
        self.task = {}
        self.diagnostics = {}
        self.latencies_s = []
        self._request_t = None
        n = self.node
        n.create_subscription(DiagnosticStatus, topics.SIM_TASK_STATE, self._on_task, 10)
        n.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diag, 50)
        n.create_subscription(MultiDOFJointTrajectory, topics.POLICY_REQUEST, self._on_request, 10)
        n.create_subscription(MultiDOFJointTrajectory, topics.POLICY_CHUNK, self._on_chunk, 10)
        self.trace = None
        if cameras:
            from dp_ros.viz.rollout import RolloutTrace
            self.trace = RolloutTrace(cameras)
            for cam in cameras:   # the topics the policy node reads: frames as the policy saw them
                n.create_subscription(Image, topics.CAMERA_IMAGE.format(name=cam),
                                      lambda msg, cam=cam: self._on_image(cam, msg), qos_profile_sensor_data)
            n.create_subscription(MultiDOFJointTrajectory, topics.SERVO_WAYPOINTS, self._on_waypoints, 10)
        self.clients = {
            "scheduler": n.create_client(SetBool, topics.SCHEDULER_ENABLE),
            "servo": n.create_client(SetBool, topics.SERVO_ENABLE),
            "reset": n.create_client(Trigger, topics.SIM_RESET),
            "record_start": n.create_client(Trigger, topics.RECORD_START),
            "record_stop": n.create_client(Trigger, topics.RECORD_STOP),
            "record_discard": n.create_client(Trigger, topics.RECORD_DISCARD),
            "teleop_resync": n.create_client(Trigger, topics.TELEOP_RESYNC),
        }
        executor = SingleThreadedExecutor()
        executor.add_node(n)
        self._spin = SpinThread(executor, "runner-spin")

    def _on_task(self, msg):
        self.task = task_state_from_msg(msg)
        if self._tracing():
            self.trace.add_coverage(time.time_ns(), self.task.get("coverage", 0.0))

    def _tracing(self) -> bool:
        return self.trace is not None and self.trace.active

    def _on_image(self, camera, msg):
        if self._tracing():
            self.trace.add_frame(camera, time_to_ns(msg.header.stamp), msg_to_image(msg))

    def _on_waypoints(self, msg):
        if self._tracing():
            times, poses = msg_to_trajectory(msg)
            self.trace.add_waypoints(times, poses)

    def _on_diag(self, msg):
        for status in msg.status:
            self.diagnostics[status.name.strip("/")] = (status.message, {kv.key: kv.value for kv in status.values})

    # Request->chunk latency from the two messages' publication times (the middleware's source
    # timestamps), not from when this process got them: the runner runs behind the graph's
    # priorities, and on a busy machine it received a request and its chunk back to back (medians of
    # 1-5 ms per episode). Receipt time only where the middleware gives no source timestamp.
    @staticmethod
    def _published_ns(info) -> int:
        return int(info.get("source_timestamp") or 0) or time.time_ns()

    def _on_request(self, msg, info):
        self._request_t = self._published_ns(info)

    def _on_chunk(self, msg, info):
        if self._request_t is not None:
            latency_ns = self._published_ns(info) - self._request_t
            if latency_ns >= 0:   # a chunk published before the request answers an earlier one
                self.latencies_s.append(latency_ns * 1e-9)
            self._request_t = None
        if self._tracing():
            times, poses = msg_to_trajectory(msg)
            self.trace.add_chunk(time.time_ns(), times, poses)

    def call(self, name, value=None, timeout_s=5.0):
        """A SetBool service with value, a Trigger service without."""
        req = self._SetBool.Request(data=value) if value is not None else self._Trigger.Request()
        return call_service(self.clients[name], req, timeout_s)

    def close(self):
        if self._spin.stop():   # nodes are destroyed only once nothing spins them
            self.node.destroy_node()
        if self._rclpy.ok():
            self._rclpy.shutdown()


def check_alive(procs: NodeProcesses):
    dead = procs.dead()
    if dead:
        name, code = next(iter(dead.items()))
        raise NodeDied(f"node {name} exited with code {code}; last log lines:\n{procs.log_tail(name)}")


def wait_until(predicate, timeout_s, procs, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        check_alive(procs)
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
