"""Fault injection into a running sim deploy graph, and what the servo did about it.

`FaultHarness` is an rclpy node in the runner's process: it records every servo command with its
tick number (the DDS publication sequence number: the servo publishes one per tick), the servo's
state changes and /diagnostics, calls the graph's services, and owns a second node, "intruder",
that publishes hostile messages on the graph's topics. `run_row` brings the arm to following the
policy, injects one fault, watches, clears it and measures:

  max_speed / max_acc / max_ang_speed   of the commands from the injection on, per tick
  servo_missed_ticks                    ticks the servo loop itself missed (its /diagnostics)
  outside_box_m                         distance of any command outside the workspace box
  time_to_hold_s                        from the injection to the servo's first hold
  latched, recovered                    whether the servo latched, and followed again after the
                                        row's recovery (reset / enable / process continued)
  diagnostics                           what the servo's /diagnostics said at the end
and `safe`: inside the box, within the limits, and held / latched / recovered as the row expects.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from dp_ros import topics
from dp_ros.core.command_check import outside_box, tick_limits
from dp_ros.runtime.monitor import call_service, init_runner_rclpy
from dp_ros.runtime.spin import SpinThread

LIMIT_TOLERANCE = 1.01      # the per-tick limits are exact up to float rounding and tick jitter


@dataclass
class Fault:
    name: str
    inject: Callable                 # harness -> None
    clear: Callable | None = None    # harness -> None: undo the cause (SIGCONT, stop publishing)
    recover: str = "none"            # after clear: "auto" (follows again by itself), "enable",
                                     # "reset" (reset + enable), "none" (stays down)
    expect_hold: bool | None = True  # None: either is fine (e.g. foreign input is ignored)
    expect_latch: bool = False
    observe_s: float = 2.5
    short: bool = False              # part of the short form (the test suite's)


@dataclass
class _Log:
    commands: list = field(default_factory=list)   # (recv_ns, stamp_ns, pose, seq)
    states: list = field(default_factory=list)     # (recv_ns, message, holding, latched, resynced_stamp)
    diagnostics: dict = field(default_factory=dict)


class FaultHarness:
    def __init__(self, procs, servo_params: dict, camera: str = "top"):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image
        from std_msgs.msg import Empty
        from std_srvs.srv import SetBool, Trigger
        from trajectory_msgs.msg import MultiDOFJointTrajectory

        from dp_ros.nodes.common import STATE_QOS
        from dp_ros.nodes.msgs import msg_to_pose, time_to_ns

        self.procs, self.servo = procs, servo_params
        self.killed = set()          # nodes a row killed on purpose
        self.row_extra = {}          # what a row's injection reports beside the measurements
        self._rclpy, self._SetBool, self._Trigger = rclpy, SetBool, Trigger
        self._time_to_ns = time_to_ns
        init_runner_rclpy()
        self.node = rclpy.create_node("dp_ros_faults")
        self.intruder = rclpy.create_node("intruder")
        self.log = _Log()
        n = self.node
        n.create_subscription(PoseStamped, topics.SERVO_COMMAND,
                              lambda m, info: self.log.commands.append(
                                  (self.now(), time_to_ns(m.header.stamp), msg_to_pose(m),
                                   info["publication_sequence_number"])), qos_profile_sensor_data)
        n.create_subscription(DiagnosticArray, topics.SERVO_STATE, self._on_state, STATE_QOS)
        n.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diag, 50)
        self.clients = {name: n.create_client(kind, topic) for name, kind, topic in (
            ("servo", SetBool, topics.SERVO_ENABLE), ("scheduler", SetBool, topics.SCHEDULER_ENABLE),
            ("servo_reset", Trigger, topics.SERVO_RESET), ("estop", Trigger, topics.ESTOP),
            ("world_reset", Trigger, topics.SIM_RESET))}
        i = self.intruder
        self.pub = {"waypoints": i.create_publisher(MultiDOFJointTrajectory, topics.SERVO_WAYPOINTS, 10),
                    "target": i.create_publisher(PoseStamped, topics.SERVO_TARGET, 10),
                    "image": i.create_publisher(Image, topics.CAMERA_IMAGE.format(name=camera),
                                                qos_profile_sensor_data),
                    "estop": i.create_publisher(Empty, topics.ESTOP, 10)}
        executor = SingleThreadedExecutor()
        executor.add_node(n)
        executor.add_node(i)
        self._spin = SpinThread(executor, "faults-spin")

    # --- plumbing
    def now(self) -> int:
        return time.monotonic_ns()

    def _on_state(self, msg):
        s = msg.status[0]
        v = {kv.key: kv.value for kv in s.values}
        self.log.states.append((self.now(), s.message, v.get("holding") == "True", v.get("latched") == "True",
                                self._time_to_ns(msg.header.stamp) if v.get("resynced") == "True" else None))

    def _on_diag(self, msg):
        for s in msg.status:
            self.log.diagnostics[s.name.strip("/")] = (int(s.level[0]) if isinstance(s.level, bytes) else int(s.level),
                                                      s.message, {kv.key: kv.value for kv in s.values})

    def call(self, name, value=None, timeout_s=5.0):
        """A SetBool service with value, a Trigger service without."""
        req = self._SetBool.Request(data=value) if value is not None else self._Trigger.Request()
        return call_service(self.clients[name], req, timeout_s)

    def state(self):
        return self.log.states[-1] if self.log.states else (0, "", True, False, None)

    def wait_for(self, predicate, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            dead = set(self.procs.dead()) - self.killed
            if dead:
                raise RuntimeError(f"nodes died: {sorted(dead)}")
            if predicate():
                return True
            time.sleep(0.02)
        return False

    def following(self) -> bool:
        return self.state()[1].startswith("following")

    def start_following(self, timeout_s: float = 30.0) -> bool:
        """Fresh episode, servo enabled, scheduler streaming; True once the servo follows."""
        self.call("scheduler", False)
        self.call("servo_reset")      # a latch left by the previous row (refused while its cause lasts)
        self.call("servo", False)
        self.call("world_reset")
        deadline = time.monotonic() + timeout_s
        while not self.call("servo", True).success:      # needs a fresh robot state
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        self.call("scheduler", True)
        return self.wait_for(self.following, max(1.0, deadline - time.monotonic()))

    def estop_by_topic(self):
        from std_msgs.msg import Empty
        self.pub["estop"].publish(Empty())

    def signal(self, node: str, sig):
        os.kill(self.procs.procs[node].pid, sig)

    def kill(self, node: str):
        self.killed.add(node)
        self.procs.kill(node)

    def restart(self, node: str):
        self.procs.restart(node)
        self.killed.discard(node)

    def close(self):
        if self._spin.stop():   # nodes are destroyed only once nothing spins them
            self.node.destroy_node()
            self.intruder.destroy_node()
        if self._rclpy.ok():
            self._rclpy.shutdown()

    # --- one row
    def run_row(self, fault: Fault) -> dict:
        row = {"fault": fault.name}
        if not self.start_following():
            return dict(row, safe=False, error="the servo did not start following the policy")
        t0 = self.now()
        self.row_extra = {}
        self.missed_ticks_before = int(self.log.diagnostics.get("ur5_servo_node", (0, "", {}))[2].get("missed_ticks", 0))
        fault.inject(self)
        time.sleep(fault.observe_s)
        if fault.clear is not None:
            fault.clear(self)
        recovered = None
        if fault.recover != "none":
            recovered = self._recover(fault.recover)
        time.sleep(0.3)
        row.update(self._measure(t0))
        row["recovered"] = recovered
        row.update(self.row_extra)
        safe = row["outside_box_m"] == 0.0 and row["within_limits"]
        if fault.expect_hold is not None:
            safe &= (row["time_to_hold_s"] is not None) == fault.expect_hold
        safe &= row["latched"] == fault.expect_latch
        if fault.recover != "none":
            safe &= bool(recovered)
        row["safe"] = bool(safe)
        return row

    def _recover(self, how: str) -> bool:
        if how == "reset":
            if not self.wait_for(lambda: self.call("servo_reset").success, 5.0):
                return False
        if how in ("reset", "enable"):
            if not self.wait_for(lambda: self.call("servo", True).success, 5.0):
                return False
            self.call("scheduler", True)
        return self.wait_for(self.following, 10.0)

    def _measure(self, t0_ns: int) -> dict:
        cmds = [c for c in self.log.commands if c[0] >= t0_ns]
        states = [s for s in self.log.states if s[0] >= t0_ns]
        # matched by stamp over the whole log: under load a command can arrive after t0 while the
        # state that marked it re-synced arrived before (two topics, two queues)
        resynced = {s[4] for s in self.log.states if s[4] is not None}
        s = self.servo
        lim = tick_limits([c[3] for c in cmds], [c[2] for c in cmds], 1.0 / s["rate_hz"],
                          [c[1] in resynced for c in cmds]) if cmds else {}
        holds = [st for st in states if st[2]]
        level, message, values = self.log.diagnostics.get("ur5_servo_node", (None, "", {}))
        return {
            "commands": len(cmds),
            "servo_missed_ticks": int(values.get("missed_ticks", 0)) - self.missed_ticks_before,
            "max_speed": round(lim.get("max_speed", 0.0), 4), "max_acc": round(lim.get("max_acc", 0.0), 3),
            "max_ang_speed": round(lim.get("max_ang_speed", 0.0), 3),
            "within_limits": bool(cmds) and lim["max_speed"] <= s["max_lin_speed"] * LIMIT_TOLERANCE
            and lim["max_acc"] <= s["max_lin_acc"] * LIMIT_TOLERANCE
            and lim["max_ang_speed"] <= s["max_ang_speed"] * LIMIT_TOLERANCE,
            "outside_box_m": round(outside_box([c[2][:3] for c in cmds], s["workspace_min"], s["workspace_max"]), 6),
            "time_to_hold_s": round((holds[0][0] - t0_ns) * 1e-9, 3) if holds else None,
            "hold_reasons": sorted({st[1] for st in holds}),
            "latched": any(st[3] for st in states),
            "diagnostics": {"level": ["OK", "WARN", "ERROR", "STALE"][level] if level is not None else None,
                            "message": message},
        }


# --- the faults ---------------------------------------------------------------------------------

def _stream(h: FaultHarness, make, seconds: float, rate_hz: float = 50.0):
    """Publish make(now_ns) from the intruder for `seconds` at rate_hz."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        msg = make(time.time_ns())
        h.pub[msg[0]].publish(msg[1])
        time.sleep(1.0 / rate_hz)


