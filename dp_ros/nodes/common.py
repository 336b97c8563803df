"""Shared plumbing of the thin nodes: start-up/shutdown, parameters, diagnostics."""

import signal
import sys

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from dp_ros import topics
from dp_ros.core import priority
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


def make_executor(kind: str = "single"):
    """The executor every node spins. SingleThreadedExecutor by default: rclpy's EventsExecutor
    (C++) costs about half its CPU per message here, but on a starved machine (two busy loops
    beside the Push-T recording graph) the sim world on it stalled for seconds and left a service
    unanswered, while on this one it kept up; the MultiThreadedExecutor costs ten times more (it
    polls its futures: a 300 msg/s recorder lost 80 % of its input). The EventsExecutor of this
    rclpy also cannot deliver message info on raw subscriptions ("null argument to internal
    routine"), which the recorder needs."""
    if kind == "events":
        from rclpy.experimental import EventsExecutor
        return EventsExecutor()
    if kind == "single":
        return SingleThreadedExecutor()
    raise ValueError(f"unknown executor {kind!r} (expected events or single)")


def spin(executor):
    """Spin until shutdown. The EventsExecutor's own spin() busy-loops at 100 % CPU and delivers
    nothing in this rclpy; driven by spin_once() it works, and so does every other executor."""
    while rclpy.ok():
        executor.spin_once(timeout_sec=0.2)


def run(node_factory, args=None, executor="single", realtime=False):
    """rclpy boilerplate shared by every node's main(): SIGTERM behaves like Ctrl-C, the node's
    close() runs on the way out (backends stop, the servo holds), and a failure exits non-zero.

    realtime: SCHED_RR at NODE_RT_PRIORITY, for the light periodic nodes that stream sensor data
    and must not stall when the machine is busy (measured: at nice -5 beside two busy loops a
    100 Hz stream still had 0.7 s holes); the others run at nice GRAPH_NICE."""
    priority.raise_priority(priority.GRAPH_NICE)
    if realtime:
        priority.realtime("SCHED_RR", priority.NODE_RT_PRIORITY)
    rclpy.init(args=args if args is not None else sys.argv)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    node = None
    code = 0
    try:
        node = node_factory()
        ex = make_executor(executor)
        ex.add_node(node)
        loop = getattr(node, "loop", None)   # nodes with their own fixed-rate loop (the servo)
        loop(ex) if loop is not None else spin(ex)
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
