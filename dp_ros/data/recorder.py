"""Episode recording without ROS: which messages go into the bag, and proof that none were lost.

`EpisodeRecorder` owns the episode's bag writer, its metadata and the success latch;
`DeliveryCounter` counts, per topic and per publisher, what was published against what was
written. Counting uses the middleware's publication sequence numbers (each DDS writer numbers
its samples 1, 2, 3, ...; rclpy hands them to a subscription callback that takes the message
info): a message whose sequence number lies between two received ones but never arrived was
lost on the way (reader queue overflow, best-effort drop). The counter runs between episodes
too, so a message published during the episode and lost is counted even when it would have
been the episode's first.

What it cannot see: a publisher that never published (its own timer stalled). For that the
header stamps of stamped messages are read straight from the CDR bytes and the largest gap
between consecutive stamps is reported beside the counts.

This module does not import rclpy.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from dp_ros.data.bag_writer import EpisodeBagWriter

# CDR encapsulation ids (first two bytes) of little- and big-endian plain CDR.
_CDR_LE = (b"\x00\x01", b"\x00\x03")


def header_stamp_ns(cdr: bytes | memoryview) -> int | None:
    """Header stamp of a serialized message that starts with std_msgs/Header, else None.

    The stamp (int32 sec, uint32 nanosec) follows the 4-byte encapsulation header."""
    if len(cdr) < 12:
        return None
    fmt = "<iI" if bytes(cdr[0:2]) in _CDR_LE else ">iI"
    sec, nsec = struct.unpack_from(fmt, cdr, 4)
    return sec * 1_000_000_000 + nsec


@dataclass
class _TopicCount:
    written: int = 0
    lost: int = 0
    max_stamp_gap_ns: int = 0
    max_delay_ns: int = 0               # receive time - publish time (middleware's own stamps)
    last_stamp_ns: int | None = None
    publishers: set = field(default_factory=set)

    def as_dict(self) -> dict:
        published = self.written + self.lost
        return {"published": published, "written": self.written, "lost": self.lost,
                "written_fraction": round(self.written / published, 6) if published else None,
                "max_stamp_gap_s": round(self.max_stamp_gap_ns * 1e-9, 4),
                "max_delay_s": round(self.max_delay_ns * 1e-9, 4),
                "publishers": len(self.publishers)}


class DeliveryCounter:
    """Per topic: messages published (from sequence numbers), written, lost; stamp gaps."""

    def __init__(self, stamped_topics=()):
        self._stamped = set(stamped_topics)
        self._last_seq: dict[tuple[str, bytes], tuple[int, int | None]] = {}   # -> (seq, sent_ns)
        self._episode: dict[str, _TopicCount] | None = None
        self._start_ns: int | None = None

    def start(self, topics, start_ns: int | None = None):
        """Begin counting an episode: only what is published from start_ns on (the publishers'
        clock, i.e. ROS system time) counts as lost when missing."""
        self._episode = {t: _TopicCount() for t in topics}
        self._start_ns = None if start_ns is None else int(start_ns)

    def stop(self) -> dict:
        report = {t: c.as_dict() for t, c in (self._episode or {}).items()}
        self._episode = None
        return report

    @property
    def current(self) -> dict:
        return {t: c.as_dict() for t, c in (self._episode or {}).items()}

    def on_message(self, topic: str, data, seq: int | None = None, publisher: bytes = b"",
                   sent_ns: int | None = None, received_ns: int | None = None):
        """Account for one received message (whether or not it is written)."""
        key = (topic, publisher)
        prev, prev_sent = self._last_seq.get(key, (None, None))
        gap = 0
        if seq is not None:
            if prev is not None and seq > prev:
                gap = seq - prev - 1
                if gap and self._start_ns is not None and prev_sent is not None and sent_ns is not None \
                        and prev_sent < self._start_ns:
                    # The gap straddles the episode's start: only the part published after it is
                    # the episode's loss (a publisher's messages are evenly spaced in between).
                    span = max(int(sent_ns) - prev_sent, 1)
                    gap = int(gap * max(int(sent_ns) - self._start_ns, 0) / span)
            # seq <= prev: the publisher restarted with the same id; start counting afresh
            self._last_seq[key] = (seq, None if sent_ns is None else int(sent_ns))
        count = None if self._episode is None else self._episode.get(topic)
        if count is None:
            return
        count.written += 1
        count.publishers.add(publisher)
        if prev is not None:        # the first message of a publisher seen mid-episode: no gap known
            count.lost += gap
        if sent_ns is not None and received_ns is not None:
            count.max_delay_ns = max(count.max_delay_ns, int(received_ns) - int(sent_ns))
        if topic in self._stamped:
            stamp = header_stamp_ns(data)
            if stamp is not None:
                if count.last_stamp_ns is not None:
                    count.max_stamp_gap_ns = max(count.max_stamp_gap_ns, stamp - count.last_stamp_ns)
                count.last_stamp_ns = stamp


def cell_metadata(p: dict) -> dict:
    """The cell's set-up that the images and poses of an episode depend on, for its metadata: the
    tool (TCP offset, when the servo applies it, else the pendant's), the payload (negative mass:
    the pendant's) and the cameras' fixed exposure and white balance (0 = automatic). p: the
    recording node's parameters, borrowed from the servo's and the camera node's sections."""
    return {"tool": {"apply_tcp_offset": bool(p["apply_tcp_offset"]), "tcp_offset": [float(v) for v in p["tcp_offset"]],
                     "payload_kg": float(p["payload_kg"]), "payload_cog": [float(v) for v in p["payload_cog"]]},
            "camera_settings": {"exposure_us": float(p["exposure_us"]), "white_balance_k": float(p["white_balance_k"])}}


class EpisodeRecorder:
    """One episode at a time: start() opens a bag, write() appends serialized messages,
    stop() / discard() end it. Delivery counts land in the episode's metadata.

    topics: {topic: ROS type name}. stamped_topics: those whose messages start with a Header.
    Not thread-safe by design: the recorder node calls it from one executor thread."""

    def __init__(self, root_dir, topics: dict[str, str], stamped_topics=(), base_metadata=None):
        self.root = Path(root_dir)
        self.topics = dict(topics)
        self.base_metadata = dict(base_metadata or {})
        self.delivery = DeliveryCounter(stamped_topics)
        self.writer: EpisodeBagWriter | None = None
        self.success = False
        self.episodes_saved = 0
        self.last_delivery: dict = {}

    @property
    def recording(self) -> bool:
        return self.writer is not None

    def next_name(self) -> str:
        used = []
        for p in self.root.glob("episode_*"):
            stem = p.name.split(".")[0][len("episode_"):]
            if stem.isdigit():
                used.append(int(stem))
        return f"episode_{max(used, default=-1) + 1:04d}"

    def start(self, now_ns: int, **metadata) -> tuple[bool, str]:
        if self.writer is not None:
            return False, f"already recording {self.writer.name}"
        self.root.mkdir(parents=True, exist_ok=True)
        name = self.next_name()
        meta = dict(self.base_metadata, **metadata, start_time_ns=int(now_ns))
        self.writer = EpisodeBagWriter(self.root, name, self.topics, meta)
        self.success = False
        self.delivery.start(self.topics, now_ns)
        return True, f"recording {self.root / name}"

    def on_message(self, topic: str, log_ns: int, data, seq=None, publisher=b"", sent_ns=None,
                   received_ns=None):
        self.delivery.on_message(topic, data, seq, publisher, sent_ns, received_ns)
        if self.writer is not None:
            self.writer.write(topic, log_ns, data)

    def latch_success(self):
        """Called when the task reports success during the episode (Push-T coverage may dip
        afterwards: the episode still succeeded)."""
        if self.writer is not None:
            self.success = True

    def stop(self, success: bool | None = None, **fields) -> tuple[bool, dict | str]:
        if self.writer is None:
            return False, "not recording"
        writer, self.writer = self.writer, None
        self.last_delivery = self.delivery.stop()
        lost = sum(d["lost"] for d in self.last_delivery.values())
        path = writer.close(success=success, delivery=self.last_delivery, lost_messages=lost, **fields)
        self.episodes_saved += 1
        return True, {"path": str(path), "success": success, "counts": writer.counts,
                      "lost_messages": lost}

    def discard(self) -> tuple[bool, str]:
        if self.writer is None:
            return False, "not recording"
        writer, self.writer = self.writer, None
        self.delivery.stop()
        writer.discard()
        return True, f"discarded {writer.name}"
