"""Which robot-state numbers a policy sees and commands: one definition shared by the policy
node (live), the bag converter (offline) and the trainer, so train and deploy cannot disagree.

A checkpoint's `extra["robot"]` holds:
  obs_sources: {lowdim obs key: source}, source in SOURCES
  action_space: "xy" | "xyz" | "xyz_rotvec" (see dp_ros.core.action_space)
  fixed_pose: (7,) pose that supplies the coordinates a planar action space does not command
"""

import numpy as np

SOURCES = {
    "tcp_xy": 2,      # planar tasks (Push-T): TCP position in the table plane
    "tcp_xyz": 3,
    "tcp_pose": 7,    # position + quaternion
    "joints": 6,
}
DEFAULT_FIXED_POSE = [0.55, 0.0, 0.05, 1.0, 0.0, 0.0, 0.0]   # TCP pointing down at table height


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
        if SOURCES.get(sources[key]) != dim:
            raise ValueError(f"lowdim obs {key!r} has dim {dim} but source {sources[key]!r} gives "
                             f"{SOURCES.get(sources[key])}")
    kind = spec.get("action_space") or {2: "xy", 3: "xyz", 6: "xyz_rotvec"}.get(action_dim)
    if kind is None:
        raise ValueError(f"no default action space for action_dim {action_dim}")
    fixed = np.asarray(spec.get("fixed_pose", DEFAULT_FIXED_POSE), dtype=np.float64)
    return {"obs_sources": sources, "action_space": kind, "fixed_pose": fixed.tolist()}