def _waypoints(times, poses, stamp_ns, frame="base"):
    """Built field by field: trajectory_to_msg refuses what a hostile publisher sends."""
    from builtin_interfaces.msg import Duration
    from geometry_msgs.msg import Transform
    from trajectory_msgs.msg import MultiDOFJointTrajectory, MultiDOFJointTrajectoryPoint
    out = MultiDOFJointTrajectory()
    out.header.stamp.sec, out.header.stamp.nanosec = divmod(int(stamp_ns), 10**9)
    out.header.frame_id = frame
    for t, p in zip(times, poses):
        pt = MultiDOFJointTrajectoryPoint()
        tr = Transform()
        tr.translation.x, tr.translation.y, tr.translation.z = (float(v) for v in p[:3])
        tr.rotation.x, tr.rotation.y, tr.rotation.z, tr.rotation.w = (float(v) for v in p[3:])
        pt.transforms = [tr]
        d = int(t) - int(stamp_ns)
        pt.time_from_start = Duration(sec=int(d // 10**9), nanosec=int(d % 10**9))
        out.points.append(pt)
    return out


DOWN = [1.0, 0.0, 0.0, 0.0]


def _hostile_waypoints(now_ns):
    """Cycles through the kinds of bad waypoint messages a foreign publisher can send."""
    kind = (now_ns // 50_000_000) % 6
    far = [[2.0, 2.0, 2.0, *DOWN]] * 3
    ok_times = [now_ns + k * 100_000_000 for k in (1, 2, 3)]
    if kind == 0:
        return "waypoints", _waypoints(ok_times, [[np.nan, 0, 0.1, *DOWN]] * 3, now_ns)
    if kind == 1:
        return "waypoints", _waypoints(ok_times, far, now_ns)
    if kind == 2:    # past-dated: negative time_from_start (the stamp is later than the waypoints)
        return "waypoints", _waypoints(ok_times, far, now_ns + 10**9)
    if kind == 3:    # unsorted
        return "waypoints", _waypoints(ok_times[::-1], far, now_ns)
    if kind == 4:    # wrong frame
        return "waypoints", _waypoints(ok_times, far, now_ns, frame="world")
    return "waypoints", _waypoints([now_ns - 10**8, now_ns], far, now_ns - 2 * 10**8)   # already past on arrival


def _foreign_targets(now_ns):
    from dp_ros.nodes.msgs import pose_to_msg
    pose = [0.74, 0.19, 0.40, 0.0, 0.0, 0.0, 1.0] if (now_ns // 100_000_000) % 2 else [np.nan] * 7
    return "target", pose_to_msg(np.array(pose), now_ns)


def _huge_message(h: FaultHarness):
    now = time.time_ns()
    n = 100_000
    msg = _waypoints([now + (k + 1) * 1_000_000 for k in range(n)], np.tile([0.55, 0.0, 0.1, *DOWN], (n, 1)), now)
    h.pub["waypoints"].publish(msg)


def _bad_images(now_ns):
    from sensor_msgs.msg import Image
    img = Image()
    img.header.stamp.sec, img.header.stamp.nanosec = divmod(int(now_ns), 10**9)
    kind = (now_ns // 50_000_000) % 3
    if kind == 0:        # data shorter than height * step says
        img.height, img.width, img.encoding, img.step = 96, 96, "rgb8", 288
        img.data = bytes(100)
    elif kind == 1:      # an encoding the policy does not read
        img.height, img.width, img.encoding, img.step = 96, 96, "32FC1", 384
        img.data = bytes(96 * 384)
    else:                # oversized
        img.height, img.width, img.encoding, img.step = 2000, 2000, "rgb8", 6000
        img.data = bytes(2000 * 6000)
    return "image", img


def _second_graph(h: FaultHarness):
    """A second graph (its servo) started beside this one: it must land on another domain."""
    from dp_ros.graph import NodeSpec, default_config
    from dp_ros.runtime.processes import NodeProcesses
    env = dict(os.environ)
    env.pop("ROS_DOMAIN_ID", None)                 # as a second `dp-ros deploy` would start
    h.second = NodeProcesses([NodeSpec("ur5_servo_node", "ur5_servo_node", {"backend": "sim"})],
                             default_config(), h.procs.log_dir / "second_graph", env=env).start()
    os.environ["ROS_DOMAIN_ID"] = str(h.procs.domain.domain_id)   # this process stays on the first
    h.row_extra["second_graph_domain"] = h.second.domain.domain_id
    h.row_extra["this_graph_domain"] = h.procs.domain.domain_id


def _stop_second_graph(h: FaultHarness):
    h.second.stop()


def _busy_loops(h: FaultHarness):
    import subprocess
    import sys
    h.busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]


def _stop_busy_loops(h: FaultHarness):
    for p in h.busy:
        p.kill()
        p.wait()


FAULTS = [
    Fault("foreign waypoints: NaN, far, past-dated, unsorted, wrong frame, already past",
          lambda h: _stream(h, _hostile_waypoints, 2.0), expect_hold=None, observe_s=0.3, short=True),
    Fault("foreign waypoints at 200 Hz", lambda h: _stream(h, _hostile_waypoints, 2.0, 200.0),
          expect_hold=None, observe_s=0.3),
    Fault("foreign waypoint message of 100 000 points", _huge_message, expect_hold=None, observe_s=2.0),
    Fault("foreign teleop targets: far and NaN", lambda h: _stream(h, _foreign_targets, 2.0),
          expect_hold=None, observe_s=0.3),
    Fault("malformed, wrong-encoding and oversized images", lambda h: _stream(h, _bad_images, 2.0, 20.0),
          expect_hold=None, observe_s=0.5),
    Fault("disable, then enable mid-episode", lambda h: h.call("servo", False), recover="enable",
          observe_s=1.0, short=True),
    Fault("emergency stop (topic), then reset", lambda h: h.estop_by_topic(),
          recover="reset", expect_latch=True, observe_s=1.0, short=True),
    Fault("emergency stop (service), enable refused until reset", lambda h: (
        h.call("estop"), h.row_extra.update(enable_refused=not h.call("servo", True).success)),
          recover="reset", expect_latch=True, observe_s=1.0),
    Fault("camera stalled (SIGSTOP)", lambda h: h.signal("camera_node", signal.SIGSTOP),
          clear=lambda h: h.signal("camera_node", signal.SIGCONT), recover="auto", observe_s=2.5, short=True),
    Fault("policy frozen (SIGSTOP)", lambda h: h.signal("policy_node", signal.SIGSTOP),
          clear=lambda h: h.signal("policy_node", signal.SIGCONT), recover="auto", observe_s=2.0),
    Fault("robot state frozen (SIGSTOP)", lambda h: h.signal("robot_state_node", signal.SIGSTOP),
          clear=lambda h: h.signal("robot_state_node", signal.SIGCONT), recover="reset", expect_latch=True,
          observe_s=1.5, short=True),
    Fault("a second graph started beside this one", _second_graph, clear=_stop_second_graph,
          expect_hold=None, observe_s=1.0),
    Fault("two busy loops beside the graph", _busy_loops, clear=_stop_busy_loops, expect_hold=None, observe_s=5.0),
    Fault("robot state killed (SIGKILL), node restarted", lambda h: h.kill("robot_state_node"),
          clear=lambda h: h.restart("robot_state_node"), recover="reset", expect_latch=True, observe_s=1.5),
    Fault("policy killed (SIGKILL)", lambda h: h.kill("policy_node"), observe_s=2.0),   # last: not restarted
]
