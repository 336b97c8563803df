"""Shared helpers of the data-pipeline tests (no tests here): record realistic episodes to real
rosbag2/MCAP bags with EpisodeBagWriter from rclpy-serialized messages, and keep the ground truth.

Motion model (exact for the converter's interpolation): TCP position moves linearly in time,
the TCP rotates about z at a constant rate (slerp is exact for that), joints move linearly.
Header stamps are the nominal sample times plus jitter; log (receive) times add a latency.
Frames are seeded noise images, so a test can regenerate frame i and resize it itself.
"""

from __future__ import annotations

import numpy as np
from rclpy.serialization import serialize_message
from sensor_msgs.msg import JointState

from dp_ros.data.bag_writer import EpisodeBagWriter
from dp_ros.nodes.msgs import image_to_msg, ns_to_time, pose_to_msg

T0 = 1_700_000_000_000_000_000
CAM_TOPIC = "/camera/top/image_raw"
TCP_TOPIC = "/robot/tcp_pose"
JOINT_TOPIC = "/robot/joint_states"
TARGET_TOPIC = "/servo/target_pose"
OBJECT_TOPIC = "/object/T/pose"            # a tracked object (written only when asked for)
TOPICS = {
    CAM_TOPIC: "sensor_msgs/msg/Image",
    TCP_TOPIC: "geometry_msgs/msg/PoseStamped",
    JOINT_TOPIC: "sensor_msgs/msg/JointState",
    TARGET_TOPIC: "geometry_msgs/msg/PoseStamped",
}
P0 = np.array([0.45, -0.10, 0.12])
VEL = np.array([0.05, 0.04, -0.01])          # m/s
YAW_RATE = 0.3                               # rad/s about z
Q_START = np.array([1.0, 0.0, 0.0, 0.0])     # TCP pointing down
J0 = np.array([0.0, -1.5, 1.2, -1.3, -1.57, 0.2])
JVEL = np.array([0.1, -0.05, 0.08, 0.02, 0.0, -0.1])


def frame(i: int, hw=(48, 64)) -> np.ndarray:
    return np.random.default_rng(1000 + i).integers(0, 256, (*hw, 3), dtype=np.uint8)


def quat_at(t_s):
    """Q_START followed by a rotation of YAW_RATE*t about the base z axis (scalar-last)."""
    t_s = np.asarray(t_s, dtype=np.float64)
    half = 0.5 * YAW_RATE * t_s
    qz = np.stack([np.zeros_like(half), np.zeros_like(half), np.sin(half), np.cos(half)], -1)
    from dp_ros.core.transforms import quat_mul
    return quat_mul(qz, np.broadcast_to(Q_START, qz.shape))


def tcp_at(t_ns, t_origin_ns=T0) -> np.ndarray:
    t = (np.asarray(t_ns, dtype=np.int64) - t_origin_ns) / 1e9
    pos = P0 + np.multiply.outer(t, VEL)
    return np.concatenate([pos, quat_at(t)], axis=-1)


def joints_at(t_ns, t_origin_ns=T0) -> np.ndarray:
    t = (np.asarray(t_ns, dtype=np.int64) - t_origin_ns) / 1e9
    return J0 + np.multiply.outer(t, JVEL)


def target_at(k: int) -> np.ndarray:
    """Teleop target k: a zig-zag that is NOT the measured pose, so actions are distinguishable."""
    return np.array([0.5 + 0.001 * k, 0.02 * np.sin(0.3 * k), 0.1 + 0.0005 * k,
                     0.0, 0.0, np.sin(0.01 * k), np.cos(0.01 * k)])


def _times(rng, start_ns, duration_s, hz, jitter_ms):
    n = int(duration_s * hz)
    nominal = start_ns + (np.arange(n) * (1e9 / hz)).astype(np.int64)
    jitter = (rng.uniform(-jitter_ms, jitter_ms, n) * 1e6).astype(np.int64)
    stamps = nominal + jitter
    stamps[0] = nominal[0]
    return np.sort(stamps)


def object_at(t_ns, t_origin_ns=T0) -> np.ndarray:
    """The tracked object slides along x and turns about z through +-pi (where an angle would wrap)."""
    t = (np.asarray(t_ns, dtype=np.int64) - t_origin_ns).astype(np.float64) * 1e-9
    yaw = np.pi - 0.5 + 0.4 * t                 # crosses pi 1.25 s in
    return np.stack([0.5 + 0.02 * t, 0.05 + 0 * t, 0 * t, 0 * t, 0 * t, np.sin(yaw / 2), np.cos(yaw / 2)], axis=-1)


