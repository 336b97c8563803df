"""EpisodeRecorder / DeliveryCounter without ROS: sequence-number accounting of lost messages,
publisher restarts, stamp gaps read from CDR bytes, and the episode lifecycle on disk."""

import numpy as np
from rclpy.serialization import serialize_message

from dp_ros.data.bag_reader import read_episode
from dp_ros.data.recorder import DeliveryCounter, EpisodeRecorder, cell_metadata, header_stamp_ns
from dp_ros.nodes.msgs import pose_to_msg

POSE = "geometry_msgs/msg/PoseStamped"
HOME = np.array([0.5, 0.0, 0.1, 1.0, 0.0, 0.0, 0.0])


def cdr(stamp_ns):
    return serialize_message(pose_to_msg(HOME, stamp_ns))


def test_header_stamp_is_read_from_the_serialized_bytes():
    assert header_stamp_ns(cdr(1_234_567_890_123)) == 1_234_567_890_123
    assert header_stamp_ns(b"\x00\x01\x00\x00") is None


def test_gaps_in_sequence_numbers_are_lost_messages():
    c = DeliveryCounter(stamped_topics=["/a"])
    c.on_message("/a", cdr(0), seq=1, publisher=b"p")        # before the episode: baseline only
    c.start(["/a", "/b"])
    for seq in (2, 3, 6, 7):                                   # 4 and 5 never arrived
        c.on_message("/a", cdr(seq * 10_000_000), seq=seq, publisher=b"p")
    report = c.stop()
    assert report["/a"]["written"] == 4 and report["/a"]["lost"] == 2 and report["/a"]["published"] == 6
    assert abs(report["/a"]["max_stamp_gap_s"] - 0.03) < 1e-9
    assert report["/b"] == {**report["/b"], "published": 0, "written": 0, "lost": 0}


def test_first_message_lost_after_start_is_counted_and_restarts_are_not_loss():
    c = DeliveryCounter()
    c.on_message("/a", b"", seq=10, publisher=b"p")
    c.start(["/a"])
    c.on_message("/a", b"", seq=12, publisher=b"p")            # 11 was the episode's first: lost
    c.on_message("/a", b"", seq=1, publisher=b"p")             # the publisher restarted (same id)
    c.on_message("/a", b"", seq=2, publisher=b"p")
    c.on_message("/a", b"", seq=5, publisher=b"q")             # a new publisher mid-episode
    c.on_message("/a", b"", seq=6, publisher=b"q")
    r = c.stop()["/a"]
    assert r["lost"] == 1 and r["written"] == 5 and r["publishers"] == 2


def test_episode_lifecycle_and_delivery_in_metadata(tmp_path):
    rec = EpisodeRecorder(tmp_path, {"/pose": POSE}, stamped_topics=["/pose"], base_metadata={"task": "t"})
    rec.on_message("/pose", 1, cdr(1), seq=1, publisher=b"p")       # not recording: counted, not written
    assert rec.start(100, seed=7)[0] and not rec.start(101)[0]
    for k in range(2, 12):
        if k != 5:
            rec.on_message("/pose", 100 + k, cdr(100 + k), seq=k, publisher=b"p")
    rec.latch_success()
    ok, info = rec.stop(success=rec.success)
    assert ok and info["lost_messages"] == 1 and info["success"] is True
    ep = read_episode(info["path"])
    assert ep.metadata["delivery"]["/pose"]["lost"] == 1 and ep.metadata["seed"] == 7
    assert ep.metadata["task"] == "t" and len(ep["/pose"].log_ns) == 9
    assert rec.stop() == (False, "not recording")
    assert rec.start(200)[0] and rec.next_name() == "episode_0002"
    assert rec.discard()[0] and rec.next_name() == "episode_0001"
    assert not rec.success


def test_the_cells_tool_payload_and_camera_settings_are_in_each_episodes_metadata(tmp_path):
    p = {"apply_tcp_offset": True, "tcp_offset": [0.0, 0.0, 0.13, 0.0, 0.0, 0.0], "payload_kg": 0.8,
         "payload_cog": [0.0, 0.0, 0.05], "exposure_us": 8000.0, "white_balance_k": 4200.0, "deadzone": 0.1}
    rec = EpisodeRecorder(tmp_path, {"/pose": POSE}, base_metadata=cell_metadata(p))
    for k in range(2):
        rec.start(100 + 10 * k)
        rec.on_message("/pose", 101 + 10 * k, cdr(101 + 10 * k), seq=k + 1, publisher=b"p")
        ok, info = rec.stop()
        meta = read_episode(info["path"]).metadata
        assert meta["tool"] == {"apply_tcp_offset": True, "tcp_offset": [0.0, 0.0, 0.13, 0.0, 0.0, 0.0],
                                "payload_kg": 0.8, "payload_cog": [0.0, 0.0, 0.05]}
        assert meta["camera_settings"] == {"exposure_us": 8000.0, "white_balance_k": 4200.0}


def test_a_gap_before_the_episode_starts_is_not_the_episodes_loss():
    """A recorder busy closing the previous episode may drop messages published before the next
    one starts; only the share of a gap published after the start counts."""
    c = DeliveryCounter()
    c.on_message("/a", b"", seq=1, publisher=b"p", sent_ns=0)
    c.start(["/a"], start_ns=1_000)
    c.on_message("/a", b"", seq=11, publisher=b"p", sent_ns=1_000)   # 2..10 published before the start
    c.on_message("/a", b"", seq=22, publisher=b"p", sent_ns=2_100)   # 12..21 lost inside the episode
    c.on_message("/a", b"", seq=32, publisher=b"p", sent_ns=3_200)   # 23..31 lost too
    assert c.stop()["/a"]["lost"] == 19
