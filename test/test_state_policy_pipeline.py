"""A state-based Push-T policy end to end, with the T's pose as an observation: expert episodes
recorded in sim time (`dp-ros record --lockstep`), converted with `block=object:T`, a few
training steps of config/train/pusht_state.yaml, then the deploy graph, where the policy node
plans from /object/T/pose (published by the sim world) and the robot state - no camera."""

import json
import subprocess
import sys
from pathlib import Path

from dp_ros.data.bag_reader import bag_info, episode_metadata_from_info, find_bags

ROOT = Path(__file__).resolve().parents[1]


def run(*args, timeout=600):
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def test_record_convert_train_and_deploy_a_policy_that_observes_the_block(tmp_path):
    bags, store, run_dir = tmp_path / "bags", tmp_path / "pusht_state.zarr", tmp_path / "run"
    run("dp_ros.cli", "record", "--lockstep", "--task", "pusht", "--cameras", "", "--episodes", "2",
        "--episode-timeout", "4", "--out", str(bags), "--no-progress")
    for bag in find_bags([bags]):      # a state-only dataset: no camera was rendered or recorded
        meta = episode_metadata_from_info(bag_info(bag))
        topics = [t["topic_metadata"]["name"] for t in bag_info(bag)["topics_with_message_count"]]
        assert meta["camera_names"] == [] and not [t for t in topics if t.startswith("/camera")], topics
        assert "/object/T/pose" in topics
    converted = json.loads(run("dp_ros.cli", "convert", str(bags), "--out", str(store), "--cameras",
                               "--obs", "robot_pose=tcp_xy", "block=object:T", "--no-progress"))
    assert len(converted["converted"]) == 2
    run("dp_ros.train.cli", "--config", str(ROOT / "config/train/pusht_state.yaml"), "--out", str(run_dir),
        "--no-progress", f"data.path={store}", "data.val_ratio=0.5", "training.max_steps=20",
        "training.batch_size=16", "training.warmup_steps=2", "training.eval_every=20", "training.checkpoint_every=20",
        "training.rollout_every=0", "training.num_threads=1", "checkpoint.best_metric=action_mse")
    checkpoint = run_dir / "checkpoints" / "last"
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["extra"]["robot"]["obs_sources"] == {"robot_pose": "tcp_xy", "block": "object:T"}
    assert config["policy_config"]["cameras"] == {} and config["policy_config"]["lowdim_obs"]["block"] == 4

    out = tmp_path / "eval.json"
    run("dp_ros.cli", "eval", "--checkpoint", str(checkpoint), "--episodes", "1", "--episode-timeout", "5",
        "--no-video", "--no-progress", "--out", str(out), "--log-dir", str(tmp_path / "logs"))
    summary = json.loads(out.read_text())
    assert summary["task"] == "pusht"
    # chunks came: the policy node built its observations from the T's pose topic (a missing or
    # stale object pose refuses every chunk)
    assert summary["episodes"][0]["chunks"] >= 3, summary
