"""`dp-ros eval`: closed-loop evaluation in simulation through the real deploy graph.

The same processes, middleware and inference latency as `dp-ros deploy`, on world seeds held
out from the recorded demonstrations (default base seed 100000; `dp-ros record` uses the
config's seed, 0). Prints success rate and mean final coverage; per-episode JSON in --out.
"""

import argparse

from dp_ros import runner

EVAL_SEED = 100_000


def main(argv=None):
    ap = argparse.ArgumentParser(prog="dp-ros eval", description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=EVAL_SEED)
    ap.add_argument("--out", default=None, help="summary JSON with per-episode results")
    ap.add_argument("--config", default=None)
    ap.add_argument("--episode-timeout", type=float, default=None)
    ap.add_argument("--log-dir", default=None, help="node logs (default: runs/deploy-<time>)")
    args = ap.parse_args(argv)
    forward = ["--checkpoint", args.checkpoint, "--episodes", str(args.episodes), "--seed", str(args.seed)]
    for flag, value in (("--summary-json", args.out), ("--config", args.config),
                        ("--episode-timeout", args.episode_timeout), ("--log-dir", args.log_dir)):
        if value is not None:
            forward += [flag, str(value)]
    return runner.main(forward)