def joint_msg(q, stamp_ns) -> JointState:
    msg = JointState()
    msg.header.stamp = ns_to_time(stamp_ns)
    msg.name = [f"joint{i}" for i in range(6)]
    msg.position = [float(x) for x in q]
    return msg


def record_episode(root, name, *, start_ns=T0, duration_s=3.0, cam_hz=30.0, state_hz=125.0,
                   target_hz=50.0, hw=(48, 64), seed=0, skip_topics=(), drop=None,
                   metadata=None, close=True, success=True, target_jitter_ms=2.0,
                   latency_ms=(2.0, 15.0), target_fn=None, object_hz=None):
    """Write one episode; returns (path or writer, truth). truth[topic] holds stamps/values in
    stamp order (camera: frame indices), truth["log_order"][topic] the same in receive order.
    target_fn(k) -> (7,) replaces target_at for the teleop targets."""
    rng = np.random.default_rng(seed)
    drop = drop or {}          # {topic: sample indices left out (dropped frames, state gaps)}
    truth = {}
    msgs = []      # (log_ns, topic, cdr, stamp_ns, value or frame index)
    lat = lambda n: (rng.uniform(*latency_ms, n) * 1e6).astype(np.int64)  # noqa: E731

    if CAM_TOPIC not in skip_topics:
        st = _times(rng, start_ns, duration_s, cam_hz, 3.0)
        keep = np.array([i not in drop.get(CAM_TOPIC, ()) for i in range(len(st))])
        idx = np.arange(len(st))[keep]
        st = st[keep]
        truth[CAM_TOPIC] = {"stamp": st, "index": idx}
        for i, s, lg in zip(idx, st, st + lat(len(st))):
            msgs.append((lg, CAM_TOPIC, serialize_message(image_to_msg(frame(i, hw), s, "top")),
                         s, i))
    for topic, fn in ((TCP_TOPIC, tcp_at), (JOINT_TOPIC, joints_at)):
        if topic in skip_topics:
            continue
        st = _times(rng, start_ns, duration_s, state_hz, 1.0)
        st = np.delete(st, list(drop.get(topic, ())))
        vals = fn(st)
        truth[topic] = {"stamp": st, "value": vals}
        for s, lg, v in zip(st, st + lat(len(st)), vals):
            m = pose_to_msg(v, s) if topic == TCP_TOPIC else joint_msg(v, s)
            msgs.append((lg, topic, serialize_message(m), s, v))
    if object_hz:
        st = _times(rng, start_ns, duration_s, object_hz, 2.0)
        vals = object_at(st)
        truth[OBJECT_TOPIC] = {"stamp": st, "value": vals}
        for s, lg, v in zip(st, st + lat(len(st)), vals):
            msgs.append((lg, OBJECT_TOPIC, serialize_message(pose_to_msg(v, s)), s, v))
    if TARGET_TOPIC not in skip_topics:
        st = _times(rng, start_ns, duration_s, target_hz, target_jitter_ms)
        vals = np.stack([(target_fn or target_at)(k) for k in range(len(st))])
        truth[TARGET_TOPIC] = {"stamp": st, "value": vals}
        for s, lg, v in zip(st, st + lat(len(st)), vals):
            msgs.append((lg, TARGET_TOPIC, serialize_message(pose_to_msg(v, s)), s, v))
    msgs.sort(key=lambda m: m[0])
    topics = {t: ty for t, ty in TOPICS.items() if t not in skip_topics}
    if object_hz:
        topics[OBJECT_TOPIC] = "geometry_msgs/msg/PoseStamped"
    meta = {"task": "reach", "operator": "test", "config": {"cam_hz": cam_hz}}
    meta.update(metadata or {})
    w = EpisodeBagWriter(root, name, topics, meta)
    for lg, topic, cdr, _, _ in msgs:
        w.write(topic, lg, cdr)
    # What a reader returns: messages in log (receive) order, which latency jitter can make
    # differ from stamp order.
    truth["log"] = {t: np.array([m[0] for m in msgs if m[1] == t]) for t in topics}
    truth["log_order"] = {t: {"stamp": np.array([m[3] for m in msgs if m[1] == t]),
                              "value": np.array([m[4] for m in msgs if m[1] == t])}
                          for t in topics}
    truth["count"] = {t: sum(1 for m in msgs if m[1] == t) for t in topics}
    if not close:
        return w, truth
    return w.close(success=success, notes="clean run"), truth
