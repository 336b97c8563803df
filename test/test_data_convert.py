"""`dp-ros convert` on real bags: grid, values, appends, and every way a bag gets refused."""

import json

import cv2
import numpy as np
import pytest

from dp_ros.cli import main as cli_main
from dp_ros.core.transforms import quat_to_rotvec
from dp_ros.data.convert import main as convert_main
from dp_ros.data.replay_buffer import ReplayBuffer
from test_data_common import (CAM_TOPIC, OBJECT_TOPIC, object_at, JOINT_TOPIC, T0, TARGET_TOPIC, TCP_TOPIC, frame,
                              joints_at, record_episode, target_at, tcp_at)

XY = ["--cameras", "top", "--image-size", "24", "32", "--frequency", "10",
      "--obs", "robot_pose=tcp_xy", "--action-space", "xy"]


def run(capsys, *argv):
    rc = convert_main([str(a) for a in argv])
    out = capsys.readouterr().out
    return rc, json.loads(out)


def expected_grid(truth, topics, dt_ns):
    t0 = max(truth[t]["stamp"][0] for t in topics)
    t1 = min(truth[t]["stamp"][-1] for t in topics)
    return t0 + dt_ns * np.arange((t1 - t0) // dt_ns + 1)


def check_episode(buf, i, truth, hw=(24, 32)):
    """Converted episode i against the ground truth of what was recorded."""
    grid = expected_grid(truth, [CAM_TOPIC, TCP_TOPIC, TARGET_TOPIC], 100_000_000)
    ep = buf.get_episode(i)
    n = len(grid)
    assert ep["top"].shape == (n, *hw, 3) and ep["top"].dtype == np.uint8
    assert ep["robot_pose"].shape == (n, 2) and ep["robot_pose"].dtype == np.float32
    assert ep["action"].shape == (n, 2) and ep["action"].dtype == np.float32
    assert ep["timestamp"].dtype == np.float64
    np.testing.assert_allclose(ep["timestamp"], grid / 1e9, rtol=0, atol=1e-6)
    # robot state: linear motion, so interpolation is exact (up to float32 storage)
    np.testing.assert_allclose(ep["robot_pose"], tcp_at(grid)[:, :2], rtol=0, atol=1e-6)
    cam_st, cam_idx = truth[CAM_TOPIC]["stamp"], truth[CAM_TOPIC]["index"]
    tgt_st = truth[TARGET_TOPIC]["stamp"]
    for k, t in enumerate(grid):
        # action = the last target stamped at or before step + dt/2: the one nearest the step
        # (brute force, not searchsorted)
        j = max(m for m in range(len(tgt_st)) if tgt_st[m] <= t + 50_000_000)
        np.testing.assert_allclose(ep["action"][k], target_at(j)[:2], rtol=0, atol=1e-7)
        # image = the frame captured nearest the step, resized with INTER_AREA
        f = cam_idx[int(np.argmin(np.abs(cam_st - t)))]
        want = cv2.resize(frame(f), (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(ep["top"][k], want)
    return n


def test_convert_values_append_and_rerun(tmp_path, capsys):
    bags = tmp_path / "bags"
    truths = {}
    for i, dur in enumerate((3.0, 4.2)):
        _, truths[i] = record_episode(bags, f"ep_{i:04d}", duration_s=dur, seed=i,
                                      start_ns=T0 + i * 100 * 10**9)
    out = tmp_path / "data.zarr"
    rc, summary = run(capsys, bags, "--out", out, *XY)
    assert rc == 0, summary
    assert [c["name"] for c in summary["converted"]] == ["ep_0000", "ep_0001"]
    assert summary["skipped"] == [] and summary["total_episodes"] == 2
    buf = ReplayBuffer.open(out)
    assert buf.n_episodes == 2 and buf.keys == ["action", "robot_pose", "timestamp", "top"]
    lengths = []
    for i, dur in enumerate((3.0, 4.2)):
        n = check_episode(buf, i, truths[i])
        assert abs(n - dur / 0.1) <= 2            # about duration / dt
        lengths.append(n)
    np.testing.assert_array_equal(buf.episode_ends, np.cumsum(lengths))
    assert summary["total_steps"] == sum(lengths)
    assert buf.config["dt"] == pytest.approx(0.1) and buf.config["image_size"] == [24, 32]
    assert buf.attrs["source_image_size"] == {"top": [48, 64]}
    assert buf.episodes[0]["metadata"]["task"] == "reach"
    before = buf.get_episode(0)

    # second batch (given as bag dirs, through the dp-ros entry point): one new, one known
    _, truths[2] = record_episode(bags, "ep_0002", duration_s=2.5, seed=7,
                                  start_ns=T0 + 300 * 10**9)
    rc = cli_main(["convert", str(bags / "ep_0001"), str(bags / "ep_0002"), "--out", str(out)])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert [c["name"] for c in summary["converted"]] == ["ep_0002"]
    assert summary["already_present"] == ["ep_0001"]
    buf = ReplayBuffer.open(out)
    assert buf.n_episodes == 3 and len(buf.episode_ends) == 3
    assert buf.episode_ends[1] == sum(lengths)
    check_episode(buf, 2, truths[2])                # the store's config was reused
    for k, v in buf.get_episode(0).items():
        np.testing.assert_array_equal(v, before[k])

    # re-running on everything adds nothing and is not an error
    rc, summary = run(capsys, bags, "--out", out)
    assert rc == 0 and summary["converted"] == [] and len(summary["already_present"]) == 3
    assert ReplayBuffer.open(out).n_episodes == 3


def test_mismatched_config_is_refused(tmp_path, capsys):
    bags = tmp_path / "bags"
    record_episode(bags, "ep_0000", duration_s=1.5)
    out = tmp_path / "data.zarr"
    assert run(capsys, bags, "--out", out, *XY)[0] == 0
    record_episode(bags, "ep_0001", duration_s=1.5, seed=3, start_ns=T0 + 10**11)
    for extra in (["--action-space", "xyz"], ["--image-size", "48", "48"],
                  ["--frequency", "20"], ["--obs", "robot_pose=tcp_xyz"]):
        rc = convert_main([str(bags), "--out", str(out), *extra])
        captured = capsys.readouterr()
        assert rc == 2, extra
        assert "config mismatch" in captured.err and "requested" in captured.err
    assert ReplayBuffer.open(out).n_episodes == 1


def test_bad_bags_are_reported_by_name_and_skipped(tmp_path, capsys):
    bags = tmp_path / "bags"
    record_episode(bags, "good", duration_s=2.0)
    record_episode(bags, "no_action", duration_s=2.0, skip_topics=(TARGET_TOPIC,))
    record_episode(bags, "short", duration_s=0.5)
    # 400 ms without frames in the middle: steps there have no frame within dt
    record_episode(bags, "frame_gap", duration_s=2.0, drop={CAM_TOPIC: range(20, 32)})
    w, _ = record_episode(bags, "killed", duration_s=1.0, close=False)   # still .partial
    (bags / "notes").mkdir()                        # not a bag: ignored inside a folder
    (bags / "not_a_bag").mkdir()                    # storage file without metadata.yaml
    (bags / "not_a_bag" / "not_a_bag.mcap").write_bytes(b"\x89MCAP0\r\n")
    out = tmp_path / "data.zarr"
    rc, summary = run(capsys, bags, "--out", out, *XY)
    assert rc == 0
    assert [c["name"] for c in summary["converted"]] == ["good"]
    reasons = {s["name"]: s["reason"] for s in summary["skipped"]}
    assert set(reasons) == {"no_action", "short", "frame_gap", "killed.partial", "not_a_bag"}
    assert "missing required topics ['/servo/target_pose']" in reasons["no_action"]
    assert "too short" in reasons["short"]
    assert "camera 'top'" in reasons["frame_gap"] and "inside the episode" in reasons["frame_gap"]
    assert "incomplete" in reasons["killed.partial"]
    assert "no metadata.yaml" in reasons["not_a_bag"]
    w.discard()

    # another camera resolution than the store's, and a name already used by another recording
    other = tmp_path / "other"
    record_episode(other, "hires", duration_s=2.0, hw=(60, 80))
    record_episode(other, "good", duration_s=2.0, seed=5, start_ns=T0 + 10**11)
    rc, summary = run(capsys, other, "--out", out)
    assert rc == 1                                  # nothing converted
    reasons = {s["name"]: s["reason"] for s in summary["skipped"]}
    assert "60x80" in reasons["hires"] and "48x64" in reasons["hires"]
    assert "another recording named 'good'" in reasons["good"]
    assert ReplayBuffer.open(out).n_episodes == 1

    # nothing usable at all -> non-zero exit, still a JSON summary
    rc, summary = run(capsys, bags / "short", "--out", tmp_path / "empty.zarr", *XY)
    assert rc == 1 and summary["converted"] == [] and summary["skipped"][0]["name"] == "short"


def test_state_gap_at_start_is_trimmed(tmp_path, capsys):
    # TCP samples 1..40 missing (125 Hz, 328 ms): the first steps have no state within
    # max_state_gap (default 2*dt = 200 ms)
    _, truth = record_episode(tmp_path / "bags", "ep", duration_s=2.0,
                              drop={TCP_TOPIC: range(1, 41)})
    rc, summary = run(capsys, tmp_path / "bags", "--out", tmp_path / "d.zarr", *XY)
    assert rc == 0
    conv = summary["converted"][0]
    tcp_st = truth[TCP_TOPIC]["stamp"]
    grid = expected_grid(truth, [CAM_TOPIC, TCP_TOPIC, TARGET_TOPIC], 100_000_000)
    first_ok = next(k for k, t in enumerate(grid)
                    if (lambda h: tcp_st[h] - tcp_st[h - 1])(np.searchsorted(tcp_st, t, "right"))
                    <= 200_000_000)
    assert conv["trimmed_start"] == first_ok >= 3 and conv["trimmed_end"] == 0
    ep = ReplayBuffer.open(tmp_path / "d.zarr").get_episode(0)
    np.testing.assert_allclose(ep["timestamp"], grid[first_ok:] / 1e9, atol=1e-6)
    np.testing.assert_allclose(ep["robot_pose"], tcp_at(grid[first_ok:])[:, :2], atol=1e-6)


def test_full_pose_joints_and_rotvec_actions(tmp_path, capsys):
    _, truth = record_episode(tmp_path / "bags", "ep", duration_s=2.0)
    out = tmp_path / "d.zarr"
    rc, summary = run(capsys, tmp_path / "bags", "--out", out, "--frequency", "20",
                      "--cameras", f"front={CAM_TOPIC}", "--image-size", "48", "64",
                      "--obs", "pose=tcp_pose", "q=joints", "--action-space", "xyz_rotvec")
    assert rc == 0, summary
    buf = ReplayBuffer.open(out)
    ep = buf.get_episode(0)
    grid = expected_grid(truth, [CAM_TOPIC, TCP_TOPIC, JOINT_TOPIC, TARGET_TOPIC], 50_000_000)
    assert len(ep["action"]) == len(grid) and ep["front"].shape == (len(grid), 48, 64, 3)
    want = tcp_at(grid)
    np.testing.assert_allclose(ep["pose"][:, :3], want[:, :3], atol=1e-6)
    sign = np.sign(np.sum(ep["pose"][:, 3:] * want[:, 3:], axis=1))
    assert np.all(sign == sign[0])                  # one quaternion hemisphere per episode
    np.testing.assert_allclose(ep["pose"][:, 3:] * sign[:, None], want[:, 3:], atol=2e-6)
    np.testing.assert_allclose(ep["q"], joints_at(grid), atol=2e-6)
    tgt = truth[TARGET_TOPIC]["stamp"]
    j = np.searchsorted(tgt, grid + 25_000_000, side="right") - 1     # nearest within dt/2
    targets = np.stack([target_at(k) for k in j])
    np.testing.assert_allclose(ep["action"][:, :3], targets[:, :3], atol=1e-6)
    np.testing.assert_allclose(ep["action"][:, 3:], quat_to_rotvec(targets[:, 3:]), atol=1e-6)
    # frames at the source size are stored as recorded (no resize)
    cam_st, idx = truth[CAM_TOPIC]["stamp"], truth[CAM_TOPIC]["index"]
    np.testing.assert_array_equal(ep["front"][3], frame(idx[np.argmin(np.abs(cam_st - grid[3]))]))


def test_config_file(tmp_path, capsys):
    record_episode(tmp_path / "bags", "ep", duration_s=1.5)
    cfg = tmp_path / "convert.yaml"
    cfg.write_text("convert:\n  cameras: [top]\n  image_size: [16, 16]\n  dt: 0.2\n"
                   "  obs: {robot_pose: tcp_xyz}\n  action_space: xyz\n  min_steps: 4\n")
    rc, summary = run(capsys, tmp_path / "bags", "--out", tmp_path / "d.zarr", "--config", cfg)
    assert rc == 0, summary
    buf = ReplayBuffer.open(tmp_path / "d.zarr")
    assert buf.config["frequency"] == pytest.approx(5.0) and buf["top"].shape[1:] == (16, 16, 3)
    assert buf["robot_pose"].shape[1:] == (3,) and buf["action"].shape[1:] == (3,)
    cfg.write_text("cameras: [top]\nbogus: 1\n")
    assert convert_main([str(tmp_path / "bags"), "--out", str(tmp_path / "e.zarr"),
                         "--config", str(cfg)]) == 2
    assert "unknown keys ['bogus']" in capsys.readouterr().err


def test_unset_orientation_is_fine_for_positions_but_not_for_tcp_pose(tmp_path, capsys):
    """A TCP publisher that leaves the quaternion at zero: tcp_xy converts, tcp_pose is refused
    by name (never a crash of the whole batch, never NaNs in the store)."""
    from rclpy.serialization import serialize_message

    from dp_ros.data.bag_writer import EpisodeBagWriter
    from dp_ros.nodes.msgs import image_to_msg, pose_to_msg
    from test_data_common import TOPICS

    w = EpisodeBagWriter(tmp_path / "bags", "noquat",
                         {t: TOPICS[t] for t in (CAM_TOPIC, TCP_TOPIC, TARGET_TOPIC)}, {})
    for k in range(30):
        t = T0 + k * 50_000_000
        w.write(CAM_TOPIC, t, serialize_message(image_to_msg(frame(k), t, "top")))
        pose = np.array([0.4 + 0.01 * k, 0.1, 0.2, 0.0, 0.0, 0.0, 0.0])
        w.write(TCP_TOPIC, t, serialize_message(pose_to_msg(pose, t)))
        w.write(TARGET_TOPIC, t, serialize_message(pose_to_msg(target_at(k), t)))
    w.close()
    rc, summary = run(capsys, tmp_path / "bags", "--out", tmp_path / "xy.zarr", *XY)
    assert rc == 0 and summary["converted"][0]["steps"] == 15
    ep = ReplayBuffer.open(tmp_path / "xy.zarr").get_episode(0)
    np.testing.assert_allclose(ep["robot_pose"][:, 0], 0.4 + 0.01 * 2 * np.arange(15), atol=1e-6)
    rc, summary = run(capsys, tmp_path / "bags", "--out", tmp_path / "pose.zarr",
                      "--obs", "robot_pose=tcp_pose", "--image-size", "24", "32")
    assert rc == 1 and "malformed data" in summary["skipped"][0]["reason"]
    assert "quaternion" in summary["skipped"][0]["reason"]


def test_wrong_message_type_is_refused(tmp_path, capsys):
    from geometry_msgs.msg import Twist
    from rclpy.serialization import serialize_message

    from dp_ros.data.bag_writer import EpisodeBagWriter
    from dp_ros.nodes.msgs import image_to_msg, pose_to_msg

    w = EpisodeBagWriter(tmp_path / "bags", "twist_action", {
        CAM_TOPIC: "sensor_msgs/msg/Image", TCP_TOPIC: "geometry_msgs/msg/PoseStamped",
        TARGET_TOPIC: "geometry_msgs/msg/Twist"}, {})
    for k in range(30):
        t = T0 + k * 50_000_000
        w.write(CAM_TOPIC, t, serialize_message(image_to_msg(frame(k), t, "top")))
        w.write(TCP_TOPIC, t, serialize_message(pose_to_msg(tcp_at(t), t)))
        w.write(TARGET_TOPIC, t, serialize_message(Twist()))
    w.close()
    rc, summary = run(capsys, tmp_path / "bags", "--out", tmp_path / "d.zarr", *XY)
    assert rc == 1
    assert summary["skipped"][0]["reason"] == \
        "/servo/target_pose is geometry_msgs/msg/Twist, expected geometry_msgs/msg/PoseStamped"


def test_short_state_stall_is_interpolated_and_a_dropout_rejects(tmp_path, capsys):
    # 17 TCP samples missing at 125 Hz = a 144 ms publisher stall (what a Python timer on a
    # loaded machine produces): interpolated across. 50 missing = 408 ms: a dropout.
    _, truth = record_episode(tmp_path / "stall", "stall", duration_s=2.0,
                              drop={TCP_TOPIC: range(100, 117)})
    record_episode(tmp_path / "dropout", "dropout", duration_s=2.0,
                   drop={TCP_TOPIC: range(100, 150)})
    rc, summary = run(capsys, tmp_path / "stall", "--out", tmp_path / "a.zarr", *XY)
    assert rc == 0 and summary["converted"][0]["trimmed_start"] == 0
    ep = ReplayBuffer.open(tmp_path / "a.zarr").get_episode(0)
    grid = expected_grid(truth, [CAM_TOPIC, TCP_TOPIC, TARGET_TOPIC], 100_000_000)
    np.testing.assert_allclose(ep["robot_pose"], tcp_at(grid)[:, :2], atol=1e-3)
    rc, summary = run(capsys, tmp_path / "dropout", "--out", tmp_path / "b.zarr", *XY)
    assert rc == 1 and "robot pose: no samples within max_state_gap" in \
        summary["skipped"][0]["reason"]
    # the old, stricter limit is still one flag away
    rc, summary = run(capsys, tmp_path / "stall", "--out", tmp_path / "c.zarr", *XY,
                      "--max-state-gap", "0.1")
    assert rc == 1 and "lack data" in summary["skipped"][0]["reason"]


def test_jittered_teleop_ticks_keep_their_labels(tmp_path, capsys):
    """The teleop tick and the grid share dt: target k belongs to step k even when the timer fires
    up to 40 % of a step early or late (labelling "at or before the step" shifted about half of
    them by one step)."""
    _, truth = record_episode(tmp_path / "bags", "ep", duration_s=4.0, target_hz=10.0, seed=3,
                              target_jitter_ms=40.0)
    rc, summary = run(capsys, tmp_path / "bags", "--out", tmp_path / "d.zarr", *XY)
    assert rc == 0, summary
    ep = ReplayBuffer.open(tmp_path / "d.zarr").get_episode(0)
    grid = expected_grid(truth, [CAM_TOPIC, TCP_TOPIC, TARGET_TOPIC], 100_000_000)
    nominal = np.round((grid - T0) / 1e8).astype(int)        # the tick each step was meant for
    want = np.stack([target_at(k)[:2] for k in nominal])
    np.testing.assert_allclose(ep["action"], want, rtol=0, atol=1e-7)


def test_messages_received_out_of_stamp_order_are_resampled_by_stamp(tmp_path, capsys):
    """Receive latency up to 60 ms reorders the 30 Hz frames and the 125 Hz state against their
    stamps; the converter sorts by header stamp, so the result equals the in-order recording."""
    _, truth = record_episode(tmp_path / "a", "ep", duration_s=3.0, seed=5, latency_ms=(1.0, 60.0))
    for topic in (CAM_TOPIC, TCP_TOPIC):
        order = truth["log_order"][topic]["stamp"]
        assert np.any(np.diff(order) < 0), f"{topic}: the fixture did not reorder anything"
    record_episode(tmp_path / "b", "ep", duration_s=3.0, seed=5, latency_ms=(1.0, 1.0))
    for name in ("a", "b"):
        rc, summary = run(capsys, tmp_path / name, "--out", tmp_path / f"{name}.zarr", *XY)
        assert rc == 0, summary
    a = ReplayBuffer.open(tmp_path / "a.zarr").get_episode(0)
    b = ReplayBuffer.open(tmp_path / "b.zarr").get_episode(0)
    assert a.keys() == b.keys()
    assert len(a["action"]) > 20
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def cell_target(k, z=0.2, tilt=0.1):
    """A real cell's teleop target: table at z, tool down tilted `tilt` rad about y; the
    quaternion's sign alternates (q and -q, as a robot driver may report) and every 25th sample's
    orientation is wild (a glitch the mean must ignore)."""
    from dp_ros.core.transforms import quat_mul
    tilt_q = np.array([0.0, np.sin(tilt / 2), 0.0, np.cos(tilt / 2)])
    q = quat_mul(tilt_q, np.array([1.0, 0.0, 0.0, 0.0])) * (-1) ** k
    if k % 25 == 0:
        q = np.array([0.0, 0.0, np.sin(0.8), np.cos(0.8)])
    return np.r_[0.5 + 0.001 * k, 0.02 * np.sin(0.3 * k), z + 0.002 * np.sin(k), q]


def test_planar_fixed_pose_is_derived_from_the_recorded_targets(tmp_path, capsys):
    from dp_ros.core.robot_features import DEFAULT_FIXED_POSE
    from dp_ros.core.transforms import quat_angle
    bags = tmp_path / "bags"
    for i in range(2):
        record_episode(bags, f"ep_{i:04d}", duration_s=1.5, seed=i, start_ns=T0 + i * 10**11, target_fn=cell_target)
    out = tmp_path / "data.zarr"
    rc, summary = run(capsys, bags, "--out", out, *XY)
    assert rc == 0, summary
    pose = summary["fixed_pose"]["pose"]
    assert summary["fixed_pose"]["source"].startswith("derived from") and TARGET_TOPIC in summary["fixed_pose"]["source"]
    assert pose[2] == pytest.approx(0.2, abs=0.002) and pose[2] != DEFAULT_FIXED_POSE[2]
    assert quat_angle(pose[3:], cell_target(1)[3:]) < np.radians(0.1)      # the tilt, glitches ignored
    buf = ReplayBuffer.open(out)
    assert buf.config["fixed_pose"] == pose and buf.attrs["fixed_pose_source"] == summary["fixed_pose"]["source"]

    # appending keeps the store's pose (it is part of what the data means), whatever the new targets
    record_episode(bags, "ep_0002", duration_s=1.5, seed=2, start_ns=T0 + 3 * 10**11,
                   target_fn=lambda k: cell_target(k, z=0.3))
    rc, summary2 = run(capsys, bags, "--out", out, *XY)
    assert rc == 0 and [c["name"] for c in summary2["converted"]] == ["ep_0002"]
    assert summary2["fixed_pose"] == summary["fixed_pose"]

    # given on the command line: used as given, and said so
    given = [0.4, 0.0, 0.15, 1.0, 0.0, 0.0, 0.0]
    rc, summary3 = run(capsys, bags, "--out", tmp_path / "given.zarr", *XY, "--fixed-pose", *given)
    assert rc == 0 and summary3["fixed_pose"] == {"pose": given, "source": "given (--fixed-pose)"}


def test_state_only_store_with_a_tracked_object(tmp_path, capsys):
    """No camera: the TCP and a tracked object's pose (x, y, cos yaw, sin yaw: no wrap at +-pi)."""
    _, truth = record_episode(tmp_path / "bags", "ep", duration_s=2.5, object_hz=30.0)
    out = tmp_path / "d.zarr"
    rc, summary = run(capsys, tmp_path / "bags", "--out", out, "--cameras",
                      "--obs", "robot_pose=tcp_xy", "block=object:T")
    assert rc == 0, summary
    ep = ReplayBuffer.open(out).get_episode(0)
    assert "top" not in ep and ep["block"].shape[1] == 4
    grid = expected_grid(truth, [TCP_TOPIC, OBJECT_TOPIC, TARGET_TOPIC], 100_000_000)
    assert len(ep["block"]) == len(grid)
    want = object_at(grid)
    yaw = 2 * np.arctan2(want[:, 5], want[:, 6])
    np.testing.assert_allclose(ep["block"][:, :2], want[:, :2], atol=1e-6)
    np.testing.assert_allclose(ep["block"][:, 2], np.cos(yaw), atol=1e-4)
    np.testing.assert_allclose(ep["block"][:, 3], np.sin(yaw), atol=1e-4)
    assert np.abs(np.diff(ep["block"][:, 2:], axis=0)).max() < 0.1      # continuous through +-pi
    np.testing.assert_allclose(ep["robot_pose"], tcp_at(grid)[:, :2], atol=1e-6)


def test_a_missing_object_topic_is_named(tmp_path, capsys):
    record_episode(tmp_path / "bags", "ep", duration_s=1.5)
    rc, summary = run(capsys, tmp_path / "bags", "--out", tmp_path / "d.zarr", "--cameras",
                      "--obs", "block=object:T")
    assert rc == 1 and OBJECT_TOPIC in json.dumps(summary)
    rc, summary = run(capsys, tmp_path / "bags", "--out", tmp_path / "e.zarr", "--obs", "block=object:")
    assert rc == 2
