"""teleop_node: SpaceMouse -> target poses for ur5_servo_node, and episode recording to rosbag2.

The device is published as the ROS spacenav driver does (Twist + Joy). Episodes start/stop with
button 1 or the /teleop/* services; each is one MCAP bag written from the serialized messages
as received (raw subscriptions), see dp_ros.data.bag_writer.
"""

import json
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import PoseStamped, Twist
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState, Joy
from std_srvs.srv import Trigger

from dp_ros import topics
from dp_ros.core.robot_features import object_names
from dp_ros.core.teleop import TeleopMapper
from dp_ros.data.recorder import EpisodeRecorder, cell_metadata
from dp_ros.nodes import backends
from dp_ros.nodes.common import Diagnostics, declare, run
from dp_ros.nodes.msgs import msg_to_pose, ns_to_time, pose_to_msg, task_state_from_msg

# recorded topic -> (message class, ROS type name); cameras are added per camera name
RECORDED = {
    topics.ROBOT_TCP_POSE: (PoseStamped, "geometry_msgs/msg/PoseStamped"),
    topics.ROBOT_JOINTS: (JointState, "sensor_msgs/msg/JointState"),
    topics.SERVO_TARGET: (PoseStamped, "geometry_msgs/msg/PoseStamped"),    # the action
    topics.SERVO_COMMAND: (PoseStamped, "geometry_msgs/msg/PoseStamped"),
    topics.TELEOP_TWIST: (Twist, "geometry_msgs/msg/Twist"),
    topics.TELEOP_JOY: (Joy, "sensor_msgs/msg/Joy"),
}
SIM_RECORDED = {topics.SIM_TASK_STATE: (DiagnosticStatus, "diagnostic_msgs/msg/DiagnosticStatus")}
SENSOR_TOPICS = {topics.ROBOT_TCP_POSE, topics.ROBOT_JOINTS, topics.SERVO_COMMAND, topics.TELEOP_TWIST,
                 topics.TELEOP_JOY}
# Recorder queue depth: 1.6 s of the fastest recorded stream (/servo/command at 125 Hz), far above
# the longest stall of this process (the expert's planning plus a bag flush).
RECORD_QUEUE_DEPTH = 200


