"""`dp-ros record --lockstep`: the teleop graph's logic in sim time writes real episode bags that
the converter takes like any other, including a tracked object's pose (Push-T's T)."""

import json
import subprocess
import sys

import numpy as np

from dp_ros import topics
from dp_ros.core.robot_features import object_feature
from dp_ros.data.bag_reader import find_bags, read_episode
from dp_ros.data.replay_buffer import ReplayBuffer
from dp_ros.graph import default_config, node_params, teleop_graph
from dp_ros.sim.world import SimWorld


def record(tmp_path, *args):
    proc = subprocess.run([sys.executable, "-m", "dp_ros.cli", "record", "--lockstep", "--no-progress",
                           "--out", str(tmp_path / "bags"), *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def convert(tmp_path, *args):
    proc = subprocess.run([sys.executable, "-m", "dp_ros.cli", "convert", str(tmp_path / "bags"), "--out",
                           str(tmp_path / "d.zarr"), "--no-progress", *args], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_reach_episodes_record_and_convert(tmp_path):
    summary = record(tmp_path, "--task", "reach", "--episodes", "2", "--seed", "7")
    assert summary["episodes"] == 2 and summary["successes"] == 2
    assert [d["seed"] for d in summary["details"]] == [8, 9]          # seed + k + 1, as the graph's
    bags = find_bags([tmp_path / "bags"])
    ep = read_episode(bags[0])
    assert ep.metadata["lockstep"] and ep.metadata["success"] and ep.metadata["task"] == "reach"
    stamps = ep.topics[topics.ROBOT_TCP_POSE].stamp_ns
    assert 120 < 1e9 / np.median(np.diff(stamps)) < 130                # the robot state node's 125 Hz
    assert len(convert(tmp_path)["converted"]) == 2
    buf = ReplayBuffer.open(tmp_path / "d.zarr")
    assert buf.n_episodes == 2
    first = buf.get_episode(0)
    assert first["top"].shape[1:] == (96, 96, 3) and len(first["action"]) >= 8


def test_pusht_records_the_block_pose_and_converts_it_as_an_observation(tmp_path):
    record(tmp_path, "--task", "pusht", "--episodes", "1", "--episode-timeout", "3")
    ep = read_episode(find_bags([tmp_path / "bags"])[0])
    block = ep.topics[topics.OBJECT_POSE.format(name="T")]
    params = node_params(teleop_graph(True, task="pusht"), default_config())["sim_world_node"]
    period_ns = 1e9 / params["camera_fps"]                              # with each camera frame
    assert abs(np.mean(np.diff(block.stamp_ns)) - period_ns) < 0.05 * period_ns
    # the pose the sim world gives the T of that seed (task units -> base frame, yaw = -theta)
    world = SimWorld.from_params(params)
    world.reset(1)
    np.testing.assert_allclose(block.data[0], world.object_poses()["T"], atol=1e-3)
    feats = np.stack([object_feature(p) for p in block.data])
    assert np.allclose(np.hypot(feats[:, 2], feats[:, 3]), 1.0, atol=1e-5)
    convert(tmp_path, "--cameras", "--obs", "robot_pose=tcp_xy", "block=object:T")
    data = ReplayBuffer.open(tmp_path / "d.zarr").get_episode(0)
    assert set(data) == {"robot_pose", "block", "action", "timestamp"}
    assert data["block"].shape[1] == 4 and np.all(np.abs(data["block"][:, 2:]) <= 1.0 + 1e-6)


SHIPPED_PUSHT = "models/pusht_state_policy"


def test_takeover_records_the_expert_from_where_the_policy_left_the_world(tmp_path):
    """DAgger's data: the shipped policy runs 1.5 s (300 ms of injected inference delay), then the
    expert is recorded from that very state, and the bag says so."""
    summary = record(tmp_path, "--task", "pusht", "--cameras", "", "--episodes", "1", "--seed", "20",
                     "--episode-timeout", "4", "--takeover-from", SHIPPED_PUSHT, "--takeover-after", "1.5:1.5",
                     "--takeover-delay", "0.3")
    lead = summary["details"][0]["takeover"]
    assert lead["policy_s"] == 1.5 and not lead["policy_success"] and lead["delay_s"] == 0.3
    ep = read_episode(find_bags([tmp_path / "bags"])[0])
    assert ep.metadata["takeover"]["checkpoint"] == SHIPPED_PUSHT and ep.metadata["seed"] == 21

    # the same lead-in alone (lockstep is deterministic): the bag starts where it ended
    from dp_ros.sim.lockstep import LockstepEvaluator
    evaluator = LockstepEvaluator(SHIPPED_PUSHT, delay_s=0.3, seed=20)
    evaluator.run_episode(0, stop_after_s=1.5)
    left = evaluator.world
    home = SimWorld.from_params(evaluator.params["sim_world_node"])
    home.reset(21)
    assert np.linalg.norm(left.tcp_pose()[:2] - home.tcp_pose()[:2]) > 0.01     # the policy moved the arm
    np.testing.assert_allclose(ep.topics[topics.ROBOT_TCP_POSE].data[0][:3], left.tcp_pose()[:3], atol=1e-6)
    np.testing.assert_allclose(ep.topics[topics.OBJECT_POSE.format(name="T")].data[0][:3],
                               left.object_poses()["T"][:3], atol=1e-6)
    convert(tmp_path, "--cameras", "--obs", "robot_pose=tcp_xy", "block=object:T")
    assert ReplayBuffer.open(tmp_path / "d.zarr").n_episodes == 1


def test_an_episode_the_policy_already_solved_is_not_recorded(tmp_path):
    from dp_ros.sim.lockstep_record import LockstepRecorder

    recorder = LockstepRecorder(node_params(teleop_graph(True, task="pusht", cameras=[]), default_config()),
                                tmp_path / "bags")
    out = recorder.record(0, lead_in=lambda index: {"policy_success": True, "policy_s": 3.0})
    assert out["skipped"] and out["path"] is None and not out["success"]
    assert not (tmp_path / "bags").exists() or not find_bags([tmp_path / "bags"])


def test_takeover_from_a_checkpoint_of_another_task_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dp_ros.cli", "record", "--lockstep", "--no-progress", "--task",
                           "reach", "--episodes", "1", "--out", str(tmp_path / "bags"),
                           "--takeover-from", SHIPPED_PUSHT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "trained on 'pusht'" in proc.stderr and "'reach'" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "dp_ros.cli", "record", "--no-progress", "--task", "pusht",
                           "--out", str(tmp_path / "bags"), "--takeover-from", SHIPPED_PUSHT],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--takeover-from needs --lockstep" in proc.stderr
