"""EpisodeBagWriter / read_episode on real MCAP bags, cross-checked with the mcap library."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rclpy.serialization import serialize_message
from std_msgs.msg import String

from dp_ros.data.bag_reader import BadBag, find_bags, read_episode
from dp_ros.data.bag_writer import METADATA_TOPIC, EpisodeBagWriter
from dp_ros.data.convert import main as convert_main
from test_data_common import (CAM_TOPIC, JOINT_TOPIC, T0, TARGET_TOPIC, TCP_TOPIC, frame,
                              record_episode)

REPO = Path(__file__).resolve().parents[1]


def mcap_messages(bag_dir):
    """All messages via the mcap library: {topic: [(log_time, decoded)]}."""
    files = sorted(Path(bag_dir).glob("*.mcap"))
    assert len(files) == 1, files
    out = {}
    with open(files[0], "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for _schema, channel, message, decoded in reader.iter_decoded_messages():
            out.setdefault(channel.topic, []).append((message.log_time, decoded))
    return out


def stamp(msg):
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def test_episode_roundtrip_two_readers(tmp_path):
    bag, truth = record_episode(tmp_path, "ep_0000", duration_s=2.0)
    assert bag == tmp_path / "ep_0000"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ep_0000"]      # no .partial left
    assert (bag / "metadata.yaml").is_file() and (bag / "ep_0000.mcap").is_file()

    # reader 1: rosbags AnyReader (through read_episode)
    ep = read_episode(bag, required=[CAM_TOPIC, TCP_TOPIC])
    lo = truth["log_order"]
    cam = ep[CAM_TOPIC]
    assert cam.data.shape == (len(truth[CAM_TOPIC]["stamp"]), 48, 64, 3)
    assert cam.data.dtype == np.uint8
    np.testing.assert_array_equal(cam.stamp_ns, lo[CAM_TOPIC]["stamp"])
    np.testing.assert_array_equal(cam.log_ns, truth["log"][CAM_TOPIC])
    for k in (0, 17, len(cam.data) - 1):
        np.testing.assert_array_equal(cam.data[k], frame(lo[CAM_TOPIC]["value"][k]))
    tcp = ep[TCP_TOPIC]
    assert tcp.data.shape == (len(truth[TCP_TOPIC]["stamp"]), 7)
    np.testing.assert_array_equal(tcp.stamp_ns, lo[TCP_TOPIC]["stamp"])
    np.testing.assert_array_equal(tcp.data, lo[TCP_TOPIC]["value"])
    js = ep[JOINT_TOPIC]
    assert js.data.shape == (len(truth[JOINT_TOPIC]["stamp"]), 6)
    assert js.names == [f"joint{i}" for i in range(6)]
    np.testing.assert_array_equal(js.data, lo[JOINT_TOPIC]["value"])
    np.testing.assert_array_equal(ep[TARGET_TOPIC].data, lo[TARGET_TOPIC]["value"])
    assert not np.all(np.diff(tcp.stamp_ns) > 0)     # latency jitter reordered some samples
    assert METADATA_TOPIC not in ep
    md = ep.metadata
    assert md["task"] == "reach" and md["success"] is True and md["notes"] == "clean run"
    assert md["complete"] is True and md["config"] == {"cam_hz": 30.0}
    assert md["message_counts"] == truth["count"]
    assert md["start_time_ns"] == min(truth["log"][t][0] for t in truth["count"])
    assert md["end_time_ns"] == max(truth["log"][t][-1] for t in truth["count"])

    # reader 2: the mcap library with its own ROS 2 decoder
    msgs = mcap_messages(bag)
    for topic, n in truth["count"].items():
        assert len(msgs[topic]) == n, topic
        assert [t for t, _ in msgs[topic]] == list(truth["log"][topic])
    imgs = msgs[CAM_TOPIC]
    assert imgs[5][1].encoding == "rgb8" and (imgs[5][1].height, imgs[5][1].width) == (48, 64)
    for k in (0, 5, len(imgs) - 1):
        np.testing.assert_array_equal(np.frombuffer(imgs[k][1].data, np.uint8).reshape(48, 64, 3),
                                      frame(lo[CAM_TOPIC]["value"][k]))
    assert [stamp(m) for _, m in imgs] == list(lo[CAM_TOPIC]["stamp"])
    poses = [[m.pose.position.x, m.pose.position.y, m.pose.position.z, m.pose.orientation.x,
              m.pose.orientation.y, m.pose.orientation.z, m.pose.orientation.w]
             for _, m in msgs[TCP_TOPIC]]
    np.testing.assert_array_equal(poses, lo[TCP_TOPIC]["value"])
    np.testing.assert_array_equal([list(m.position) for _, m in msgs[JOINT_TOPIC]],
                                  lo[JOINT_TOPIC]["value"])
    meta_msgs = [json.loads(m.data) for _, m in msgs[METADATA_TOPIC]]
    assert len(meta_msgs) == 2                       # at start (incomplete) and at close
    assert meta_msgs[0]["complete"] is False and meta_msgs[0]["task"] == "reach"
    assert meta_msgs[-1] == md

    # custom_data in metadata.yaml, as ros2 bag info shows it
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert json.loads(info["custom_data"]["dp_ros.episode"]) == md
    assert info["storage_identifier"] == "mcap"
    assert info["relative_file_paths"] == ["ep_0000.mcap"]


def test_threaded_writes_are_all_kept(tmp_path):
    """Several executor threads writing at once: every message lands, the bag stays valid."""
    w = EpisodeBagWriter(tmp_path, "ep", {"/a": "std_msgs/msg/String",
                                          "/b": "std_msgs/msg/String",
                                          "/c": "std_msgs/msg/String"}, {"task": "t"})
    n = 400

    def worker(topic):
        for i in range(n):
            w.write(topic, T0 + i * 1000, serialize_message(String(data=f"{topic}:{i}")))

    threads = [threading.Thread(target=worker, args=(t,)) for t in ("/a", "/b", "/c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bag = w.close()
    assert not w.write("/a", T0, serialize_message(String(data="late")))   # dropped, not raised
    assert w.dropped == 1
    msgs = mcap_messages(bag)
    for topic in ("/a", "/b", "/c"):
        assert sorted(int(m.data.split(":")[1]) for _, m in msgs[topic]) == list(range(n))
    ep = read_episode(bag)
    assert len(ep["/b"]) == n and sorted(ep["/b"].data) == sorted(f"/b:{i}" for i in range(n))


def test_writer_refuses_bad_use(tmp_path):
    with pytest.raises(ValueError, match="unknown message types"):
        EpisodeBagWriter(tmp_path, "ep", {"/x": "sensor_msgs/Image"}, {})
    with pytest.raises(ValueError, match="plain file name"):
        EpisodeBagWriter(tmp_path, "a/b", {}, {})
    w = EpisodeBagWriter(tmp_path, "ep", {"/x": "std_msgs/msg/String"}, {})
    with pytest.raises(KeyError, match="not declared"):
        w.write("/y", T0, b"")
    with pytest.raises(FileExistsError, match="partial"):
        EpisodeBagWriter(tmp_path, "ep", {"/x": "std_msgs/msg/String"}, {})
    w.discard()
    assert list(tmp_path.iterdir()) == []
    record_episode(tmp_path, "ep", duration_s=0.2)
    with pytest.raises(FileExistsError):
        EpisodeBagWriter(tmp_path, "ep", {"/x": "std_msgs/msg/String"}, {})


def test_exception_in_context_leaves_partial(tmp_path):
    with pytest.raises(RuntimeError):
        with EpisodeBagWriter(tmp_path, "ep", {"/x": "std_msgs/msg/String"}, {}) as w:
            w.write("/x", T0, serialize_message(String(data="a")))
            raise RuntimeError("recorder crashed")
    assert [p.name for p in tmp_path.iterdir()] == ["ep.partial"]
    with pytest.raises(BadBag, match="incomplete"):
        read_episode(tmp_path / "ep.partial")


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    from rclpy.serialization import serialize_message
    from dp_ros.data.bag_writer import EpisodeBagWriter
    from dp_ros.nodes.msgs import image_to_msg, pose_to_msg
    w = EpisodeBagWriter(sys.argv[1], "ep_0001", {
        "/camera/top/image_raw": "sensor_msgs/msg/Image",
        "/robot/tcp_pose": "geometry_msgs/msg/PoseStamped",
        "/servo/target_pose": "geometry_msgs/msg/PoseStamped"}, {"task": "reach"})
    t = 1_700_000_100_000_000_000
    img = np.zeros((48, 64, 3), np.uint8)
    i = 0
    while True:
        w.write("/camera/top/image_raw", t, serialize_message(image_to_msg(img, t, "top")))
        pose = serialize_message(pose_to_msg(np.array([0.5, 0, 0.1, 1, 0, 0, 0.0]), t))
        w.write("/robot/tcp_pose", t, pose)
        w.write("/servo/target_pose", t, pose)
        i += 1
        if i == 200:
            print("recording", flush=True)
        t += 33_000_000
        time.sleep(0.001)
""")


