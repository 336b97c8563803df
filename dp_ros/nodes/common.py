"""Shared plumbing of the thin nodes: start-up/shutdown, parameters, diagnostics."""

import signal
import sys

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import (InvalidParameterTypeException, InvalidParameterValueException,
                              ParameterUninitializedException)
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from dp_ros import topics
from dp_ros.core import parameters, priority
from dp_ros.core.parameters import NODE_PARAMETERS, Param
from dp_ros.graph import default_config, load_params

# a state published on every change: reliable, and a late subscriber gets the latest ones. Depth
# above 1: a reliable writer keeping only the last sample drops one not yet acknowledged when the
# next follows within milliseconds (a re-sync right before "following" went missing that way)
STATE_QOS = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)

DIAG_LEVEL = {"ok": DiagnosticStatus.OK, "warn": DiagnosticStatus.WARN, "error": DiagnosticStatus.ERROR}


_ROS_TYPE = {bool: Parameter.Type.BOOL, int: Parameter.Type.INTEGER, float: Parameter.Type.DOUBLE,
             str: Parameter.Type.STRING}
_ROS_ARRAY_TYPE = {bool: Parameter.Type.BOOL_ARRAY, int: Parameter.Type.INTEGER_ARRAY,
                   float: Parameter.Type.DOUBLE_ARRAY, str: Parameter.Type.STRING_ARRAY}


def _descriptor(name: str, spec: Param) -> ParameterDescriptor:
    """What `ros2 param describe` shows. Read-only: every node reads its parameters once."""
    kind = _ROS_ARRAY_TYPE[spec.item] if spec.type is list else _ROS_TYPE[spec.type]
    constraints = []
    if spec.choices:
        constraints.append("one of " + ", ".join(spec.choices))
    if spec.length:
        constraints.append(f"{spec.length} values")
    if spec.range and spec.type is list:
        constraints.append(f"each in [{spec.range[0]}, {spec.range[1]}]")
    d = ParameterDescriptor(name=name, type=kind.value, description=spec.description,
                            additional_constraints="; ".join(constraints), read_only=True)
    if spec.range and spec.type is float:
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]), to_value=float(spec.range[1]))]
    elif spec.range and spec.type is int:
        d.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=1)]
    return d


def declare(node: Node, section: str, graph_values: dict | None = None) -> dict:
    """Declare the node's parameters (core/parameters.py: type, description, range, read-only) and
    return their checked values as a plain dict.

    Defaults come from the shipped config/deploy.yaml (the one place the values are written): the
    node's section plus the values it borrows from other sections; `graph_values` are what the
    graph always supplies when no params file does (e.g. from the checkpoint). A params file given
    at start-up overrides all of them, as usual in ROS. A wrong type, a value out of range, an
    unknown choice, a missing value: ValueError naming the parameter, before anything runs."""
    spec = NODE_PARAMETERS[section]
    defaults = parameters.defaults(section, load_params(default_config()))
    defaults.update(graph_values or {})
    values = {}
    for name, p in spec.items():
        descriptor = _descriptor(name, p)
        default = defaults.get(name)
        try:
            if default is None:   # no default: declared by type, must come from the graph
                node.declare_parameter(name, Parameter.Type(descriptor.type), descriptor)
            else:
                node.declare_parameter(name, p.check(f"{section}.{name}", default), descriptor)
            values[name] = node.get_parameter(name).value
        except ParameterUninitializedException:
            raise ValueError(f"{section}.{name} is not set ({p.description}; "
                             f"{'set by the graph from the checkpoint' if p.default_from else 'no default'})") from None
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            raise ValueError(f"{section}.{name}: {exc} ({p.description})") from None
    return parameters.validate(section, values)


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

    realtime: SCHED_RR at NODE_RT_PRIORITY for the whole process (set before rclpy starts its
    threads, which keep it), for the light nodes that stream sensor data or pass requests and
    chunks along and must not stall when the machine is busy (measured: at nice -5 beside two busy
    loops a 100 Hz stream still had 0.7 s holes; the policy node behind the streaming nodes added
    10-30 ms per chunk); the others run at nice GRAPH_NICE."""
    priority.raise_priority(priority.GRAPH_NICE)
    if realtime:
        priority.realtime("SCHED_RR", priority.NODE_RT_PRIORITY, inherit=True)
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
