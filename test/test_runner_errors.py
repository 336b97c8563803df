"""`dp-ros deploy` with bad input fails fast with a message that says what is wrong; interrupted, it
stops every node it started."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


def processes_mentioning(text: str) -> list[str]:
    """Command lines of the live processes whose arguments contain `text` (zombies excluded)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(cmdline)
    return found


def test_ctrl_c_mid_episode_stops_every_node_and_keeps_the_summary(tmp_path):
    """Ctrl-C during an episode, and again while the nodes are being stopped: the runner exits,
    no node outlives it, and the episodes already run are in the summary. (rclpy's own SIGINT
    handler once shut the runner's monitor down instead: it waited forever, its six nodes with it.
    And a runner started in the background of a script inherits SIGINT ignored.)"""
    logs = tmp_path / "logs"
    node_params = str(logs / "overrides.yaml")     # in every node's command line, not the runner's
    runner = subprocess.Popen([sys.executable, "-m", "dp_ros.cli", "deploy", "--episodes", "100", "--no-video",
                               "--no-progress", "--log-dir", str(logs)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    lines = []
    try:
        deadline = time.monotonic() + 240
        for line in runner.stdout:          # until the first episode is done: the second one runs
            lines.append(line)
            if "episode 0:" in line or time.monotonic() > deadline:
                break
        assert any("episode 0:" in ln for ln in lines), "".join(lines)
        assert len(processes_mentioning(node_params)) == 6
        time.sleep(0.5)
        runner.send_signal(signal.SIGINT)
        time.sleep(0.3)
        runner.send_signal(signal.SIGINT)                          # impatient: again, while stopping
        out, _ = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
            for cmd in processes_mentioning(node_params):
                print("left running:", cmd)
            subprocess.run(["pkill", "-KILL", "-f", node_params])
    out = "".join(lines) + out
    assert runner.returncode == 0, out
    assert "interrupted: stopping nodes" in out
    assert processes_mentioning(node_params) == [], out
    summary = json.loads((logs / "summary.json").read_text())
    assert len(summary["episodes"]) >= 1 and "Traceback" not in out


def test_request_to_chunk_latency_is_timed_by_publication_not_by_arrival():
    """The runner pairs a request with the next chunk by the middleware's source timestamps: a
    runner that gets both late and back to back (behind the graph's priorities) still reads the
    policy's latency, not the gap between its own two callbacks."""
    from dp_ros.runtime.monitor import GraphMonitor
    monitor = GraphMonitor.__new__(GraphMonitor)          # the timing logic only: no ROS node
    monitor.latencies_s, monitor._request_t, monitor.trace = [], None, None
    monitor._on_request(None, {"source_timestamp": 5_000_000_000})
    time.sleep(0.01)
    monitor._on_chunk(None, {"source_timestamp": 5_045_000_000})
    assert monitor.latencies_s == [pytest.approx(0.045)]
    monitor._on_request(None, {"source_timestamp": 6_000_000_000})
    monitor._on_chunk(None, {"source_timestamp": 5_990_000_000})   # published before it: an older request's
    monitor._on_chunk(None, {"source_timestamp": 6_050_000_000})   # no request open: not paired
    assert monitor.latencies_s == [pytest.approx(0.045)]
