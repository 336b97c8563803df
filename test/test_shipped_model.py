"""The shipped model drives the simulated arm through the full deploy graph (what `make deploy`
runs), and the evaluation summary carries the figures the model card quotes."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_reach_model_solves_held_out_episodes(tmp_path):
    out = tmp_path / "summary.json"
    result = subprocess.run(
        [sys.executable, "-m", "dp_ros.cli", "eval", "--checkpoint",
         str(ROOT / "models" / "reach_image_policy"), "--episodes", "2",
         "--out", str(out), "--log-dir", str(tmp_path / "logs")],
        capture_output=True, text=True, timeout=420)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert summary["task"] == "reach" and len(summary["episodes"]) == 2
    assert [e["seed"] for e in summary["episodes"]] == [100001, 100002]   # held out from training
    # 49/50 on the model card: two misses in two held-out episodes would mean a regression.
    assert summary["success_rate"] >= 0.5, summary
    for e in summary["episodes"]:
        assert e["max_coverage"] >= e["final_coverage"] >= 0.0
        assert e["chunks"] >= 1 and e["inference_latency_ms"]["median"] > 0
        assert e["tcp_path_m"] > 0.02 and len(e["final_state"]["tcp_xy_m"]) == 2
    assert summary["mean_max_coverage"] >= summary["mean_final_coverage"]
