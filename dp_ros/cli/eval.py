"""`dp-ros eval`: closed-loop evaluation in simulation through the real deploy graph.

The same processes, middleware and inference latency as `dp-ros deploy`, on world seeds held
out from the recorded demonstrations (default base seed 100000; `dp-ros record` uses the
config's seed, 0). Prints success rate and mean final coverage; per-episode JSON in --out; one
MP4 per episode and a contact sheet in <log dir>/videos (--no-video: none).
"""

import argparse

from dp_ros.cli import deploy
from dp_ros.viz.progress import add_progress_flag

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
    add_progress_flag(ap)
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    # `dp-ros deploy` in simulation, its other settings (--ready-timeout) at their defaults
    run = deploy.parser()
    run.set_defaults(checkpoint=args.checkpoint, episodes=args.episodes, seed=args.seed, summary_json=args.out,
                     config=args.config, episode_timeout=args.episode_timeout, log_dir=args.log_dir,
                     no_video=args.no_video, no_progress=args.no_progress)
    return deploy.run(run.parse_args([]))
