"""`dp-ros convert`: recorded episode bags -> zarr replay buffer on the control-step grid.

    dp-ros convert BAG_OR_DIR... --out DATA.zarr [--config YAML] [--cameras top[=TOPIC] ...]
        [--image-size H W] [--frequency HZ] [--action-topic T] [--obs KEY=SOURCE ...]
        [--action-space xy|xyz|xyz_rotvec] [--fixed-pose x y z qx qy qz qw]
        [--max-frame-offset S] [--max-state-gap S] [--min-steps N]

Per episode, with dt = 1/frequency:
  * grid t_k = t0 + k*dt from the latest first-message time to the earliest last-message time of
    the required streams (cameras, robot state, action topic), all on header stamps;
  * each camera: the frame whose capture time (header.stamp) is nearest t_k, if within
    max_frame_offset (default dt/2 + 10 ms); resized to image_size with cv2.INTER_AREA;
  * robot state at t_k, linearly interpolated between the bracketing TCP PoseStamped samples
    (slerp for the quaternion of `tcp_pose`) or JointState samples, if they are at most
    max_state_gap apart (default 2*dt); an `object:<name>` observation likewise from the
    object's PoseStamped topic (/object/<name>/pose) as x, y, cos yaw, sin yaw;
  * action at t_k = the latest commanded target (action topic) stamped at or before t_k + dt/2
    (the one nearest the step), mapped by the action space (dp_ros.core.action_space).
The coordinates an xy / xyz action does not command come from fixed_pose: --fixed-pose (or the
config file) when given, else, for a new store, the recorded targets of the bags being converted
(median position, robust mean orientation: this cell's table height and tool orientation, not the
simulator's); an existing store keeps its own. The store's `fixed_pose_source` attribute and the
summary's `fixed_pose` say which.
The matching rules and default tolerances are core/timing.py's, the ones the policy node applies
when it builds observations, so training data is never aligned more loosely than deployment.
Steps at the start/end of an episode without a usable frame or state are trimmed (reported);
a gap inside an episode rejects the episode (dropping steps would break the uniform dt spacing
every training window assumes).

Bags that are incomplete (.partial), unreadable, lack a required topic, have another camera
resolution than the store, or are too short are reported by name with the reason and skipped.
Episodes already in the store (same bag name and recording) are skipped, so re-running on a
growing folder appends only the new ones. The config (YAML < CLI; an existing store's config
fills in what is not given) must equal the store's, else nothing is written.

Prints a JSON summary on stdout. Exit status: 0 when at least one episode was converted or every
bag was already present, 1 when nothing was converted, 2 on a usage/config error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from dp_ros import topics as T
from dp_ros.core import timing
from dp_ros.core.action_space import KINDS, ActionSpace
from dp_ros.core.robot_features import (DEFAULT_FIXED_POSE, SOURCES, fixed_pose_from_targets, object_feature,
                                       object_of, source_dim, split_sources)
from dp_ros.core.transforms import continuous_quats, pose_interp
from dp_ros.data.bag_reader import BadBag, bag_info, find_bags, read_episode
from dp_ros.data.replay_buffer import ConfigMismatch, ReplayBuffer, RESERVED_KEYS
from dp_ros.viz.progress import add_progress_flag, echo, progress_bar

DEFAULTS = {
    "frequency": 10.0,
    "cameras": ["top"],
    "image_size": [96, 96],
    "obs": {"robot_pose": "tcp_xy"},
    "action_space": "xy",
    "fixed_pose": list(DEFAULT_FIXED_POSE),
    "action_topic": T.SERVO_TARGET,
    "tcp_topic": T.ROBOT_TCP_POSE,
    "joints_topic": T.ROBOT_JOINTS,
}
# Quality thresholds: they decide which steps are usable, not what the data means, so they are
# not part of the store's identity.
TOLERANCE_DEFAULTS = {"max_frame_offset_s": None, "max_state_gap_s": None, "min_steps": 8}
EPISODE_INFO_KEYS = ("task", "success", "notes", "operator", "start_time_ns", "end_time_ns")


class SkipEpisode(Exception):
    """The episode cannot be converted; the message says why."""


# --- configuration --------------------------------------------------------------------------
def _cameras_dict(cams) -> dict[str, str]:
    """["top", "wrist=/my/topic"] or {"top": topic|None} -> {name: topic}."""
    if isinstance(cams, dict):
        items = list(cams.items())
    else:
        items = []
        for c in cams:
            name, _, topic = str(c).partition("=")
            items.append((name, topic or None))
    return {str(n): (t or T.CAMERA_IMAGE.format(name=n)) for n, t in items}


def _obs_dict(obs) -> dict[str, str]:
    if isinstance(obs, dict):
        return {str(k): str(v) for k, v in obs.items()}
    out = {}
    for item in obs:
        key, sep, source = str(item).partition("=")
        if not sep:
            raise ValueError(f"--obs expects KEY=SOURCE, got {item!r}")
        out[key] = source
    return out


def recorded_targets(bags, action_topic: str, progress: bool = True) -> np.ndarray:
    """Every target pose (N, 7) on the action topic of the readable bags (the others are reported
    when they are converted)."""
    poses = []
    for bag in progress_bar(bags, enabled=progress, desc="fixed pose", unit="bag"):
        try:
            td = read_episode(bag, topics=[action_topic], required=[action_topic]).topics[action_topic]
        except (BadBag, ValueError, IndexError):
            continue
        if td.msgtype == "geometry_msgs/msg/PoseStamped":
            poses.append(np.asarray(td.data, dtype=np.float64).reshape(-1, 7))
    return np.concatenate(poses) if poses else np.zeros((0, 7))


def make_config(settings: dict) -> dict:
    """The store config (what the data means), validated and in canonical form."""
    s = dict(DEFAULTS)
    s.update({k: v for k, v in settings.items() if v is not None})
    freq = float(s["frequency"])
    if not freq > 0:
        raise ValueError(f"frequency must be > 0, got {freq}")
    cams = _cameras_dict(s["cameras"])
    obs = _obs_dict(s["obs"])
    h, w = (int(x) for x in s["image_size"])
    if h < 1 or w < 1:
        raise ValueError(f"image_size must be [H, W] >= 1, got {s['image_size']}")
    for key, source in obs.items():
        try:
            source_dim(source)
        except ValueError as exc:
            raise ValueError(f"obs {key!r}: {exc}") from None
    names = list(cams) + list(obs)
    clash = sorted({n for n in names if names.count(n) > 1} | (set(names) & set(RESERVED_KEYS)))
    if clash:
        raise ValueError(f"observation names must be unique and not {RESERVED_KEYS}: {clash}")
    if s["action_space"] not in KINDS:
        raise ValueError(f"unknown action space {s['action_space']!r} (known: {sorted(KINDS)})")
    fixed = [float(x) for x in s["fixed_pose"]] if s["fixed_pose"] is not None else None
    ActionSpace(s["action_space"], fixed)            # validates fixed_pose
    return {
        "frequency": freq,
        "dt": 1.0 / freq,
        "cameras": cams,
        "image_size": [h, w],
        "obs": obs,
        "action_space": s["action_space"],
        "fixed_pose": fixed,
        "action_topic": str(s["action_topic"]),
        "tcp_topic": str(s["tcp_topic"]),
        "joints_topic": str(s["joints_topic"]),
    }


def object_topic(name: str) -> str:
    return T.OBJECT_POSE.format(name=name)


def required_topics(config: dict) -> list[str]:
    req = list(config["cameras"].values())
    sources = set(config["obs"].values())
    if sources & {"tcp_xy", "tcp_xyz", "tcp_pose"}:
        req.append(config["tcp_topic"])
    if "joints" in sources:
        req.append(config["joints_topic"])
    req += [object_topic(name) for name in sorted(set(split_sources(config["obs"])[1].values()))]
    req.append(config["action_topic"])
    return list(dict.fromkeys(req))


# --- resampling -----------------------------------------------------------------------------
def _times(td) -> np.ndarray:
    """Header stamps when the publisher set them, else log times."""
    if td.stamp_ns is not None and len(td.stamp_ns) and np.all(td.stamp_ns > 0):
        return td.stamp_ns
    return td.log_ns


def _sorted_unique(times: np.ndarray):
    """Order by time; of equal stamps keep the last received (a republished sample)."""
    order = np.argsort(times, kind="stable")
    t = times[order]
    keep = np.ones(len(t), dtype=bool)
    keep[:-1] = t[1:] != t[:-1]
    return t[keep], order[keep]


def _bracket(times: np.ndarray, grid: np.ndarray, max_gap_ns: int):
    """(lo, hi, w, valid): grid[k] lies between samples lo and hi at fraction w; valid when it is
    inside the recording and the samples around it are at most max_gap_ns apart."""
    lo, hi, w, span = timing.bracket(times, grid)
    return lo, hi, w, (grid >= times[0]) & (grid <= times[-1]) & (span <= max_gap_ns)


def resample_episode(ep, config: dict, tol: dict) -> tuple[dict, dict]:
    """-> (data arrays for ReplayBuffer.add_episode, report). Raises SkipEpisode."""
    dt_ns = timing.step_ns(1.0 / config["frequency"])
    # by default the deploy-time tolerances (core/timing.py): training data aligned as the policy
    # will see its observations, never more loosely
    max_frame_ns = timing.step_ns(tol["max_frame_offset_s"]) if tol["max_frame_offset_s"] is not None \
        else timing.frame_match_limit_ns(dt_ns)
    max_gap_ns = timing.step_ns(tol["max_state_gap_s"]) if tol["max_state_gap_s"] is not None \
        else timing.state_gap_limit_ns(dt_ns)

    streams = {}
    for topic in required_topics(config):
        t, order = _sorted_unique(_times(ep[topic]))
        streams[topic] = (t, order)
    t0 = max(t[0] for t, _ in streams.values())
    t1 = min(t[-1] for t, _ in streams.values())
    if t1 < t0:
        raise SkipEpisode("the required streams do not overlap in time "
                          f"({ {k: (int(v[0][0]), int(v[0][-1])) for k, v in streams.items()} })")
    n = (t1 - t0) // dt_ns + 1
    grid = timing.step_times(t0, n, dt_ns)
    valid = np.ones(n, dtype=bool)
    why = {}
    data = {}

    for cam, topic in config["cameras"].items():
        t, order = streams[topic]
        idx, off = timing.nearest(t, grid)
        ok = off <= max_frame_ns
        why.update({int(k): f"camera {cam!r}: nearest frame {off[k] / 1e6:.0f} ms away"
                    for k in np.flatnonzero(~ok & valid)})
        valid &= ok
        data[cam] = ep[topic].data[order[idx]]

    tcp = joints = None
    sources = set(config["obs"].values())
    if sources & {"tcp_xy", "tcp_xyz", "tcp_pose"}:
        t, order = streams[config["tcp_topic"]]
        poses = ep[config["tcp_topic"]].data[order]
        lo, hi, w, ok = _bracket(t, grid, max_gap_ns)
        why.update({int(k): "robot pose: no samples within max_state_gap around the step"
                    for k in np.flatnonzero(~ok & valid)})
        valid &= ok
        if "tcp_pose" in sources:
            # One quaternion hemisphere for the whole episode: q and -q are the same rotation,
            # but the network sees the numbers.
            poses[:, 3:] = continuous_quats(poses[:, 3:])
            tcp = pose_interp(poses[lo], poses[hi], w)
            tcp[:, 3:] = continuous_quats(tcp[:, 3:])
        else:                   # position only: the orientation may be unset and is not needed
            tcp = poses[lo, :3] + w[:, None] * (poses[hi, :3] - poses[lo, :3])
    if "joints" in sources:
        td = ep[config["joints_topic"]]
        if td.data.shape[1] < 6:
            raise SkipEpisode(f"{config['joints_topic']} has {td.data.shape[1]} joints, need 6")
        t, order = streams[config["joints_topic"]]
        q = td.data[order][:, :6]
        lo, hi, w, ok = _bracket(t, grid, max_gap_ns)
        why.update({int(k): "joints: no samples within max_state_gap around the step"
                    for k in np.flatnonzero(~ok & valid)})
        valid &= ok
        joints = q[lo] + w[:, None] * (q[hi] - q[lo])
    objects = {}
    for name in sorted(set(split_sources(config["obs"])[1].values())):
        topic = object_topic(name)
        t, order = streams[topic]
        # per sample first, then interpolated: (x, y, cos, sin) as the policy node's buffer does it
        feats = np.stack([object_feature(p) for p in ep[topic].data[order]])
        lo, hi, w, ok = _bracket(t, grid, max_gap_ns)
        why.update({int(k): f"object {name!r}: no pose within max_state_gap around the step"
                    for k in np.flatnonzero(~ok & valid)})
        valid &= ok
        objects[name] = feats[lo] + w[:, None] * (feats[hi] - feats[lo])
    for key, source in config["obs"].items():
        if source == "joints":
            data[key] = joints.astype(np.float32)
        elif object_of(source) is not None:
            data[key] = objects[object_of(source)].astype(np.float32)
        else:
            data[key] = tcp[:, :SOURCES[source]].astype(np.float32)

    t, order = streams[config["action_topic"]]
    targets = ep[config["action_topic"]].data[order]
    # The command issued at step k: the latest target at or before grid[k] + dt/2, i.e. the one
    # nearest the step. The teleop tick and the grid are both on dt, so timer jitter of less than
    # dt/2 cannot move a label to the previous or next step (at exactly grid[k] it would).
    j = np.clip(np.searchsorted(t, grid + dt_ns // 2, side="right") - 1, 0, len(t) - 1)
    space = ActionSpace(config["action_space"], config["fixed_pose"])
    try:
        data["action"] = space.from_pose(targets[j]).astype(np.float32)
    except ValueError as exc:
        raise SkipEpisode(f"action topic: {exc}") from None
    data["timestamp"] = grid.astype(np.float64) / 1e9

    good = np.flatnonzero(valid)
    if len(good) == 0:
        raise SkipEpisode("no step has all streams available: " + "; ".join(
            sorted(set(why.values()))[:3]))
    first, last = int(good[0]), int(good[-1])
    inner = np.flatnonzero(~valid[first:last + 1]) + first
    if len(inner):
        k = int(inner[0])
        raise SkipEpisode(f"{len(inner)} step(s) inside the episode lack data, first at "
                          f"{(grid[k] - t0) / 1e9:.2f} s: {why.get(k, '?')}")
    steps = last - first + 1
    if steps < tol["min_steps"]:
        raise SkipEpisode(f"too short: {steps} steps of {config['dt']:g} s "
                          f"(min_steps {tol['min_steps']})")
    data = {k: v[first:last + 1] for k, v in data.items()}
    report = {"steps": steps, "trimmed_start": first, "trimmed_end": int(n - 1 - last),
              "duration_s": round(float((grid[last] - grid[first]) / 1e9), 6)}
    return data, report


# --- one bag --------------------------------------------------------------------------------
def _bag_id(info: dict) -> str:
    start = (info.get("starting_time") or {}).get("nanoseconds_since_epoch")
    return f"{start}:{info.get('message_count')}"


def convert_bag(bag: Path, buf: ReplayBuffer, config: dict, tol: dict) -> dict:
    """Convert one bag into `buf`. Returns the report; raises BadBag / SkipEpisode."""
    h, w = config["image_size"]
    source_sizes = dict(buf.attrs.get("source_image_size", {}))
    seen: dict[str, set] = {}
    topic_cam = {t: c for c, t in config["cameras"].items()}

    def resize(topic, img):
        import cv2
        cam = topic_cam.get(topic)
        if cam is None:
            return img
        seen.setdefault(cam, set()).add(img.shape[:2])
        if img.shape[:2] == (h, w):
            return img
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)

    ep = read_episode(bag, topics=required_topics(config), required=required_topics(config),
                      image_transform=resize)
    expected = {t: "sensor_msgs/msg/Image" for t in config["cameras"].values()}
    expected.update({object_topic(n): "geometry_msgs/msg/PoseStamped" for n in split_sources(config["obs"])[1].values()})
    expected.update({config["tcp_topic"]: "geometry_msgs/msg/PoseStamped",
                     config["action_topic"]: "geometry_msgs/msg/PoseStamped",
                     config["joints_topic"]: "sensor_msgs/msg/JointState"})
    for topic, td in ep.topics.items():
        if topic in expected and td.msgtype != expected[topic]:
            raise SkipEpisode(f"{topic} is {td.msgtype}, expected {expected[topic]}")
    for cam, sizes in seen.items():
        if len(sizes) > 1:
            raise SkipEpisode(f"camera {cam!r} frame size changes within the episode: "
                              f"{sorted(sizes)}")
        hw = next(iter(sizes))
        want = source_sizes.get(cam)
        if want is not None and list(hw) != list(want):
            raise SkipEpisode(f"camera {cam!r} frames are {hw[0]}x{hw[1]}, but this store was "
                              f"converted from {want[0]}x{want[1]} frames (another camera "
                              "resolution changes what the resized image shows)")
    info = bag_info(bag)
    meta = ep.metadata
    record = {"source": str(bag.resolve()), "bag_id": _bag_id(info),
              "metadata": {k: meta[k] for k in EPISODE_INFO_KEYS if k in meta}}
    try:
        data, report = resample_episode(ep, config, tol)
        # add_episode validates everything before it writes, so a refusal leaves no trace
        buf.add_episode(data, name=bag.name, info=record)
    except (ValueError, IndexError) as exc:      # NaN / zero quaternion / wrong shapes in the bag
        raise SkipEpisode(f"malformed data: {exc}") from None
    missing_sizes = {c: list(next(iter(hw))) for c, hw in seen.items() if c not in source_sizes}
    if missing_sizes:
        source_sizes.update(missing_sizes)
        buf.attrs["source_image_size"] = source_sizes
    return report


# --- command line ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dp-ros convert", description=__doc__.split("\n")[0])
    p.add_argument("bags", nargs="+", help="episode bag directories or folders of them")
    p.add_argument("--out", required=True, help="zarr replay buffer (created or appended to)")
    p.add_argument("--config", help="YAML with any of the options below (top level or under "
                                    "'convert:'); command-line options win")
    p.add_argument("--cameras", nargs="*", help="camera names, NAME or NAME=TOPIC "
                                                "(default topic /camera/NAME/image_raw); none given: "
                                                "a state-only store")
    p.add_argument("--image-size", nargs=2, type=int, metavar=("H", "W"))
    p.add_argument("--frequency", type=float, help="control frequency in Hz (dt = 1/frequency)")
    p.add_argument("--action-topic")
    p.add_argument("--tcp-topic")
    p.add_argument("--joints-topic")
    p.add_argument("--obs", nargs="+", metavar="KEY=SOURCE",
                   help=f"low-dim observations, SOURCE in {sorted(SOURCES)}")
    p.add_argument("--action-space", choices=sorted(KINDS))
    p.add_argument("--fixed-pose", nargs=7, type=float, metavar="V",
                   help="pose [x y z qx qy qz qw] for coordinates the action space omits")
    p.add_argument("--max-frame-offset", type=float, dest="max_frame_offset_s",
                   help="max |frame capture time - step time| in s (default dt/2 + 10 ms, as at deploy time)")
    p.add_argument("--max-state-gap", type=float, dest="max_state_gap_s",
                   help="max spacing of the robot-state samples around a step in s (default 2*dt, as at deploy time)")
    p.add_argument("--min-steps", type=int, help="shorter episodes are skipped (8)")
    add_progress_flag(p)
    return p


def _load_yaml(path) -> dict:
    import yaml
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping")
    if isinstance(data.get("convert"), dict):
        data = data["convert"]
    if "control_frequency_hz" in data and "frequency" not in data:
        data["frequency"] = data.pop("control_frequency_hz")
    if "dt" in data:
        dt = float(data.pop("dt"))
        data.setdefault("frequency", 1.0 / dt)
    return data


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    try:
        settings = {}
        store_exists = (out / "zarr.json").exists()
        if store_exists:
            settings.update(ReplayBuffer.open(out).config)   # an existing store fills the gaps
        file_cfg = _load_yaml(args.config) if args.config else {}
        unknown = set(file_cfg) - set(DEFAULTS) - set(TOLERANCE_DEFAULTS)
        if unknown:
            raise ValueError(f"{args.config}: unknown keys {sorted(unknown)}")
        settings.update(file_cfg)
        cli = {"cameras": args.cameras, "image_size": args.image_size,
               "frequency": args.frequency, "action_topic": args.action_topic,
               "tcp_topic": args.tcp_topic, "joints_topic": args.joints_topic,
               "obs": args.obs, "action_space": args.action_space, "fixed_pose": args.fixed_pose}
        settings.update({k: v for k, v in cli.items() if v is not None})
        tol = dict(TOLERANCE_DEFAULTS)
        tol.update({k: file_cfg[k] for k in TOLERANCE_DEFAULTS if k in file_cfg})
        for k in TOLERANCE_DEFAULTS:
            if getattr(args, k, None) is not None:
                tol[k] = getattr(args, k)
        config = make_config({k: v for k, v in settings.items() if k in DEFAULTS})
        bags = find_bags(args.bags)
        if args.fixed_pose is not None:
            fixed_source = "given (--fixed-pose)"
        elif "fixed_pose" in file_cfg:
            fixed_source = f"given ({args.config})"
        elif store_exists:
            fixed_source = ReplayBuffer.open(out).attrs.get("fixed_pose_source", "the store's")
        elif config["action_space"] == "xyz_rotvec":
            fixed_source = "unused (xyz_rotvec commands the whole pose)"
        else:
            targets = recorded_targets(bags, config["action_topic"], progress=not args.no_progress)
            if len(targets):
                settings["fixed_pose"] = fixed_pose_from_targets(targets)
                config = make_config({k: v for k, v in settings.items() if k in DEFAULTS})
                fixed_source = f"derived from {len(targets)} recorded targets on {config['action_topic']}"
            else:
                fixed_source = "default (the simulator's: no recorded target could be read)"
        buf = ReplayBuffer.create_or_open(out, config)
        if not store_exists:
            buf.attrs["fixed_pose_source"] = fixed_source
    except (ValueError, OSError) as exc:
        kind = "config mismatch" if isinstance(exc, ConfigMismatch) else "error"
        print(f"dp-ros convert: {kind}: {exc}", file=sys.stderr)
        print(json.dumps({"out": str(out), "error": str(exc), "converted": [], "skipped": []}))
        return 2

    known = {e.get("name"): e.get("bag_id") for e in buf.episodes}
    converted, skipped, present = [], [], []
    echo(f"  fixed pose {config['fixed_pose']}: {fixed_source}", file=sys.stderr)
    for bag in progress_bar(bags, enabled=not args.no_progress, desc="convert", unit="bag"):
        name = bag.name
        try:
            info = bag_info(bag)
            if name in known:
                if known[name] == _bag_id(info):
                    present.append(name)
                    echo(f"  {name}: already in {out}, skipped", file=sys.stderr)
                    continue
                raise SkipEpisode(f"another recording named {name!r} is already in {out}; "
                                  "rename the bag directory to add it")
            report = convert_bag(bag, buf, config, tol)
        except (BadBag, SkipEpisode) as exc:
            reason = exc.reason if isinstance(exc, BadBag) else str(exc)
            skipped.append({"name": name, "path": str(bag), "reason": reason})
            echo(f"  {name}: SKIPPED: {reason}", file=sys.stderr)
            continue
        known[name] = _bag_id(info)
        converted.append({"name": name, **report})
        echo(f"  {name}: {report['steps']} steps", file=sys.stderr)

    summary = {
        "out": str(out),
        "converted": converted,
        "skipped": skipped,
        "already_present": present,
        "converted_steps": int(sum(c["steps"] for c in converted)),
        "total_episodes": buf.n_episodes,
        "total_steps": buf.n_steps,
        "config": config,
        "fixed_pose": {"pose": config["fixed_pose"], "source": fixed_source},
        "tolerances": tol,
    }
    print(json.dumps(summary, indent=2))
    if converted or (present and not skipped):
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
