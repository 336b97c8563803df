"""`dp-ros bench servo [--rate 125|500] [--seconds 10]`: timing of the servo loop as deployed.

Starts ur5_servo_node (sim backend) as its own process with the sleep-then-spin loop, feeds it
robot state and a moving waypoint stream over DDS, and reports its loop period error and the
command rate received, from its /diagnostics. A measurement: prints JSON, asserts nothing.
"""

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(prog="dp-ros bench servo", description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=125.0, help="servo loop rate (Hz)")
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args(argv)

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import qos_profile_sensor_data
    from trajectory_msgs.msg import MultiDOFJointTrajectory

    from dp_ros import topics
    from dp_ros.graph import NodeSpec, default_config
    from dp_ros.nodes.msgs import pose_to_msg, time_to_ns, trajectory_to_msg
    from dp_ros.processes import NodeProcesses

    tmp = Path(tempfile.mkdtemp(prefix="bench_servo_"))
    spec = NodeSpec("ur5_servo_node", "ur5_servo_node", {"backend": "sim", "rate_hz": float(args.rate)})
    procs = NodeProcesses([spec], default_config(), tmp).start()
    rclpy.init(args=[])
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
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        time.sleep(3.0)                       # start-up (process re-exec, discovery)
        stamps.clear()
        time.sleep(args.seconds)
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
                  "loop_period_error_ms_p99 (servo's own)": diag.get("period_error_ms_p99"),
                  "ticks": diag.get("ticks"), "holds": diag.get("holds")}
        print(json.dumps(result))
    finally:
        procs.stop()
        node.destroy_timer(feeder)
        executor.shutdown(timeout_sec=1.0)
        spinner.join(timeout=2.0)
        node.destroy_node()
        rclpy.shutdown()
    return 0
