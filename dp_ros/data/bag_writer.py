"""One rosbag2 (MCAP) directory per demonstration episode, written from serialized CDR bytes.

The recorder node subscribes with raw=True and hands the bytes straight to `EpisodeBagWriter.write`:
no deserialization on the hot path, and the bag holds exactly what went over the wire.

Crash safety: the bag is built inside `<root>/<episode>.partial/` and moved to `<root>/<episode>/`
only after a clean close (metadata.yaml written, files fsynced). A killed recorder therefore
leaves a `.partial` directory that every reader recognises as incomplete, and episodes recorded
earlier are never touched. Layout while recording:

    <root>/<episode>.partial/<episode>/<episode>.mcap      (no metadata.yaml yet)

and after close:

    <root>/<episode>/<episode>.mcap + metadata.yaml

(The nested directory keeps the MCAP file named after the episode: rosbags names the storage
file after its directory, and metadata.yaml refers to it by name, so the final rename must not
change that name.)

Episode metadata (task, config, start/end times, success, operator notes, ...) is stored twice:
as rosbag2 `custom_data` in metadata.yaml (key `dp_ros.episode`, a JSON string) and as
std_msgs/msg/String JSON messages on `/episode/metadata`, readable by any MCAP/rosbag2 tool.
The first such message is written with the first data message (what was known at the start);
the last one, written at close, is the final word.

This module does not import rclpy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

METADATA_TOPIC = "/episode/metadata"
METADATA_TYPE = "std_msgs/msg/String"
CUSTOM_DATA_KEY = "dp_ros.episode"
PARTIAL_SUFFIX = ".partial"

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_TYPESTORE = None


def typestore():
    """The ROS 2 Kilted typestore (built once: it is a few hundred message types)."""
    global _TYPESTORE
    if _TYPESTORE is None:
        _TYPESTORE = get_typestore(Stores.ROS2_KILTED)
    return _TYPESTORE


def _json_default(obj):
    # numpy scalars/arrays and Paths show up in configs; keep the metadata JSON total.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class EpisodeBagWriter:
    """Write one episode to `<root_dir>/<episode_name>/` (rosbag2, MCAP storage).

    topics: {topic: ROS type name, e.g. "sensor_msgs/msg/Image"}; messages are written as the
    serialized CDR bytes received. metadata: JSON-able dict stored with the episode.

    Thread-safe: write() may be called from several executor threads. After close() or
    discard(), write() drops the message and returns False (a callback racing the end of the
    episode is normal, not an error); `dropped` counts such messages.
    """

    def __init__(self, root_dir, episode_name: str, topics: dict[str, str],
                 metadata: dict | None = None, start_time_ns: int | None = None):
        if not _NAME_RE.match(episode_name) or episode_name.endswith(PARTIAL_SUFFIX):
            raise ValueError(f"episode name {episode_name!r} must be a plain file name "
                             f"(letters, digits, _ . -) not ending in {PARTIAL_SUFFIX!r}")
        if METADATA_TOPIC in topics:
            raise ValueError(f"{METADATA_TOPIC} is written by the episode writer itself")
        ts = typestore()
        unknown = {t: m for t, m in topics.items() if m not in ts.types}
        if unknown:
            raise ValueError(f"unknown message types {unknown} (expected names like "
                             "'sensor_msgs/msg/Image' from the ROS 2 Kilted typestore)")
        self.root = Path(root_dir)
        self.name = episode_name
        self.final_path = self.root / episode_name
        self.partial_path = self.root / (episode_name + PARTIAL_SUFFIX)
        for p in (self.final_path, self.partial_path):
            if p.exists():
                raise FileExistsError(f"{p} exists already; choose another episode name"
                                      + (" (or discard the interrupted recording)"
                                         if p == self.partial_path else ""))
        self.topics = dict(topics)
        self.metadata = dict(metadata or {})
        self.metadata.setdefault("episode", episode_name)
        self.metadata["topics"] = dict(topics)
        self._start_ns = None if start_time_ns is None else int(start_time_ns)
        self._last_ns = None
        self._lock = threading.Lock()
        self._state = "open"            # open -> closed | discarded | failed
        self.dropped = 0
        self.counts = {t: 0 for t in topics}

        self.root.mkdir(parents=True, exist_ok=True)
        self.partial_path.mkdir()
        self._bag_path = self.partial_path / episode_name
        self._writer = Writer(self._bag_path, version=Writer.VERSION_LATEST,
                              storage_plugin=StoragePlugin.MCAP)
        try:
            self._writer.open()
            self._conns = {t: self._writer.add_connection(t, m, typestore=ts)
                           for t, m in topics.items()}
            self._meta_conn = self._writer.add_connection(METADATA_TOPIC, METADATA_TYPE,
                                                          typestore=ts)
        except BaseException:
            self._writer.abort()
            raise
        self._wrote_start_meta = False

    # --- properties -----------------------------------------------------------------------
    @property
    def path(self) -> Path:
        """Where the episode is now: the .partial directory until closed, then the final one."""
        return self.final_path if self._state == "closed" else self.partial_path

    @property
    def closed(self) -> bool:
        return self._state != "open"

    # --- writing --------------------------------------------------------------------------
    def _metadata_cdr(self, meta: dict) -> bytes:
        ts = typestore()
        msg = ts.types[METADATA_TYPE](data=json.dumps(meta, default=_json_default, sort_keys=True))
        return bytes(ts.serialize_cdr(msg, METADATA_TYPE))

    def _start_meta_locked(self, timestamp_ns: int) -> None:
        if self._start_ns is None:
            self._start_ns = int(timestamp_ns)
        self.metadata.setdefault("start_time_ns", self._start_ns)
        self._writer.write(self._meta_conn, self._start_ns,
                           self._metadata_cdr(dict(self.metadata, complete=False)))
        self._wrote_start_meta = True

    def write(self, topic: str, timestamp_ns: int, cdr_bytes) -> bool:
        """Append one serialized message; timestamp_ns = receive (log) time in ROS time."""
        conn = self._conns.get(topic)
        if conn is None:
            raise KeyError(f"topic {topic!r} was not declared for episode {self.name!r} "
                           f"(declared: {sorted(self._conns)})")
        timestamp_ns = int(timestamp_ns)
        with self._lock:
            if self._state != "open":
                self.dropped += 1
                return False
            if not self._wrote_start_meta:
                self._start_meta_locked(timestamp_ns)
            self._writer.write(conn, timestamp_ns, cdr_bytes)
            self.counts[topic] += 1
            self._last_ns = timestamp_ns if self._last_ns is None else max(self._last_ns,
                                                                            timestamp_ns)
        return True

    def update_metadata(self, **fields) -> None:
        """Add/replace metadata fields (e.g. success, notes) before close."""
        with self._lock:
            self.metadata.update(fields)

    def close(self, success: bool | None = None, notes: str | None = None,
              end_time_ns: int | None = None, **fields) -> Path:
        """Finish the episode: final metadata, metadata.yaml, fsync, rename out of .partial.
        Returns the final bag directory."""
        with self._lock:
            if self._state != "open":
                raise RuntimeError(f"episode {self.name!r} is already {self._state}")
            try:
                if success is not None:
                    self.metadata["success"] = bool(success)
                if notes is not None:
                    self.metadata["notes"] = str(notes)
                self.metadata.update(fields)
                now = time.time_ns()
                if not self._wrote_start_meta:         # an episode without data messages
                    self._start_meta_locked(end_time_ns if end_time_ns is not None else now)
                if end_time_ns is None:
                    end_time_ns = self._last_ns if self._last_ns is not None else self._start_ns
                end_time_ns = int(end_time_ns)
                self.metadata["end_time_ns"] = end_time_ns
                self.metadata["duration_s"] = (end_time_ns - self._start_ns) / 1e9
                self.metadata["message_counts"] = dict(self.counts)
                self.metadata["complete"] = True
                # Stamp the final metadata no later than the last data message so it does not
                # stretch the bag's duration, but never before the start one.
                stamp = max(self._start_ns, min(end_time_ns, self._last_ns or end_time_ns))
                self._writer.write(self._meta_conn, stamp, self._metadata_cdr(self.metadata))
                self._writer.set_custom_data(
                    CUSTOM_DATA_KEY, json.dumps(self.metadata, default=_json_default,
                                                sort_keys=True))
                self._writer.close()
                for f in self._bag_path.iterdir():
                    _fsync(f)
                self._bag_path.rename(self.final_path)
                self.partial_path.rmdir()
                _fsync(self.root)                    # make the rename itself durable
            except BaseException:
                self._state = "failed"
                self._writer.abort()
                raise
            self._state = "closed"
        return self.final_path

    def discard(self) -> None:
        """Drop the episode: close the file and delete the .partial directory."""
        with self._lock:
            if self._state == "closed":
                raise RuntimeError(f"episode {self.name!r} was closed; delete {self.final_path} "
                                   "by hand if it should go")
            if self._state == "open":
                self._writer.abort()
            self._state = "discarded"
            shutil.rmtree(self.partial_path, ignore_errors=True)

    # --- context manager: a clean exit closes; an exception leaves the .partial directory ---
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            if not self.closed:
                self.close()
        elif not self.closed:
            with self._lock:
                self._state = "failed"
                self._writer.abort()
        return False
