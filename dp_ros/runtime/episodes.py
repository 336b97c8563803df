"""One episode through a running graph, driven by its services: a policy rollout (`dp-ros deploy`,
`dp-ros eval`, `dp-ros bench pipeline`) or a recorded teleop demonstration (`dp-ros record`), and
the figures their summaries report."""

import json
import time

import numpy as np

from dp_ros.runtime.monitor import GraphMonitor, check_alive, wait_until
from dp_ros.runtime.processes import NodeProcesses
from dp_ros.sim.world import episode_scores


def run_episode(monitor: GraphMonitor, procs: NodeProcesses, index: int, settle_s=0.5):
    monitor.call("scheduler", False)
    monitor.call("servo", False)
    reset = json.loads(monitor.call("reset").message)
    wait_until(lambda: monitor.task.get("episode") == reset["episode"], 5.0, procs, "the world reset")
    time.sleep(settle_s)   # the observation buffer refills with post-reset frames and state
    trace = getattr(monitor, "trace", None)
    if trace is not None:
        trace.start()   # the video starts with the still arm, before the first chunk
    monitor.call("servo", True)
    n_lat = len(monitor.latencies_s)
    dropped0 = scheduler_counter(monitor, "dropped")
    monitor.call("scheduler", True)
    t0 = time.monotonic()
    coverages, tcp_path = [], []
    while True:
        check_alive(procs)
        task = dict(monitor.task)
        if task.get("episode") == reset["episode"]:
            coverages.append(float(task.get("coverage", 0.0)))
            if "tcp_xy_m" in task:
                tcp_path.append(task["tcp_xy_m"])
            if task.get("done"):
                break
        time.sleep(0.05)
    monitor.call("scheduler", False)
    if trace is not None:
        trace.stop()
    lat = np.asarray(monitor.latencies_s[n_lat:]) * 1e3
    return {
        "episode": index, "seed": reset["seed"], "success": bool(task.get("success", False)),
        "final_coverage": round(coverages[-1] if coverages else 0.0, 4),
        "max_coverage": round(max(coverages) if coverages else 0.0, 4),
        "duration_s": round(time.monotonic() - t0, 2), "chunks": int(lat.size),
        "inference_latency_ms": latency_summary(lat),
        "dropped_waypoints": scheduler_counter(monitor, "dropped") - dropped0,
        # What the arm did, to tell "never moved" from "moved but missed" without a video.
        "tcp_path_m": round(float(np.linalg.norm(np.diff(np.asarray(tcp_path), axis=0), axis=1).sum())
                            if len(tcp_path) > 1 else 0.0, 3),
        "final_state": {k: task[k] for k in ("tcp_xy_m", "block_xy_m", "block_pose", "goal_pose",
                                             "target_xy_m") if k in task},
    }


def record_episode(monitor: GraphMonitor, procs: NodeProcesses, settle_s=0.5, tail_s=0.5):
    monitor.call("servo", False)
    reset = json.loads(monitor.call("reset").message)
    wait_until(lambda: monitor.task.get("episode") == reset["episode"], 5.0, procs, "the world reset")
    time.sleep(settle_s)                 # measured pose of the teleported arm reaches teleop
    monitor.call("teleop_resync")
    monitor.call("servo", True)
    started = monitor.call("record_start")
    if not started.success:
        raise RuntimeError(f"could not start recording: {started.message}")
    while True:
        check_alive(procs)
        task = dict(monitor.task)
        if task.get("episode") == reset["episode"] and task.get("done"):
            break
        time.sleep(0.05)
    time.sleep(tail_s)   # keep a little of the final hold, and let the recorder see the last state
    stopped = monitor.call("record_stop")
    if not stopped.success:
        raise RuntimeError(f"could not stop recording: {stopped.message}")
    info = json.loads(stopped.message)
    return {"seed": reset["seed"], "success": bool(task.get("success")), "path": info["path"],
            "duration_s": task.get("elapsed_s"), "final_coverage": task.get("coverage")}


def latency_summary(lat_ms):
    lat_ms = np.asarray(lat_ms, dtype=float)
    if not lat_ms.size:
        return None
    return {"median": round(float(np.median(lat_ms)), 1), "p90": round(float(np.percentile(lat_ms, 90)), 1),
            "max": round(float(lat_ms.max()), 1)}


def scheduler_counter(monitor, word):
    _, values = monitor.diagnostics.get("action_scheduler_node", ("", {}))
    return sum(int(float(v)) for k, v in values.items() if word in k and v.replace(".", "", 1).isdigit())


def rollout_summary(episodes: list[dict], latencies_s: list[float]) -> dict:
    """What a run of run_episode() scores: success rate, coverage, latency over all chunks, drops."""
    return dict(episode_scores(episodes),
                inference_latency_ms=latency_summary(latencies_s and np.asarray(latencies_s) * 1e3))
