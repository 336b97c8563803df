"""`dp-ros deploy`: the deploy graph without launch_ros (ROS 2 from pip wheels).

Starts the same nodes with the same parameters as launch/deploy.launch.py (both read
dp_ros.graph), one process each. In simulation it runs N episodes - reset the world, enable the
servo and the scheduler, wait for success or the episode timeout - and prints a summary (also
written as JSON). On hardware it runs until Ctrl-C. Nodes stop cleanly either way.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from dp_ros.graph import default_checkpoint, default_config, deploy_graph, read_checkpoint_config
from dp_ros.monitor import GraphMonitor, NodeDied, check_alive, wait_until
from dp_ros.processes import NodeProcesses, stop_on_signals


def run_episode(monitor: GraphMonitor, procs: NodeProcesses, index: int, settle_s=0.5):
    monitor.call("scheduler", False)
    monitor.call("servo", False)
    reset = json.loads(monitor.call("reset").message)
    wait_until(lambda: monitor.task.get("episode") == reset["episode"], 5.0, procs, "the world reset")
    time.sleep(settle_s)   # the observation buffer refills with post-reset frames and state
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


def latency_summary(lat_ms):
    lat_ms = np.asarray(lat_ms, dtype=float)
    if not lat_ms.size:
        return None
    return {"median": round(float(np.median(lat_ms)), 1), "p90": round(float(np.percentile(lat_ms, 90)), 1),
            "max": round(float(lat_ms.max()), 1)}


def scheduler_counter(monitor, word):
    _, values = monitor.diagnostics.get("action_scheduler_node", ("", {}))
    return sum(int(float(v)) for k, v in values.items() if word in k and v.replace(".", "", 1).isdigit())


def main(argv=None):
    ap = argparse.ArgumentParser(prog="dp-ros deploy", description=__doc__.split("\n")[0])
    ap.add_argument("--hardware", action="store_true", help="real UR5 + RealSense backends (default: sim)")
    ap.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the shipped model)")
    ap.add_argument("--config", default=None, help="ROS 2 parameter file (default: config/deploy.yaml)")
    ap.add_argument("--episodes", type=int, default=3, help="sim episodes to run")
    ap.add_argument("--log-dir", default=None, help="node logs and summary (default: runs/deploy-<time>)")
    ap.add_argument("--summary-json", default=None, help="where to write the summary (default: in log dir)")
    ap.add_argument("--seed", type=int, default=None, help="sim: episode k uses seed + k + 1 (default: config)")
    ap.add_argument("--episode-timeout", type=float, default=None, help="sim episode limit in s (default: config)")
    ap.add_argument("--ready-timeout", type=float, default=180.0, help="seconds to wait for the policy")
    args = ap.parse_args(argv)

    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    if not args.checkpoint and not (checkpoint / "config.json").is_file():
        # No trained model shipped yet: run the graph anyway, with random weights, and say so.
        from dp_ros.untrained import make_untrained_checkpoint
        checkpoint = Path("runs/untrained_checkpoint")
        if not (checkpoint / "config.json").is_file():
            make_untrained_checkpoint(checkpoint)
        print(f"[dp-ros deploy] NOTE: no trained model in {default_checkpoint()}; using an UNTRAINED "
              f"checkpoint ({checkpoint}). Expect the arm to move without solving the task.", flush=True)
    config = Path(args.config) if args.config else default_config()
    try:
        specs = deploy_graph(sim=not args.hardware, checkpoint=checkpoint, config_file=config, seed=args.seed)
    except (OSError, ValueError, KeyError) as exc:
        print(f"[dp-ros deploy] ERROR: {exc}", file=sys.stderr)
        return 2
    if args.episode_timeout and not args.hardware:
        next(s for s in specs if s.name == "sim_world_node").overrides["episode_timeout_s"] = args.episode_timeout
    ckpt = read_checkpoint_config(checkpoint)
    note = ckpt.get("extra", {}).get("note")
    if note:
        print(f"[dp-ros deploy] model note: {note}", flush=True)
    log_dir = Path(args.log_dir or f"runs/deploy-{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"[dp-ros deploy] {'hardware' if args.hardware else 'simulation'}: "
          f"{', '.join(s.name for s in specs)}; logs in {log_dir}", flush=True)

    stop_on_signals()
    procs = NodeProcesses(specs, config, log_dir)
    monitor = None
    summary = {"checkpoint": str(checkpoint), "mode": "hardware" if args.hardware else "sim", "episodes": []}
    code = 0
    try:
        procs.start()
        monitor = GraphMonitor()
        wait_until(lambda: "policy_node" in monitor.diagnostics, args.ready_timeout, procs, "the policy to be ready")
        print("[dp-ros deploy] policy ready", flush=True)
        if args.hardware:
            while True:
                check_alive(procs)
                time.sleep(0.2)
        for i in range(args.episodes):
            ep = run_episode(monitor, procs, i)
            summary["episodes"].append(ep)
            print(f"[dp-ros deploy] episode {i}: success={ep['success']} coverage={ep['final_coverage']:.2f} "
                  f"t={ep['duration_s']:.1f}s latency={ep['inference_latency_ms']} "
                  f"dropped={ep['dropped_waypoints']}", flush=True)
    except KeyboardInterrupt:
        print("[dp-ros deploy] interrupted: stopping nodes", flush=True)
    except (NodeDied, TimeoutError) as exc:
        print(f"[dp-ros deploy] ERROR: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        if monitor is not None:
            try:
                monitor.call("scheduler", False, timeout_s=1.0)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        procs.stop()
        if monitor is not None:
            monitor.close()
    eps = summary["episodes"]
    if eps:
        summary.update(
            task=ckpt.get("extra", {}).get("task"),
            success_rate=round(sum(e["success"] for e in eps) / len(eps), 3),
            mean_final_coverage=round(float(np.mean([e["final_coverage"] for e in eps])), 4),
            # The Diffusion Policy paper's Push-T score: each episode's best coverage, averaged.
            mean_max_coverage=round(float(np.mean([e["max_coverage"] for e in eps])), 4),
            inference_latency_ms=latency_summary(monitor.latencies_s and np.asarray(monitor.latencies_s) * 1e3),
            dropped_waypoints=int(sum(e["dropped_waypoints"] for e in eps)),
        )
    out = Path(args.summary_json or log_dir / "summary.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "episodes"}, indent=2))
    print(f"[dp-ros deploy] summary written to {out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
