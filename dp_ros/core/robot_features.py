"""Which robot-state numbers a policy sees and commands: one definition shared by the policy
node (live), the bag converter (offline) and the trainer, so train and deploy cannot disagree.

A checkpoint's `extra["robot"]` holds:
  obs_sources: {lowdim obs key: source}, source in SOURCES or "object:<name>" (a tracked object's
               pose on topics.OBJECT_POSE: x, y, cos yaw, sin yaw in the base frame - the angle
               in a form that does not wrap)
  action_space: "xy" | "xyz" | "xyz_rotvec" (see dp_ros.core.action_space)
  fixed_pose: (7,) pose that supplies the coordinates a planar action space does not command
"""

import re

import numpy as np

from dp_ros.core.transforms import as_pose, normalize_quat, quat_angle

SOURCES = {
    "tcp_xy": 2,      # planar tasks (Push-T): TCP position in the table plane
    "tcp_xyz": 3,
    "tcp_pose": 7,    # position + quaternion
    "joints": 6,
}
DEFAULT_FIXED_POSE = [0.55, 0.0, 0.05, 1.0, 0.0, 0.0, 0.0]   # the simulator's: TCP pointing down at table height
OBJECT_PREFIX = "object:"
OBJECT_DIM = 4    # x, y, cos(yaw), sin(yaw): a planar object pose (Push-T's T on the table)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")     # one ROS topic-name token


def object_names(text: str) -> list[str]:
    """"T, cup" -> ["T", "cup"]; "" -> []. ValueError on a name that cannot be a topic token."""
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    bad = [n for n in names if not _NAME.match(n)]
    if bad:
        raise ValueError(f"object names must be letters, digits and _ (not starting with a digit): {bad}")
    return names


def object_of(source: str) -> str | None:
    """The object name of an "object:<name>" source, else None."""
    if not str(source).startswith(OBJECT_PREFIX):
        return None
    name = source[len(OBJECT_PREFIX):]
    object_names(name)
    if not name:
        raise ValueError(f"observation source {source!r} names no object")
    return name


def source_dim(source: str) -> int:
    """How many numbers a source gives; ValueError for an unknown one."""
    if object_of(source) is not None:
        return OBJECT_DIM
    if source not in SOURCES:
        raise ValueError(f"unknown observation source {source!r} (known: {sorted(SOURCES)} and "
                         f"{OBJECT_PREFIX}<name>)")
    return SOURCES[source]


def object_feature(pose) -> np.ndarray:
    """A tracked object's pose (7,) -> (x, y, cos yaw, sin yaw), yaw about the base z axis."""
    p = as_pose(pose, "object pose")
    x, y, z, w = p[3:]
    yaw = np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    return np.array([p[0], p[1], np.cos(yaw), np.sin(yaw)], dtype=np.float32)


def split_sources(obs_sources: dict) -> tuple[dict, dict]:
    """{key: source} -> ({key: robot source}, {key: object name}): what the robot state gives and
    what comes from object pose topics."""
    robot, objects = {}, {}
    for key, source in obs_sources.items():
        name = object_of(source)
        if name is None:
            robot[key] = source
        else:
            objects[key] = name
    return robot, objects


def planar_pose(x: float, y: float, yaw: float, z: float = 0.0) -> np.ndarray:
    """(7,) pose of an object lying on the table at (x, y) turned by yaw about the base z axis."""
    return np.array([x, y, z, 0.0, 0.0, np.sin(yaw / 2.0), np.cos(yaw / 2.0)])


def feature(source: str, tcp_pose: np.ndarray, joints: np.ndarray | None = None) -> np.ndarray:
    if source == "tcp_xy":
        return np.asarray(tcp_pose[:2], dtype=np.float32)
    if source == "tcp_xyz":
        return np.asarray(tcp_pose[:3], dtype=np.float32)
    if source == "tcp_pose":
        return np.asarray(tcp_pose[:7], dtype=np.float32)
    if source == "joints":
        if joints is None:
            raise ValueError("observation source 'joints' needs joint positions")
        return np.asarray(joints[:6], dtype=np.float32)
    raise ValueError(f"unknown observation source {source!r} (known: {sorted(SOURCES)})")


