"""`dp-ros bench pipeline [--checkpoint DIR] [--episodes N]`: does the real-time path keep up?

First the checkpoint's own predict_action time, in the inference process the policy node uses
(same threads, same priority) on the idle machine. Then the sim deploy graph runs N episodes and
the same run reports, from the wire:
  - request -> chunk latency (median, p90, max) and its ratio to predict_action's median, beside
    the network's own time per chunk inside the graph (from the policy node's diagnostics): the
    difference between those two is contention, the rest is transport;
  - capture -> first executed waypoint: how old the newest observation is when the first
    waypoint of its chunk reaches the servo;
  - stale fraction: of the Ta waypoints a chunk is meant to execute (indices To-1 ... To+Ta-2,
    the paper's execution window), those already past (within exec_latency) on arrival;
  - the sim world's real-time factor (simulated / wall time).
A measurement: prints JSON, asserts nothing.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from dp_ros.runtime.episodes import latency_summary
from dp_ros.viz.progress import add_progress_flag, echo, progress_bar


def _summary(values, scale=1.0):
    v = np.asarray(values, dtype=float) * scale
    out = latency_summary(v)
    return out and dict(out, n=int(v.size))


def predict_action_ms(checkpoint, repeats: int, progress: bool = True) -> dict:
    from dp_ros.runtime.inference import deployed_inference, dummy_observation
    worker, cfg = deployed_inference(checkpoint)
    info = worker.start()
    try:
        obs = dummy_observation(cfg)
        times = [worker.plan(obs)[2] for _ in progress_bar(range(repeats), enabled=progress,
                                                            desc="predict_action", unit="call")]
    finally:
        worker.close()
    out = _summary(times, 1e3)
    out.update(threads=info["threads"], priority=info["priority"], device=info["device"])
    return out


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dp-ros bench pipeline", description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None, help="default: the shipped model")
    ap.add_argument("--episodes", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=15, help="predict_action calls on the idle machine")
    ap.add_argument("--seed", type=int, default=200_000)
    ap.add_argument("--log-dir", default=None)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    add_progress_flag(ap)
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)

    from trajectory_msgs.msg import MultiDOFJointTrajectory

    from dp_ros import topics
    from dp_ros.graph import default_checkpoint, default_config, deploy_graph, load_params, read_checkpoint_config
    from dp_ros.nodes.msgs import msg_to_trajectory
    from dp_ros.runtime.episodes import run_episode
    from dp_ros.runtime.monitor import GraphMonitor, wait_until
    from dp_ros.runtime.processes import NodeProcesses

    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    pcfg = read_checkpoint_config(checkpoint)["policy_config"]
    To = int(pcfg["obs_horizon"])
    exec_latency_ns = int(load_params(default_config())["action_scheduler_node"]["exec_latency_s"] * 1e9)

    network = predict_action_ms(checkpoint, args.repeats, progress=not args.no_progress)
    print(f"[bench pipeline] predict_action alone: median {network['median']} ms; running the graph",
          file=sys.stderr, flush=True)

    log_dir = Path(args.log_dir or f"runs/bench-pipeline-{time.strftime('%Y%m%d-%H%M%S')}")
    specs = deploy_graph(sim=True, checkpoint=checkpoint, config_file=default_config(), seed=args.seed)
    Ta = next(s for s in specs if s.name == "action_scheduler_node").overrides["action_horizon"]   # as executed
    procs = NodeProcesses(specs, default_config(), log_dir)
    monitor = None
    chunks, streams, rtf = [], [], []
    try:
        procs.start()
        monitor = GraphMonitor()
        node = monitor.node
        node.create_subscription(MultiDOFJointTrajectory, topics.POLICY_CHUNK,
                                 lambda m: chunks.append((node.get_clock().now().nanoseconds, msg_to_trajectory(m)[0])), 10)
        node.create_subscription(MultiDOFJointTrajectory, topics.SERVO_WAYPOINTS,
                                 lambda m: streams.append(msg_to_trajectory(m)[0][:1]), 50)
        wait_until(lambda: "policy_node" in monitor.diagnostics, 180, procs, "the policy to be ready")
        n_lat = len(monitor.latencies_s)
        chunks.clear(), streams.clear()
        episodes = []
        for i in progress_bar(range(args.episodes), enabled=not args.no_progress, desc="episodes", unit="ep"):
            episodes.append(run_episode(monitor, procs, i))
            rtf.append(float(monitor.task.get("real_time_factor", float("nan"))))
            echo(f"[bench pipeline] episode {i}: success={episodes[-1]['success']}", file=sys.stderr)
        latencies = monitor.latencies_s[n_lat:]
        # the policy node's own figure: the network's time per chunk inside the running graph
        in_graph = monitor.diagnostics.get("policy_node", ("", {}))[1].get("network_ms_median")
    finally:
        if monitor is not None:
            monitor.close()
        procs.stop()

    first_streamed = np.array(sorted({int(s[0]) for s in streams if len(s)}), dtype=np.int64)
    ages, stale = [], []
    for recv_ns, times in chunks:
        window = times[To - 1:To - 1 + Ta]
        stale.append(float(np.mean(window <= recv_ns + exec_latency_ns)))
        executed = np.intersect1d(times, first_streamed)
        if executed.size:
            ages.append(executed[0] - times[To - 1])
    lat = _summary(latencies, 1e3)
    result = {
        "checkpoint": str(checkpoint), "episodes": args.episodes,
        "successes": sum(e["success"] for e in episodes),
        "predict_action_ms": network,
        "request_to_chunk_ms": lat,
        "latency_ratio": round(lat["median"] / network["median"], 3) if lat else None,
        "predict_action_in_graph_ms_median": float(in_graph) if in_graph else None,
        "capture_to_first_executed_waypoint_ms": _summary(ages, 1e-6),
        "stale_fraction_of_executed_window": round(float(np.mean(stale)), 4) if stale else None,
        "sim_real_time_factor": {"min": round(float(np.nanmin(rtf)), 4), "mean": round(float(np.nanmean(rtf)), 4)}
        if rtf else None,
        "cpu": _cpu_name(),
    }
    text = json.dumps(result)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


def _cpu_name() -> str:
    from dp_ros.train.precision import cpu_capabilities   # the one reader of /proc/cpuinfo
    cpu = cpu_capabilities()
    return f"{cpu['model']} ({cpu['cores']} cores{', AMX' if cpu['amx_bf16'] else ''})"
