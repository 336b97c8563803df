"""`dp-ros eval`: closed-loop evaluation in simulation, real-time and/or lockstep.

Real-time (default): the real deploy graph - the same processes, middleware and inference
latency as `dp-ros deploy`. Lockstep (--lockstep): the graph's own logic in one process with the
world paused while the policy infers (the paper's evaluation; dp_ros.sim.lockstep), so the score
is the policy's and not this machine's; --delay injects a fixed inference latency instead.
--both runs lockstep, then real-time, on the same seeds; the JSON then has both.

Both use world seeds held out from the recorded demonstrations (default base seed 100000;
`dp-ros record` uses the config's seed, 0): episode k gets seed + k + 1. Prints success rate and
mean max / final coverage; per-episode JSON in --out; real-time runs write one MP4 per episode
and a contact sheet in <log dir>/videos (--no-video: none).
"""

import argparse
import json
import sys
import time
from pathlib import Path

from dp_ros.viz.progress import add_progress_flag, echo, progress_bar

EVAL_SEED = 100_000


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dp-ros eval", description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=EVAL_SEED)
    ap.add_argument("--out", default=None, help="summary JSON with per-episode results")
    ap.add_argument("--config", default=None)
    ap.add_argument("--episode-timeout", type=float, default=None)
    ap.add_argument("--log-dir", default=None, help="node logs and videos (default: runs/deploy-<time>)")
    ap.add_argument("--no-video", action="store_true", help="no per-episode MP4s / contact sheet")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--lockstep", action="store_true", help="lockstep only: the world waits for the policy")
    mode.add_argument("--both", action="store_true", help="lockstep, then real-time through the graph")
    ap.add_argument("--delay", type=float, default=0.0, help="lockstep: injected inference latency (s)")
    ap.add_argument("--stitch", default=None, help="how chunks join, instead of the config's (lockstep and real time): "
                                                   "a mode, with settings as `dp-ros bench stitching` takes them "
                                                   "(inpaint:4:0:0:20)")
    ap.add_argument("--action-horizon", type=int, default=None,
                    help="Ta, waypoints executed per chunk, instead of the config's (0 = the checkpoint's)")
    ap.add_argument("--device", default="cpu", help="lockstep: torch device (cpu, cuda)")
    add_progress_flag(ap)
    return ap


def run_lockstep(args) -> dict:
    from dp_ros.sim.lockstep import LockstepEvaluator

    evaluator = LockstepEvaluator(args.checkpoint, args.config, device=args.device, delay_s=args.delay,
                                  stitch=args.stitch, seed=args.seed, episode_timeout_s=args.episode_timeout,
                                  action_horizon=args.action_horizon)
    bar = progress_bar(total=args.episodes, enabled=not args.no_progress, desc="lockstep", unit="ep")
    done = []

    def report(ep):
        done.append(ep)
        echo(f"[dp-ros eval] lockstep episode {ep['episode']} (seed {ep['seed']}): success={ep['success']} "
             f"max coverage={ep['max_coverage']:.2f} t={ep['duration_s']:.1f}s (sim)", file=sys.stderr)
        bar.update(1)
        bar.set_postfix(success=f"{sum(e['success'] for e in done)}/{len(done)}")

    t0 = time.monotonic()
    with bar:
        summary = evaluator.evaluate(args.episodes, progress=report)
    summary["wall_s"] = round(time.monotonic() - t0, 1)
    return summary


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    lockstep = None
    if args.lockstep or args.both:
        try:
            lockstep = run_lockstep(args)
        except (OSError, ValueError, KeyError) as exc:
            print(f"[dp-ros eval] ERROR: {exc}", file=sys.stderr)
            return 2
    if args.lockstep:
        summary = {"checkpoint": str(args.checkpoint), "mode": "lockstep", "lockstep": lockstep}
        out = Path(args.out or f"runs/eval-lockstep-{time.strftime('%Y%m%d-%H%M%S')}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=2))
        print(json.dumps({k: v for k, v in lockstep.items() if k != "episodes"}, indent=2))
        print(f"[dp-ros eval] summary written to {out}")
        return 0
    # `dp-ros deploy` in simulation, its other settings (--ready-timeout) at their defaults. Imported
    # here: lockstep needs no ROS 2 at all (it runs where only torch and the sim are installed).
    from dp_ros.cli import deploy
    run = deploy.parser()
    run.set_defaults(checkpoint=args.checkpoint, episodes=args.episodes, seed=args.seed, summary_json=args.out,
                     config=args.config, episode_timeout=args.episode_timeout, log_dir=args.log_dir,
                     no_video=args.no_video, no_progress=args.no_progress, stitch=args.stitch,
                     action_horizon=args.action_horizon)
    return deploy.run(run.parse_args([]), extra={"lockstep": lockstep} if lockstep else None)
