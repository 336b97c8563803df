"""`dp-ros bench servo [--rate 125|500] [--seconds 10] [--load]`: timing of the servo loop as deployed.

Starts ur5_servo_node (sim backend) as its own process with the sleep-then-spin loop, feeds it
robot state and a moving waypoint stream over DDS, and reports its loop period error (p50, p99,
max), missed ticks and the command rate received, from its /diagnostics. `--load` runs the
shipped policy's inference back to back the whole time, in the inference process the policy node
uses (same threads and priority). A measurement: prints JSON, asserts nothing.
"""

import argparse
import json
import tempfile
import threading
from pathlib import Path

import numpy as np

from dp_ros.runtime.spin import SpinThread
from dp_ros.viz.progress import add_progress_flag, wait_with_bar


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dp-ros bench servo", description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=125.0, help="servo loop rate (Hz)")
    ap.add_argument("--seconds", type=float, default=10.0, help="measurement window (the servo keeps 10 s)")
    ap.add_argument("--load", action="store_true", help="policy inference back to back in another process")
    ap.add_argument("--realtime-priority", type=int, default=None,
                    help="override the servo's SCHED_FIFO priority (0 = normal scheduling, for comparison)")
    add_progress_flag(ap)
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    load = InferenceLoad() if args.load else None

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import qos_profile_sensor_data
    from trajectory_msgs.msg import MultiDOFJointTrajectory

    from dp_ros import topics
    from dp_ros.graph import NodeSpec, default_config
    from dp_ros.nodes.msgs import pose_to_msg, time_to_ns, trajectory_to_msg
    from dp_ros.runtime.monitor import init_runner_rclpy
    from dp_ros.runtime.processes import NodeProcesses

    tmp = Path(tempfile.mkdtemp(prefix="bench_servo_"))
    overrides = {"backend": "sim", "rate_hz": float(args.rate)}
    if args.realtime_priority is not None:
        overrides["realtime_priority"] = int(args.realtime_priority)
    spec = NodeSpec("ur5_servo_node", "ur5_servo_node", overrides)
    procs = NodeProcesses([spec], default_config(), tmp).start()
    init_runner_rclpy()
    node = rclpy.create_node("bench_servo")
    diag, stamps = {}, []
    node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS,
                             lambda m: [diag.update({kv.key: kv.value for kv in s.values})
                                        for s in m.status if "ur5_servo_node" in s.name], 10)
    node.create_subscription(PoseStamped, topics.SERVO_COMMAND,
                             lambda m: stamps.append(time_to_ns(m.header.stamp)), qos_profile_sensor_data)
    pose_pub = node.create_publisher(PoseStamped, topics.ROBOT_TCP_POSE, qos_profile_sensor_data)
    wp_pub = node.create_publisher(MultiDOFJointTrajectory, topics.SERVO_WAYPOINTS, 10)
    home = np.array([0.55, 0.0, 0.05, 1.0, 0.0, 0.0, 0.0])

    def feed():
        now = node.get_clock().now().nanoseconds
        pose_pub.publish(pose_to_msg(home, now))
        times = [now + int(k * 1e8) for k in range(1, 9)]       # a slow circle, 10 Hz waypoints
        poses = [home + np.r_[0.05 * np.cos(t * 1e-9), 0.05 * np.sin(t * 1e-9), 0, 0, 0, 0, 0] for t in times]
        wp_pub.publish(trajectory_to_msg(times, poses, stamp_ns=now))

    feeder = node.create_timer(0.05, feed)
    from rclpy.executors import SingleThreadedExecutor
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = SpinThread(executor, "bench-spin")
    try:
        wait_with_bar(3.0, enabled=not args.no_progress, desc="start-up")   # process re-exec, discovery
        stamps.clear()
        missed0 = int(diag.get("missed_ticks", 0))
        wait_with_bar(args.seconds, enabled=not args.no_progress, desc="measuring")
        if procs.dead():
            raise SystemExit(f"servo node died:\n{procs.log_tail('ur5_servo_node')}")
        t = np.asarray(stamps, dtype=np.int64)
        period = np.diff(t) * 1e-9 if t.size > 1 else np.zeros(1)
        result = {"rate_hz": args.rate, "seconds": args.seconds,
                  "commands_received": int(t.size),
                  "command_rate_hz": round(float(t.size / args.seconds), 1),
                  "command_period_ms": {"median": round(float(np.median(period) * 1e3), 3),
                                        "p99": round(float(np.percentile(period, 99) * 1e3), 3),
                                        "max": round(float(period.max() * 1e3), 3)},
                  "loop_period_error_ms": {q: float(diag.get(f"period_error_ms_{q}", "nan"))
                                           for q in ("p50", "p99", "max")},
                  "missed_ticks": int(diag.get("missed_ticks", 0)) - missed0,
                  "scheduling": diag.get("scheduling"), "ticks": diag.get("ticks"), "holds": diag.get("holds")}
        if load is not None:
            result["load"] = load.summary()
        print(json.dumps(result))
    finally:
        if load is not None:
            load.stop()
        procs.stop()
        node.destroy_timer(feeder)
        if spinner.stop():
            node.destroy_node()
        rclpy.shutdown()
    return 0


class InferenceLoad:
    """The deployed policy's inference (shipped model, same process setup) back to back."""

    def __init__(self):
        from dp_ros.graph import default_checkpoint
        from dp_ros.runtime.inference import deployed_inference, dummy_observation
        self.worker, cfg = deployed_inference(default_checkpoint())
        self.worker.start()
        self.obs = dummy_observation(cfg)
        self.times = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.times.append(self.worker.plan(self.obs)[2])

    def summary(self):
        t = np.asarray(self.times[1:]) * 1e3
        return {"inferences": int(t.size), "predict_ms_median": round(float(np.median(t)), 1) if t.size else None}

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=10.0)
        self.worker.close()
