"""numpy <-> ROS message conversions used by the nodes (one place for the wire formats).

Poses are numpy (7,) [x, y, z, qx, qy, qz, qw]; times are integer nanoseconds of ROS time.
"""

import json

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import PoseStamped, Transform
from sensor_msgs.msg import Image
from trajectory_msgs.msg import MultiDOFJointTrajectory, MultiDOFJointTrajectoryPoint

BASE_FRAME = "base"
TCP_JOINT = "tcp"


def time_to_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_time(ns: int) -> Time:
    ns = int(ns)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def ns_to_duration(ns: int) -> Duration:
    ns = int(ns)
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def image_to_msg(image: np.ndarray, stamp_ns: int, frame_id: str) -> Image:
    """RGB uint8 HxWx3 -> sensor_msgs/Image (rgb8). data is set from bytes: assigning a numpy
    array goes element by element in rclpy and costs hundreds of ms per frame."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    h, w = image.shape[:2]
    msg = Image(height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3)
    msg.header.stamp = ns_to_time(stamp_ns)
    msg.header.frame_id = frame_id
    msg.data = image.tobytes()
    return msg


def msg_to_image(msg: Image) -> np.ndarray:
    if msg.encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"unsupported image encoding {msg.encoding!r} (expected rgb8)")
    image = np.frombuffer(msg.data, dtype=np.uint8)
    if image.size != msg.height * msg.step:
        raise ValueError(f"image data has {image.size} bytes, header says {msg.height}x{msg.step}")
    image = image.reshape(msg.height, msg.step)[:, : msg.width * 3].reshape(msg.height, msg.width, 3)
    return image[..., ::-1] if msg.encoding == "bgr8" else image


def pose_to_msg(pose: np.ndarray, stamp_ns: int, frame_id: str = BASE_FRAME) -> PoseStamped:
    msg = PoseStamped()
    msg.header.stamp = ns_to_time(stamp_ns)
    msg.header.frame_id = frame_id
    p = msg.pose.position
    o = msg.pose.orientation
    p.x, p.y, p.z = (float(v) for v in pose[:3])
    o.x, o.y, o.z, o.w = (float(v) for v in pose[3:7])
    return msg


def msg_to_pose(msg: PoseStamped) -> np.ndarray:
    p, o = msg.pose.position, msg.pose.orientation
    return np.array([p.x, p.y, p.z, o.x, o.y, o.z, o.w], dtype=np.float64)


def _transform(pose: np.ndarray) -> Transform:
    t = Transform()
    t.translation.x, t.translation.y, t.translation.z = (float(v) for v in pose[:3])
    r = t.rotation
    r.x, r.y, r.z, r.w = (float(v) for v in pose[3:7])
    return t


def trajectory_to_msg(times_ns, poses, stamp_ns: int | None = None) -> MultiDOFJointTrajectory:
    """Waypoints with absolute times: header.stamp + time_from_start = waypoint time."""
    times_ns = [int(t) for t in times_ns]
    base = int(stamp_ns if stamp_ns is not None else (times_ns[0] if times_ns else 0))
    msg = MultiDOFJointTrajectory()
    msg.header.stamp = ns_to_time(base)
    msg.header.frame_id = BASE_FRAME
    msg.joint_names = [TCP_JOINT]
    for t, pose in zip(times_ns, poses):
        if t < base:
            raise ValueError("waypoint earlier than the trajectory's header stamp")
        point = MultiDOFJointTrajectoryPoint()
        point.transforms = [_transform(pose)]
        point.time_from_start = ns_to_duration(t - base)
        msg.points.append(point)
    return msg


def msg_to_trajectory(msg: MultiDOFJointTrajectory):
    """-> (times_ns int64 (N,), poses float64 (N, 7)). Raises ValueError on a malformed message."""
    base = time_to_ns(msg.header.stamp)
    times, poses = [], []
    for i, point in enumerate(msg.points):
        if len(point.transforms) != 1:
            raise ValueError(f"waypoint {i} has {len(point.transforms)} transforms, expected 1 (tcp)")
        tr = point.transforms[0]
        d = point.time_from_start
        times.append(base + int(d.sec) * 1_000_000_000 + int(d.nanosec))
        poses.append([tr.translation.x, tr.translation.y, tr.translation.z,
                      tr.rotation.x, tr.rotation.y, tr.rotation.z, tr.rotation.w])
    return np.asarray(times, dtype=np.int64), np.asarray(poses, dtype=np.float64).reshape(-1, 7)


def task_state_from_msg(msg) -> dict:
    """The sim world's task state: DiagnosticStatus key/values, each value JSON-encoded."""
    state = {}
    for kv in msg.values:
        try:
            state[kv.key] = json.loads(kv.value)
        except ValueError:
            state[kv.key] = kv.value
    return state
