"""`dp-ros deploy` with bad input fails fast with a message that says what is wrong."""

import subprocess
import sys

from dp_ros.policy.untrained import make_untrained_checkpoint


def run_deploy(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "dp_ros.cli", "deploy", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_corrupted_checkpoint_stops_the_graph_with_the_reason(tmp_path):
    ckpt = make_untrained_checkpoint(tmp_path / "ckpt", tiny=True)
    (ckpt / "model.safetensors").write_bytes(b"not a safetensors file")
    result = run_deploy("--checkpoint", str(ckpt), "--episodes", "1", "--log-dir", str(tmp_path / "logs"))
    assert result.returncode == 1
    assert "policy_node exited" in result.stderr
    assert "model.safetensors" in result.stderr          # the node's own error, from its log


def test_missing_checkpoint_and_bad_config_are_named(tmp_path):
    result = run_deploy("--checkpoint", str(tmp_path / "nope"), timeout=60)
    assert result.returncode == 2 and "config.json" in result.stderr and "Traceback" not in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("camera_node:\n  backend: sim\n")          # no ros__parameters
    ckpt = make_untrained_checkpoint(tmp_path / "ckpt", tiny=True)
    result = run_deploy("--checkpoint", str(ckpt), "--config", str(bad), timeout=60)
    assert result.returncode == 2 and "ros__parameters" in result.stderr and "Traceback" not in result.stderr