def test_sigkill_mid_episode_leaves_earlier_episodes_intact(tmp_path, capsys):
    first, truth = record_episode(tmp_path, "ep_0000", duration_s=1.5)
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "recording", proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ep_0000", "ep_0001.partial"]
    partial = tmp_path / "ep_0001.partial"
    assert (partial / "ep_0001" / "ep_0001.mcap").stat().st_size > 0     # data was on disk
    assert not (partial / "ep_0001" / "metadata.yaml").exists()
    with pytest.raises(BadBag, match=r"ep_0001\.partial.*incomplete"):
        read_episode(partial)
    # the earlier episode is untouched and readable by both readers
    ep = read_episode(first)
    assert len(ep[CAM_TOPIC]) == truth["count"][CAM_TOPIC]
    assert {t: len(v) for t, v in mcap_messages(first).items() if t != METADATA_TOPIC} \
        == truth["count"]
    assert find_bags([tmp_path]) == [first, partial]
    # convert takes the complete one and names the interrupted one
    rc = convert_main([str(tmp_path), "--out", str(tmp_path / "kill.zarr"),
                       "--image-size", "24", "32"])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0 and [c["name"] for c in summary["converted"]] == ["ep_0000"]
    assert [s["name"] for s in summary["skipped"]] == ["ep_0001.partial"]
    assert "incomplete" in summary["skipped"][0]["reason"]


def test_reader_reports_bad_bags(tmp_path):
    with pytest.raises(BadBag, match="does not exist"):
        read_episode(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadBag, match="no metadata.yaml"):
        read_episode(tmp_path / "empty")
    bag, _ = record_episode(tmp_path, "ep", duration_s=0.5, skip_topics=(TARGET_TOPIC,))
    with pytest.raises(BadBag, match=r"missing required topics \['/servo/target_pose'\]") as e:
        read_episode(bag, required=[CAM_TOPIC, TARGET_TOPIC])
    assert e.value.path == bag and "target_pose" in e.value.reason
    # a truncated storage file (disk full, copied while recording, ...)
    mcap = bag / "ep.mcap"
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    with pytest.raises(BadBag, match="unreadable"):
        read_episode(bag)
