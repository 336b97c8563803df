"""One episode, from a recorded bag or a converted zarr store, in the form the episode figure and
the rerun export draw: frames, TCP and action series on one time axis (seconds from the start),
and the conversion's step grid.

A bag shows the streams as recorded (every TCP sample, every commanded target) plus what the
converter makes of them (dp_ros.data.convert with its default settings, or the given frequency):
the step grid and the resampled state and action at each step. A store holds only the steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dp_ros import topics as T
from dp_ros.core.action_space import ActionSpace

AXES = {"tcp_xy": ["x", "y"], "tcp_xyz": ["x", "y", "z"],
        "tcp_pose": ["x", "y", "z", "qx", "qy", "qz", "qw"], "joints": [f"q{i}" for i in range(6)],
        "xy": ["x", "y"], "xyz": ["x", "y", "z"], "xyz_rotvec": ["x", "y", "z", "rx", "ry", "rz"]}


@dataclass
class Series:
    t: np.ndarray            # (N,) seconds from the episode's start
    values: np.ndarray       # (N, D)
    labels: list


@dataclass
class EpisodeView:
    name: str
    kind: str                                  # "bag" | "store"
    frames: dict = field(default_factory=dict)  # camera -> (t (N,), images (N, H, W, 3))
    state: dict = field(default_factory=dict)   # name -> Series (TCP)
    action: dict = field(default_factory=dict)  # name -> Series (targets / actions)
    poses: dict = field(default_factory=dict)   # name -> (t, (N, 7)) for 3-D views: tcp, target, command
    grid: np.ndarray | None = None              # conversion step times (s)
    dt: float | None = None
    note: str = ""                               # why there is no grid, if there is none


def is_store(path) -> bool:
    return (Path(path) / "zarr.json").is_file()


def load_episode(path, episode: int = 0, frequency: float | None = None) -> EpisodeView:
    """A bag directory, or episode `episode` of a zarr store."""
    return load_store_episode(path, episode) if is_store(path) else load_bag(path, frequency)


def load_bag(path, frequency: float | None = None) -> EpisodeView:
    from dp_ros.data import convert
    from dp_ros.data.bag_reader import read_episode

    ep = read_episode(path)
    config = convert.make_config({"frequency": frequency})
    cams = {c: t for c, t in config["cameras"].items() if t in ep}
    if not cams:   # a bag of other cameras: show whichever image topics it has
        cams = {t.strip("/").replace("/", "_"): t for t, td in ep.topics.items()
                if td.msgtype == "sensor_msgs/msg/Image"}
    stamped = [td for td in ep.topics.values() if td.stamp_ns is not None and len(td.stamp_ns)]
    t0 = min(int(td.stamp_ns.min()) for td in stamped) if stamped else ep.start_ns
    sec = lambda ns: (np.asarray(ns, dtype=np.int64) - t0) / 1e9  # noqa: E731

    meta = ep.metadata
    about = ", ".join(str(v) for v in (meta.get("task"), {True: "success", False: "no success"}.get(meta.get("success")))
                      if v)
    view = EpisodeView(f"{ep.name} ({about})" if about else ep.name, "bag", dt=config["dt"])
    for cam, topic in cams.items():
        order = np.argsort(ep[topic].stamp_ns, kind="stable")
        view.frames[cam] = (sec(ep[topic].stamp_ns[order]), ep[topic].data[order])
    for name, topic in (("tcp", config["tcp_topic"]), ("target", config["action_topic"]),
                        ("command", T.SERVO_COMMAND)):
        if topic in ep:
            td = ep[topic]
            order = np.argsort(td.stamp_ns, kind="stable")
            view.poses[name] = (sec(td.stamp_ns[order]), td.data[order])
    if "tcp" in view.poses:
        t, p = view.poses["tcp"]
        view.state["tcp (recorded)"] = Series(t, p[:, :3], ["x", "y", "z"])
    if "target" in view.poses:
        t, p = view.poses["target"]
        view.action["target (recorded)"] = Series(t, p[:, :3], ["x", "y", "z"])
    try:
        data, _ = convert.resample_episode(ep, config, dict(convert.TOLERANCE_DEFAULTS))
    except (convert.SkipEpisode, KeyError) as exc:
        view.note = f"not convertible with the default settings: {exc}"
        return view
    view.grid = data["timestamp"] - t0 / 1e9
    for key, source in config["obs"].items():
        view.state[f"{key} (step)"] = Series(view.grid, data[key], AXES[source])
    view.action["action (step)"] = Series(view.grid, data["action"], AXES[config["action_space"]])
    return view


def load_store_episode(path, episode: int = 0) -> EpisodeView:
    from dp_ros.data.replay_buffer import ReplayBuffer

    buf = ReplayBuffer.open(path)
    if not 0 <= episode < buf.n_episodes:
        raise IndexError(f"{path} has {buf.n_episodes} episodes; --episode {episode} does not exist")
    cfg = buf.config
    d = buf.get_episode(episode)
    t = d["timestamp"] - d["timestamp"][0]
    names = buf.episode_names
    view = EpisodeView(f"{Path(path).name} #{episode} ({names[episode]})", "store", grid=t, dt=cfg["dt"])
    for cam in cfg["cameras"]:
        view.frames[cam] = (t, d[cam])
    for key, source in cfg["obs"].items():
        view.state[key] = Series(t, d[key], AXES[source])
        if source in ("tcp_xy", "tcp_xyz", "tcp_pose"):
            view.poses["tcp"] = (t, _as_poses(d[key], cfg["fixed_pose"]))
    view.action["action"] = Series(t, d["action"], AXES[cfg["action_space"]])
    view.poses["target"] = (t, ActionSpace(cfg["action_space"], cfg["fixed_pose"]).to_pose(d["action"]))
    return view


def _as_poses(values, fixed_pose) -> np.ndarray:
    """(N, 2|3|7) TCP observations -> (N, 7) poses; missing coordinates from the fixed pose."""
    base = np.asarray(fixed_pose if fixed_pose is not None else [0, 0, 0, 0, 0, 0, 1], dtype=float)
    out = np.tile(base, (len(values), 1))
    out[:, :values.shape[1]] = values
    return out