def robot_spec(extra: dict | None, lowdim_obs: dict, action_dim: int) -> dict:
    """The checkpoint's robot spec, filled with defaults and checked against the policy's shapes."""
    spec = dict((extra or {}).get("robot", {}))
    sources = dict(spec.get("obs_sources", {}))
    by_dim = {dim: name for name, dim in SOURCES.items() if name != "joints"}
    for key, dim in lowdim_obs.items():
        if key not in sources:
            if dim not in by_dim:
                raise ValueError(f"no default robot source for lowdim obs {key!r} of dim {dim}")
            sources[key] = by_dim[dim]
        if source_dim(sources[key]) != dim:
            raise ValueError(f"lowdim obs {key!r} has dim {dim} but source {sources[key]!r} gives "
                             f"{source_dim(sources[key])}")
    kind = spec.get("action_space") or {2: "xy", 3: "xyz", 6: "xyz_rotvec"}.get(action_dim)
    if kind is None:
        raise ValueError(f"no default action space for action_dim {action_dim}")
    fixed = np.asarray(spec.get("fixed_pose", DEFAULT_FIXED_POSE), dtype=np.float64)
    return {"obs_sources": sources, "action_space": kind, "fixed_pose": fixed.tolist()}


def mean_quaternion(quats, outlier_factor: float = 3.0) -> np.ndarray:
    """Robust mean orientation of scalar-last unit quaternions (N, 4), sign-free (q and -q count
    the same): the principal eigenvector of sum q q^T (Markley et al. 2007), recomputed without
    the samples more than `outlier_factor` x the median angle away from the first estimate, so a
    few wild samples (a grasp, a glitch) do not tilt it. The sign is the one nearest
    DEFAULT_FIXED_POSE's quaternion, so a tool-down result reads like the simulator's."""
    q = normalize_quat(np.asarray(quats, dtype=np.float64).reshape(-1, 4))

    def principal(qs):
        return np.linalg.eigh(qs.T @ qs)[1][:, -1]

    m = principal(q)
    angles = np.asarray(quat_angle(np.broadcast_to(m, q.shape), q)).reshape(-1)
    keep = angles <= outlier_factor * np.median(angles) + 1e-9
    m = principal(q[keep])
    return m if m @ np.asarray(DEFAULT_FIXED_POSE[3:]) >= 0 else -m


def fixed_pose_from_targets(targets) -> list[float]:
    """The pose for the coordinates a planar / position-only action space does not command, from
    the recorded targets (N, 7) [x y z qx qy qz qw]: median x, y, z and the robust mean orientation
    (the cell's real table height and tool orientation, not the simulator's)."""
    t = np.asarray(targets, dtype=np.float64).reshape(-1, 7)
    t = t[np.all(np.isfinite(t), axis=1) & (np.linalg.norm(t[:, 3:], axis=1) > 1e-9)]
    if not len(t):
        raise ValueError("no finite recorded target to derive a fixed pose from")
    return [float(v) for v in np.median(t[:, :3], axis=0)] + [float(v) for v in mean_quaternion(t[:, 3:])]


def check_fixed_pose(fixed_pose, measured_pose, max_height_m: float, max_angle_rad: float) -> str | None:
    """Why a checkpoint's fixed pose must not be streamed from the measured TCP pose, or None.

    A planar policy commands x, y only and takes z and the orientation from fixed_pose; when those
    are far from where the tool is (a model trained on another cell, or on the simulator's default),
    the first command would drive the tool there. x and y are not compared: the policy commands them."""
    fixed, measured = as_pose(fixed_pose, "fixed_pose"), as_pose(measured_pose, "measured_pose")
    reasons = []
    dz = float(fixed[2] - measured[2])
    if abs(dz) > max_height_m:
        reasons.append(f"height {fixed[2]:.3f} m is {dz:+.3f} m from the measured {measured[2]:.3f} m "
                       f"(limit {max_height_m:g} m)")
    angle = float(quat_angle(fixed[3:], measured[3:]))
    if angle > max_angle_rad:
        reasons.append(f"orientation is {np.degrees(angle):.1f} deg from the measured one "
                       f"(limit {np.degrees(max_angle_rad):.1f} deg)")
    if not reasons:
        return None
    return ("the checkpoint's fixed pose " + " and ".join(reasons) +
            "; convert with --fixed-pose (or from bags recorded on this cell) or move the tool there first")


def fixed_pose_problem(robot: dict, measured_pose, max_height_m: float, max_angle_rad: float) -> str | None:
    """check_fixed_pose for a checkpoint's robot spec: "xy" takes height and orientation from its
    fixed pose, "xyz" only the orientation, "xyz_rotvec" nothing (None then)."""
    kind = robot["action_space"]
    if kind == "xyz_rotvec":
        return None
    return check_fixed_pose(robot["fixed_pose"], measured_pose,
                            max_height_m if kind == "xy" else float("inf"), max_angle_rad)
