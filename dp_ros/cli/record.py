"""`dp-ros record`: record teleop demonstrations without launch_ros (ROS 2 from pip wheels).

Starts the teleop graph (launch/teleop.launch.py starts the same one). With the simulated world
and the scripted expert it records N episodes by itself: reset the world, re-sync the teleop
target, record until the task is done, keep the bag (success is in its metadata). With a real
SpaceMouse the operator drives: button 1 starts/stops an episode, and the /teleop/* services
do the same; the runner waits for Ctrl-C.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from dp_ros.graph import default_config, teleop_graph
from dp_ros.runtime.episodes import record_episode
from dp_ros.runtime.monitor import GraphMonitor, NodeDied, check_alive, wait_until
from dp_ros.runtime.processes import NodeProcesses, stop_on_signals
from dp_ros.viz.progress import add_progress_flag, echo, progress_bar


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dp-ros record", description=__doc__.split("\n")[0])
    ap.add_argument("--hardware", action="store_true", help="real UR5 + RealSense (default: sim world)")
    ap.add_argument("--device", choices=["scripted", "spacenav"], default=None,
                    help="teleop input (default: scripted in sim, spacenav on hardware)")
    ap.add_argument("--task", choices=["reach", "pusht"], default=None, help="sim task (default: config)")
    ap.add_argument("--episodes", type=int, default=5, help="episodes to record with the scripted expert")
    ap.add_argument("--out", default="data/demos", help="directory of episode bags")
    ap.add_argument("--episode-timeout", type=float, default=None, help="sim episode limit (s)")
    ap.add_argument("--seed", type=int, default=None, help="sim: episode k uses seed + k + 1 (default: config)")
    ap.add_argument("--cameras", default=None,
                    help="comma-separated cameras to record (default: the config's); '' records none: a "
                         "state-only dataset, several times faster to record")
    ap.add_argument("--lockstep", action="store_true",
                    help="sim + scripted expert only: run the teleop graph's logic in sim time, without the "
                         "middleware (many times faster than real time; the same bags)")
    ap.add_argument("--takeover-from", default=None, metavar="CHECKPOINT",
                    help="with --lockstep: this policy runs each episode first and the expert takes over from "
                         "where it left the world; only the expert is recorded (DAgger's data: demonstrations "
                         "from the states the deployed policy reaches)")
    ap.add_argument("--takeover-after", default="2:20", metavar="MIN:MAX",
                    help="seconds the policy runs before the takeover, drawn per episode (default 2:20)")
    ap.add_argument("--takeover-delay", type=float, default=0.0, metavar="S",
                    help="inference delay injected into the policy's lead-in, s (as `bench stitching`)")
    ap.add_argument("--config", default=None, help="ROS 2 parameter file (default: config/deploy.yaml)")
    ap.add_argument("--log-dir", default=None)
    add_progress_flag(ap)
    return ap


def main(argv=None) -> int:
    ap = parser()
    args = ap.parse_args(argv)

    sim = not args.hardware
    device = args.device or ("scripted" if sim else "spacenav")
    if device == "scripted" and not sim:
        ap.error("the scripted expert needs the simulated world")
    config = Path(args.config) if args.config else default_config()
    try:
        specs = teleop_graph(sim, config, device=device, task=args.task, output_dir=Path(args.out).resolve(),
                             episode_timeout_s=args.episode_timeout, seed=args.seed,
                             cameras=None if args.cameras is None else [c for c in args.cameras.split(",") if c])
    except (OSError, ValueError, KeyError) as exc:
        print(f"[dp-ros record] ERROR: {exc}", file=sys.stderr)
        return 2
    if args.takeover_from and not args.lockstep:
        ap.error("--takeover-from needs --lockstep")
    if args.lockstep:
        if device != "scripted":
            ap.error("--lockstep records the scripted expert in the simulated world")
        return _record_lockstep(args, specs, config)
    log_dir = Path(args.log_dir or f"runs/record-{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"[dp-ros record] {'sim' if sim else 'hardware'}, {device} input -> {args.out}; logs in {log_dir}",
          flush=True)
    stop_on_signals()
    procs = NodeProcesses(specs, config, log_dir)
    monitor = None
    episodes = []
    bar = None
    code = 0
    try:
        procs.start()
        monitor = GraphMonitor()
        wait_until(lambda: "teleop_node" in monitor.diagnostics, 120, procs, "the teleop node")
        if device != "scripted":
            print("[dp-ros record] ready: button 1 (or the /teleop/start_episode service) starts and stops "
                  "an episode; Ctrl-C ends the session", flush=True)
            while True:
                check_alive(procs)
                time.sleep(0.2)
        bar = progress_bar(total=args.episodes, enabled=not args.no_progress, desc="episodes", unit="ep")
        for i in range(args.episodes):
            ep = record_episode(monitor, procs)
            episodes.append(ep)
            echo(f"[dp-ros record] episode {i}: success={ep['success']} t={ep['duration_s']}s -> {ep['path']}")
            bar.update(1)
            bar.set_postfix(success=f"{sum(e['success'] for e in episodes)}/{i + 1}")
    except KeyboardInterrupt:
        print("[dp-ros record] interrupted: stopping (an episode in progress is kept, marked interrupted)",
              flush=True)
    except (NodeDied, TimeoutError, RuntimeError) as exc:
        print(f"[dp-ros record] ERROR: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        if bar is not None:
            bar.close()
        procs.stop()
        if monitor is not None:
            monitor.close()
    if episodes:
        print(_summary(episodes, args.out))
    return code


def _summary(episodes, out) -> str:
    return json.dumps({"episodes": len(episodes), "successes": sum(e["success"] for e in episodes),
                       "skipped": sum(bool(e.get("skipped")) for e in episodes),
                       "out": str(Path(out).resolve()), "details": episodes}, indent=2)


def _record_lockstep(args, specs, config) -> int:
    from dp_ros.graph import node_params
    from dp_ros.sim.lockstep_record import LockstepRecorder, PolicyLeadIn

    lead_in = None
    try:
        recorder = LockstepRecorder(node_params(specs, config), Path(args.out).resolve())
        if args.takeover_from:
            after = args.takeover_after.split(":")
            if len(after) != 2:
                raise ValueError(f"--takeover-after takes MIN:MAX seconds, got {args.takeover_after!r}")
            lead_in = PolicyLeadIn(recorder, args.takeover_from, config, args.takeover_delay,
                                   (float(after[0]), float(after[1])))
    except (OSError, ValueError, KeyError) as exc:
        print(f"[dp-ros record] ERROR: {exc}", file=sys.stderr)
        return 2
    print(f"[dp-ros record] lockstep: task {recorder.task}, sim time, no middleware -> {args.out}"
          + (f"; the expert takes over from {args.takeover_from} after {args.takeover_after} s" if lead_in else ""),
          flush=True)
    episodes = []
    t0 = time.perf_counter()
    with progress_bar(total=args.episodes, enabled=not args.no_progress, desc="episodes", unit="ep") as bar:
        for i in range(args.episodes):
            episodes.append(recorder.record(i, lead_in))
            bar.update(1)
            bar.set_postfix(success=f"{sum(e['success'] for e in episodes)}/{i + 1}")
    wall = time.perf_counter() - t0
    sim_s = sum(e["duration_s"] for e in episodes)
    echo(f"[dp-ros record] {len(episodes)} episodes, {sim_s:.0f} s of demonstrations in {wall:.0f} s "
         f"({sim_s / max(wall, 1e-9):.1f}x real time)")
    print(_summary(episodes, args.out))
    return 0 if episodes else 1


if __name__ == "__main__":
    sys.exit(main())
