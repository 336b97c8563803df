"""Shared plumbing of the thin nodes: start-up/shutdown, parameters, diagnostics."""

import signal
import sys

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node

from dp_ros import topics
from dp_ros.graph import default_config, load_params

DIAG_LEVEL = {"ok": DiagnosticStatus.OK, "warn": DiagnosticStatus.WARN, "error": DiagnosticStatus.ERROR}


def declare(node: Node, section: str, extra: dict | None = None) -> dict:
    """Declare the node's parameters and return their values as a plain dict.

    Defaults come from the shipped config/deploy.yaml section `section` (the one place the
    values are written), plus `extra` for values the graph always supplies (e.g. from the
    checkpoint). A params file given at start-up overrides both, as usual in ROS."""
    defaults = dict(load_params(default_config()).get(section, {}))
    defaults.update(extra or {})
    out = {}
    for name, default in defaults.items():
        node.declare_parameter(name, default)
        out[name] = node.get_parameter(name).value
    return out


class Diagnostics:
    """Publishes one DiagnosticStatus per call on /diagnostics, named after the node."""

    def __init__(self, node: Node):
        self._node = node
        self._pub = node.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)

    def publish(self, level: str, message: str, values: dict):
        status = DiagnosticStatus(level=DIAG_LEVEL[level], name=self._node.get_fully_qualified_name(),
                                  message=message, hardware_id="dp_ros")
        status.values = [KeyValue(key=str(k), value=str(v)) for k, v in values.items()]
        array = DiagnosticArray()
        array.header.stamp = self._node.get_clock().now().to_msg()
        array.status = [status]
        self._pub.publish(array)


def run(node_factory, args=None, multithreaded=False):
    """rclpy boilerplate shared by every node's main(): SIGTERM behaves like Ctrl-C, the node's
    close() runs on the way out (backends stop, the servo holds), and a failure exits non-zero."""
    rclpy.init(args=args if args is not None else sys.argv)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    node = None
    code = 0
    try:
        node = node_factory()
        executor = MultiThreadedExecutor(num_threads=2) if multithreaded else SingleThreadedExecutor()
        executor.add_node(node)
        loop = getattr(node, "loop", None)   # nodes with their own fixed-rate loop (the servo)
        loop(executor) if loop is not None else executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:  # report clearly, then exit non-zero so the runner notices
        print(f"[{getattr(node, 'get_name', lambda: 'dp_ros')()}] fatal: {exc!r}", file=sys.stderr, flush=True)
        code = 1
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:
                    print(f"close failed: {exc!r}", file=sys.stderr, flush=True)
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code
