"""The shipped model drives the simulated arm through the full deploy graph (what `make deploy`
runs), every servo command stays inside the whole envelope, and the evaluation summary carries
the figures the model card quotes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor

from dp_ros.graph import default_config, load_params
from dp_ros.runtime import domain
from dp_ros.runtime.spin import SpinThread
from servo_commands import ServoCommandLog, check_envelope

ROOT = Path(__file__).resolve().parents[1]


def eval_through_graph(tmp_path, model: str, episodes: int, *extra: str):
    """`dp-ros eval` of a shipped model through the deploy graph -> (its summary, the servo's commands)."""
    # the runner claims ROS_DOMAIN_ID itself: pick a free one for it, and listen on it here
    claim = domain.claim({})
    domain_id = claim.domain_id
    claim.release()
    context = rclpy.Context()
    rclpy.init(args=[], context=context, domain_id=domain_id)
    node = rclpy.create_node("shipped_model_test", context=context)
    commands = ServoCommandLog(node)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spin = SpinThread(executor)
    out = tmp_path / "summary.json"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "dp_ros.cli", "eval", "--checkpoint", str(ROOT / "models" / model),
             "--episodes", str(episodes), "--out", str(out), "--log-dir", str(tmp_path / "logs"), *extra],
            capture_output=True, text=True, timeout=420, env=dict(os.environ, ROS_DOMAIN_ID=str(domain_id)))
    finally:
        if spin.stop():
            node.destroy_node()
        rclpy.shutdown(context=context)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    cmds = list(commands)
    assert len(cmds) > 200, "the test did not see the graph's servo commands"
    check_envelope(cmds, load_params(default_config())["ur5_servo_node"])
    return json.loads(out.read_text()), cmds


def test_shipped_reach_model_solves_held_out_episodes(tmp_path):
    summary, _ = eval_through_graph(tmp_path, "reach_image_policy", 2)
    assert summary["task"] == "reach" and len(summary["episodes"]) == 2
    assert [e["seed"] for e in summary["episodes"]] == [100001, 100002]   # held out from training
    # 41/50 real-time on the model card, its misses on harder seeds (these two succeed in every
    # recorded run, real-time and lockstep): two misses here would mean a regression.
    assert summary["success_rate"] >= 0.5, summary
    for e in summary["episodes"]:
        assert e["max_coverage"] >= e["final_coverage"] >= 0.0
        assert e["chunks"] >= 1 and e["inference_latency_ms"]["median"] > 0
        assert e["tcp_path_m"] > 0.02 and len(e["final_state"]["tcp_xy_m"]) == 2
    assert summary["mean_max_coverage"] >= summary["mean_final_coverage"]
