"""Read one recorded episode (rosbag2 directory) into numpy arrays.

`read_episode(bag_dir)` decodes every topic with the rosbags AnyReader (ROS 2 Kilted typestore as
the fallback for bags without embedded definitions) into a `TopicData` per topic:

  sensor_msgs/msg/Image        data (N, H, W, 3) uint8 RGB (rgb8 / bgr8), stamp_ns = header stamps
  geometry_msgs/msg/PoseStamped data (N, 7) float64 [x y z qx qy qz qw], stamp_ns
  sensor_msgs/msg/JointState   data (N, J) float64 positions, stamp_ns, names
  std_msgs/msg/String          data list[str]
  anything else                data list of the decoded rosbags message objects

log_ns is always the receive/log time the recorder wrote; messages stay in log order.
A bag that is incomplete, unreadable or lacks a required topic raises `BadBag(path, reason)`.

No rclpy here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import yaml

from dp_ros.data.bag_writer import CUSTOM_DATA_KEY, METADATA_TOPIC, PARTIAL_SUFFIX, typestore

STORAGE_SUFFIXES = (".mcap", ".db3")


class BadBag(Exception):
    """A bag that cannot be used, with the reason in words."""

    def __init__(self, path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass
class TopicData:
    topic: str
    msgtype: str
    log_ns: np.ndarray                       # int64 (N,) receive/log time
    stamp_ns: np.ndarray | None = None       # int64 (N,) header.stamp, for types with a header
    data: object = None                      # see the module docstring
    names: list[str] | None = None           # JointState joint names (of the first message)

    def __len__(self) -> int:
        return len(self.log_ns)


@dataclass
class Episode:
    path: Path
    name: str
    metadata: dict
    topics: dict[str, TopicData] = field(default_factory=dict)
    start_ns: int = 0                         # rosbag2 starting_time
    duration_ns: int = 0

    def __getitem__(self, topic: str) -> TopicData:
        try:
            return self.topics[topic]
        except KeyError:
            raise KeyError(f"episode {self.name!r} has no topic {topic!r} "
                           f"(has: {sorted(self.topics)})") from None

    def __contains__(self, topic: str) -> bool:
        return topic in self.topics


# --- finding bags -------------------------------------------------------------------------
def is_bag_dir(path: Path) -> bool:
    """A rosbag2 directory (complete or not), as opposed to a folder of episodes."""
    path = Path(path)
    if not path.is_dir():
        return False
    if path.name.endswith(PARTIAL_SUFFIX) or (path / "metadata.yaml").is_file():
        return True
    return any(f.suffix in STORAGE_SUFFIXES for f in path.iterdir() if f.is_file())


def find_bags(paths: Iterable) -> list[Path]:
    """Bag directories among `paths`, each either a bag or a folder whose children are bags
    (sorted by name). Folders without any bag are returned as they are, so the caller reports
    them instead of silently finding nothing."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir() and not is_bag_dir(p):
            children = sorted(c for c in p.iterdir() if is_bag_dir(c))
            out.extend(children if children else [p])
        else:
            out.append(p)
    seen, unique = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


# --- checks -------------------------------------------------------------------------------
def bag_info(bag_dir) -> dict:
    """The rosbag2 metadata.yaml content (rosbag2_bagfile_information); BadBag if the bag is
    incomplete or the file is unreadable. Cheap: reads no messages."""
    path = Path(bag_dir)
    if not path.exists():
        raise BadBag(path, "does not exist")
    if not path.is_dir():
        raise BadBag(path, "not a directory (expected a rosbag2 directory)")
    if path.name.endswith(PARTIAL_SUFFIX):
        raise BadBag(path, "incomplete recording (.partial: the recorder was stopped before it "
                           "closed the episode)")
    meta_file = path / "metadata.yaml"
    if not meta_file.is_file():
        raise BadBag(path, "incomplete or not a rosbag2 directory: no metadata.yaml")
    try:
        info = yaml.safe_load(meta_file.read_text())["rosbag2_bagfile_information"]
        if not isinstance(info, dict):
            raise TypeError("rosbag2_bagfile_information is not a mapping")
    except Exception as exc:  # noqa: BLE001 - any parse problem means the same to the user
        raise BadBag(path, f"unreadable metadata.yaml ({exc})") from None
    return info


def episode_metadata_from_info(info: dict) -> dict | None:
    raw = (info.get("custom_data") or {}).get(CUSTOM_DATA_KEY)
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


# --- decoding -----------------------------------------------------------------------------
def _stamp_ns(msg) -> int:
    s = msg.header.stamp
    return int(s.sec) * 1_000_000_000 + int(s.nanosec)


def _deserialize(reader, rawdata, msgtype: str):
    """AnyReader.deserialize, tolerating extra bytes after a complete message.

    rosbags rejects more than 3 trailing bytes; rclpy's serialize_message (Kilted, Fast DDS)
    reports an over-estimated length for e.g. JointState with empty trailing sequences, so bags
    written from it carry a few stray bytes that rosbag2 itself and the mcap decoder ignore.
    Raw subscriptions deliver exact lengths; this fallback only matters for such bags.
    """
    from rosbags.highlevel import AnyReaderError

    try:
        return reader.deserialize(rawdata, msgtype)
    except AnyReaderError as exc:
        if "size mismatch" not in str(exc) or bytes(rawdata[:2]) not in (b"\x00\x00",
                                                                          b"\x00\x01"):
            raise
    store = reader.typestore
    msgdef = store.get_msgdef(msgtype)
    func = msgdef.deserialize_cdr_le if rawdata[1] else msgdef.deserialize_cdr_be
    return func(rawdata[4:], 0, msgdef.cls, store)[0]