class TeleopNode(Node):
    def __init__(self):
        super().__init__("teleop_node")
        # workspace, task, cameras, tool, payload, exposure: from the other nodes' sections
        self.p = p = declare(self, "teleop_node")
        self.dt = 1.0 / p["rate_hz"]
        self.mapper = TeleopMapper(p["workspace_min"], p["workspace_max"], p["max_speed_m_s"],
                                   p["max_rot_speed_rad_s"], p["deadzone"], p["planar"])
        self.diag = Diagnostics(self)
        self.measured = None
        self.task_state = {}

        self.target_pub = self.create_publisher(PoseStamped, topics.SERVO_TARGET, 10)
        self.twist_pub = self.create_publisher(Twist, topics.TELEOP_TWIST, qos_profile_sensor_data)
        self.joy_pub = self.create_publisher(Joy, topics.TELEOP_JOY, qos_profile_sensor_data)
        self.create_subscription(PoseStamped, topics.ROBOT_TCP_POSE, self._on_measured, qos_profile_sensor_data)
        if p["sim"]:
            self.create_subscription(DiagnosticStatus, topics.SIM_TASK_STATE, self._on_task, 10)

        # Raw subscriptions: the recorder stores the CDR bytes exactly as they arrived.
        self.recorded = dict(RECORDED)
        for cam in p["camera_names"]:
            self.recorded[topics.CAMERA_IMAGE.format(name=cam)] = (Image, "sensor_msgs/msg/Image")
        for name in object_names(p["objects"]):
            self.recorded[topics.OBJECT_POSE.format(name=name)] = (PoseStamped, "geometry_msgs/msg/PoseStamped")
        if p["sim"]:
            self.recorded.update(SIM_RECORDED)
        stamped = [t for t, (cls, _) in self.recorded.items() if hasattr(cls, "header")]
        self.recorder = EpisodeRecorder(p["output_dir"], {t: ty for t, (_, ty) in self.recorded.items()},
                                        stamped_topics=stamped, base_metadata=cell_metadata(p))
        # Deep queues: a short stall of this process (the expert planning, a chunk flush) must not
        # lose messages; best-effort readers only drop what overflows their history. The callback
        # takes the message info: its publication sequence numbers prove nothing was lost.
        sensor_qos = QoSProfile(depth=RECORD_QUEUE_DEPTH, reliability=ReliabilityPolicy.BEST_EFFORT)
        for topic, (msg_type, _) in self.recorded.items():
            sensor = topic in SENSOR_TOPICS or topic.startswith(("/camera/", "/object/"))
            qos = sensor_qos if sensor else RECORD_QUEUE_DEPTH
            self.create_subscription(msg_type, topic, lambda data, info, t=topic: self._record(t, data, info),
                                     qos, raw=True)

        self.create_service(Trigger, topics.RECORD_START, lambda q, r: self._srv(r, self.start_episode))
        self.create_service(Trigger, topics.RECORD_STOP, lambda q, r: self._srv(r, self.stop_episode))
        self.create_service(Trigger, topics.RECORD_DISCARD, lambda q, r: self._srv(r, self.discard_episode))
        self.create_service(Trigger, topics.TELEOP_RESYNC, lambda q, r: self._srv(r, self.resync))

        self.device = self._make_device()
        self._latest = None
        if p["backend"] == "spacenav":
            threading.Thread(target=self._read_device, daemon=True).start()
        self.create_timer(self.dt, self._tick)
        self.create_timer(1.0, self._report)

    # --- device
    def _make_device(self):
        if self.p["backend"] == "spacenav":
            return backends.spacemouse(self, self.p)
        if self.p["backend"] == "scripted":
            if not self.p["sim"]:
                raise ValueError("the scripted teleop backend needs the sim world (sim:=true)")
            from dp_ros.hardware.spacemouse import ScriptedSpaceMouse
            from dp_ros.sim.experts import expert_options, make_expert
            from dp_ros.sim.world import TaskPlaneMapping
            mapping = TaskPlaneMapping(np.asarray(self.p["task_xy_min"]), np.asarray(self.p["task_xy_max"]))
            self.expert = make_expert(self.p["task"], mapping, self.p["max_speed_m_s"], self.dt,
                                      int(self.p["expert_seed"]), **expert_options(self.p))
            return ScriptedSpaceMouse(self._expert_event)
        raise ValueError(f"unknown teleop backend {self.p['backend']!r} (expected spacenav or scripted)")

    def _expert_event(self, t_s):
        if not self.task_state or self.measured is None or self.mapper.target is None:
            return None
        return self.expert.act(self.task_state, self.measured, self.mapper.target[:2])

    def _read_device(self):
        # spacenavd streams motion events; keep the newest state for the control tick.
        while True:
            try:
                event = self.device.read(0.1)
            except Exception as exc:  # noqa: BLE001 - a lost daemon must not kill the arm's input silently
                self.get_logger().error(f"SpaceMouse read failed: {exc}", throttle_duration_sec=2.0)
                time.sleep(0.5)
                continue
            if event is not None:
                self._latest = event

    # --- inputs
    def _on_measured(self, msg):
        pose = msg_to_pose(msg)
        if np.all(np.isfinite(pose)):
            self.measured = pose
            if self.mapper.target is None:
                self.mapper.reset(pose)

    def _on_task(self, msg):
        self.task_state = task_state_from_msg(msg)
        if self.task_state.get("success"):
            self.recorder.latch_success()

    def _record(self, topic, data, info):
        gid = info.get("publisher_gid") or {}
        self.recorder.on_message(topic, self.get_clock().now().nanoseconds, data,
                                 seq=info.get("publication_sequence_number"), publisher=bytes(gid.get("data", b"")),
                                 sent_ns=info.get("source_timestamp"), received_ns=info.get("received_timestamp"))

    # --- control tick
    def _tick(self):
        if self.mapper.target is None:
            return
        # Stamp the control step before the expert plans: the target belongs to this tick's time.
        now = self.get_clock().now().nanoseconds
        event = self.device.read(0.0) if self.p["backend"] == "scripted" else self._latest
        if event is None:
            trans, rot, buttons = np.zeros(3), np.zeros(3), (False, False)
        else:
            trans, rot, buttons = event.translation, event.rotation, event.buttons
        step = self.mapper.step(trans, rot, buttons, self.dt)
        self.target_pub.publish(pose_to_msg(step.target, now))
        twist = Twist()
        twist.linear.x, twist.linear.y, twist.linear.z = (float(v) for v in trans)
        twist.angular.x, twist.angular.y, twist.angular.z = (float(v) for v in rot)
        self.twist_pub.publish(twist)
        joy = Joy(axes=[float(v) for v in (*trans, *rot)], buttons=[int(b) for b in buttons])
        joy.header.stamp = ns_to_time(now)
        self.joy_pub.publish(joy)
        if step.toggle_record:
            ok, message = (self.stop_episode() if self.recorder.recording else self.start_episode())
            self.get_logger().info(message)

    # --- episodes
    def _srv(self, response, action):
        response.success, response.message = action()
        return response

    def resync(self):
        if self.measured is None:
            return False, "no measured TCP pose yet"
        self.mapper.reset(self.measured)
        if hasattr(self, "expert"):
            self.expert.reset(int(self.task_state.get("seed", 0)) + int(self.p["expert_seed"]))
        return True, "target re-synced to the measured pose"

    def start_episode(self):
        return self.recorder.start(
            self.get_clock().now().nanoseconds, task=self.p["task"] if self.p["sim"] else "real",
            backend=self.p["backend"], sim=bool(self.p["sim"]), control_frequency_hz=self.p["rate_hz"],
            camera_names=list(self.p["camera_names"]), parameters=dict(self.p), seed=self.task_state.get("seed"))

    def stop_episode(self, **fields):
        success = (self.recorder.success or bool(self.task_state.get("success"))) if self.p["sim"] else None
        ok, info = self.recorder.stop(success=success, **fields)
        if ok and info["lost_messages"]:
            self.get_logger().warning(f"episode {info['path']}: {info['lost_messages']} messages lost in delivery "
                                   f"(see its metadata 'delivery')")
        return ok, (json.dumps(info) if ok else info)

    def discard_episode(self):
        return self.recorder.discard()

    def _report(self):
        rec = self.recorder
        delivery = rec.delivery.current if rec.recording else rec.last_delivery
        values = {"episodes_saved": rec.episodes_saved, "recording": rec.writer.name if rec.recording else ""}
        for topic, d in delivery.items():
            values[f"{topic}.written"] = d["written"]
            values[f"{topic}.lost"] = d["lost"]
        lost = sum(d["lost"] for d in delivery.values())
        self.diag.publish("warn" if lost else "ok", "recording" if rec.recording else "idle", values)

    def close(self):
        if self.recorder.recording:   # keep what was recorded, clearly marked
            self.stop_episode(interrupted=True, notes="recording stopped by node shutdown")
        self.device.close()


def main(args=None):
    return run(TeleopNode, args, realtime=True)


if __name__ == "__main__":
    raise SystemExit(main())