def _image_rgb(msg) -> np.ndarray:
    if msg.encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"unsupported image encoding {msg.encoding!r} (expected rgb8 or bgr8)")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    if step < w * 3 or data.size != h * step:
        raise ValueError(f"image data has {data.size} bytes, header says {h}x{w} step {step}")
    img = data.reshape(h, step)[:, : w * 3].reshape(h, w, 3)
    return img[..., ::-1] if msg.encoding == "bgr8" else img


def _pose7(msg) -> list[float]:
    p, o = msg.pose.position, msg.pose.orientation
    return [p.x, p.y, p.z, o.x, o.y, o.z, o.w]


def read_episode(bag_dir, topics: Iterable[str] | None = None, required: Iterable[str] = (),
                 image_transform: Callable[[str, np.ndarray], np.ndarray] | None = None
                 ) -> Episode:
    """Decode a rosbag2 episode.

    topics: only these topics (default all). required: topics that must be present with at
    least one message, else BadBag. image_transform(topic, rgb) is applied to each decoded frame
    (e.g. resize while reading, so full-size frames are never all held in memory).
    """
    from rosbags.highlevel import AnyReader, AnyReaderError  # lazy: heavy import

    path = Path(bag_dir)
    info = bag_info(path)
    required = list(dict.fromkeys(required))
    wanted = None if topics is None else set(topics) | set(required) | {METADATA_TOPIC}

    raw: dict[str, dict] = {}
    meta_msgs: list[str] = []
    try:
        with AnyReader([path], default_typestore=typestore()) as reader:
            conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
            msgtypes = {c.topic: c.msgtype for c in conns}
            for conn, log_ns, rawdata in reader.messages(connections=conns):
                msg = _deserialize(reader, rawdata, conn.msgtype)
                if conn.topic == METADATA_TOPIC:
                    meta_msgs.append(msg.data)
                    continue
                d = raw.setdefault(conn.topic, {"log": [], "stamp": [], "data": [],
                                                "names": None})
                d["log"].append(log_ns)
                mt = conn.msgtype
                if hasattr(msg, "header"):
                    d["stamp"].append(_stamp_ns(msg))
                if mt == "sensor_msgs/msg/Image":
                    img = _image_rgb(msg)
                    if image_transform is not None:
                        img = image_transform(conn.topic, img)
                    d["data"].append(np.ascontiguousarray(img))
                elif mt == "geometry_msgs/msg/PoseStamped":
                    d["data"].append(_pose7(msg))
                elif mt == "sensor_msgs/msg/JointState":
                    if d["names"] is None:
                        d["names"] = list(msg.name)
                    d["data"].append(np.asarray(msg.position, dtype=np.float64))
                elif mt == "std_msgs/msg/String":
                    d["data"].append(msg.data)
                else:
                    d["data"].append(msg)
    except BadBag:
        raise
    except (AnyReaderError, ValueError, KeyError, OSError, EOFError, AssertionError) as exc:
        raise BadBag(path, f"unreadable: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - storage plugins raise a variety of errors
        raise BadBag(path, f"unreadable: {type(exc).__name__}: {exc}") from None

    missing = [t for t in required if not raw.get(t, {}).get("log")]
    if missing:
        have = {t: len(d["log"]) for t, d in raw.items()}
        raise BadBag(path, f"missing required topics {missing} (has {have})")

    out: dict[str, TopicData] = {}
    for topic, d in raw.items():
        mt = msgtypes[topic]
        td = TopicData(topic, mt, np.asarray(d["log"], dtype=np.int64),
                       np.asarray(d["stamp"], dtype=np.int64) if d["stamp"] else None,
                       names=d["names"])
        try:
            if mt == "sensor_msgs/msg/Image":
                shapes = {a.shape for a in d["data"]}
                if len(shapes) > 1:
                    raise ValueError(f"frame sizes change within the episode: {sorted(shapes)}")
                td.data = np.stack(d["data"])
            elif mt == "geometry_msgs/msg/PoseStamped":
                td.data = np.asarray(d["data"], dtype=np.float64).reshape(-1, 7)
            elif mt == "sensor_msgs/msg/JointState":
                lens = {len(a) for a in d["data"]}
                if len(lens) > 1:
                    raise ValueError(f"joint count changes within the episode: {sorted(lens)}")
                td.data = np.stack(d["data"])
            else:
                td.data = d["data"]
        except ValueError as exc:
            raise BadBag(path, f"topic {topic}: {exc}") from None
        out[topic] = td

    meta = episode_metadata_from_info(info)
    if meta is None and meta_msgs:
        try:
            meta = json.loads(meta_msgs[-1])   # the last one is the final word
        except ValueError:
            meta = None
    start = int((info.get("starting_time") or {}).get("nanoseconds_since_epoch", 0))
    dur = int((info.get("duration") or {}).get("nanoseconds", 0))
    return Episode(path=path, name=path.name, metadata=meta or {}, topics=out,
                   start_ns=start, duration_ns=dur)
