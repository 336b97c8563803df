"""`dp-ros bench stitching`: how each way of joining chunks copes with inference latency.

For every stitch mode and injected delay, the lockstep evaluator (dp_ros.sim.lockstep) runs the
same held-out episodes with the world running on for `delay` while each chunk is computed, and the
bench prints one JSON: per mode and delay the success rate, mean max coverage, the largest
acceleration of the waypoint path where chunks join (and its 99th percentile, beside that of the
plans' own motion clear of junctions; the junction is the old plan's last two waypoints and the
new plan's first three, the transition the same through the end of the longest blend among the
modes, one window for every cell) and of the servo command after a junction, its largest jerk,
and the mean distance between the old plan and the new chunk over their overlap. A mode is `blend`,
`ensemble`, `none` or `inpaint`: `blend:B` blends over B steps (default: the config's blend_steps);
`inpaint:K:W:B:G:N:M` adds K pulled overlap steps, a warm start W (the share of denoising steps skipped
by starting from the committed path), B blend steps for what offset is left, guidance G (> 0:
the pulled steps are guided through the network instead of replaced), N candidate chunks (the
one whose free steps leave the frozen prefix with the smallest turn runs) and M = 1 / 0: the free
steps held to the demonstrations' top speed and sharpest turn (the checkpoint's demo_motion) or
not; `inpaint:4`, `inpaint:4:0.5`, `inpaint:4:0:0:5`, `inpaint:0:0:0:0:16`, `inpaint:2:0:0::8:0`;
`inpaint:0:0:0` = frozen prefix only; an empty field keeps the config's value).
`--horizon-start` sets where each chunk's Ta executed steps are counted from (arrival or
observation; default: the config's) for every cell, `--action-horizon` how many there are. The episodes and sampling seeds are the same
for every cell, so the cells differ only by mode and delay. `--out FILE` also keeps every cell's
episodes (seed, success, max and final coverage, duration): which seeds a mode loses, and how
close they came.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from dp_ros.cli.eval import EVAL_SEED
from dp_ros.core.scheduler import HORIZON_STARTS, STITCH_SETTINGS
from dp_ros.viz.progress import add_progress_flag, echo, progress_bar

FIGURES = ("success_rate", "mean_max_coverage", "plan_boundary_acc_max", "plan_boundary_acc_p99",
           "plan_transition_acc_max", "plan_transition_acc_p99", "plan_interior_acc_p99", "command_boundary_acc_max",
           "command_boundary_jerk_max", "overlap_distance_mean")
# what the --out file keeps of each episode, per cell: which seeds a mode loses, and how close they came
EPISODE_FIELDS = ("seed", "success", "max_coverage", "final_coverage", "duration_s")
SETTINGS = ("stitch", "inpaint_soft_steps", "inpaint_warm_start", "inpaint_guidance", "inpaint_candidates",
            "inpaint_demo_motion", "blend_steps", "horizon_start",
            "action_horizon", "denoising_steps")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dp-ros bench stitching", description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the shipped model)")
    ap.add_argument("--config", default=None, help="ROS 2 parameter file (default: config/deploy.yaml)")
    ap.add_argument("--delays", default="0,100,200,300,400", help="injected inference delays, ms")
    ap.add_argument("--modes", default="none,blend,ensemble,inpaint,inpaint:4",
                    help="stitch modes; blend:B = B blend steps; inpaint:K[:W[:B[:G[:N[:M]]]]] = K pulled "
                         "overlap steps, warm start W, B blend steps, guidance G (0: the pulled steps are replaced), "
                         "N candidate chunks (the smoothest continuation of the frozen prefix runs), M 1/0: free "
                         "steps held to the demonstrations' motion")
    ap.add_argument("--horizon-start", default=None, choices=HORIZON_STARTS,
                    help="where each chunk's Ta executed steps are counted from (default: the config's)")
    ap.add_argument("--action-horizon", type=int, default=None,
                    help="Ta, waypoints executed per chunk, for every cell (default: the config's; 0 = the "
                         "checkpoint's)")
    ap.add_argument("--transition-waypoints", type=int, default=None,
                    help="new-plan waypoints in the transition figure, for every cell (default: through the end "
                         "of the longest blend among the modes; give the same to runs that are compared)")
    ap.add_argument("--episodes", type=int, default=20, help="episodes per mode and delay")
    ap.add_argument("--seed", type=int, default=EVAL_SEED)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="also write the JSON here, with each cell's episodes (seed, success, "
                                                "max and final coverage, duration) under episodes_by_cell")
    add_progress_flag(ap)
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from dp_ros.cli.bench_train import machine
    from dp_ros.core.scheduler import parse_stitch
    from dp_ros.graph import default_checkpoint, default_config, load_params
    from dp_ros.sim.lockstep import JUNCTION_WAYPOINTS, MAX_TRANSITION_WAYPOINTS, LockstepEvaluator, transition_window

    try:
        delays = [float(d) for d in args.delays.split(",") if d.strip()]
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        parsed = [parse_stitch(m) for m in modes]
        window = args.transition_waypoints
        if window is not None and not JUNCTION_WAYPOINTS <= window <= MAX_TRANSITION_WAYPOINTS:
            raise ValueError(f"--transition-waypoints must be in [{JUNCTION_WAYPOINTS}, "
                             f"{MAX_TRANSITION_WAYPOINTS}], got {window}")
        evaluator = LockstepEvaluator(args.checkpoint or default_checkpoint(), args.config, device=args.device,
                                      seed=args.seed, action_horizon=args.action_horizon)
    except (OSError, ValueError, KeyError) as exc:
        print(f"[dp-ros bench stitching] ERROR: {exc}", file=sys.stderr)
        return 2
    # A field a mode leaves out takes the config's value, not the settings a checkpoint was shipped
    # with (`auto` put those in the evaluator's parameters): `blend` is the config's blend.
    config = load_params(args.config or default_config())
    defaults = {key: config[node][key] for key, (node, _) in STITCH_SETTINGS.items()}
    if window is None:   # one window for every cell, long enough for the longest blend among them
        window = transition_window(max(spec.get("blend_steps", defaults["blend_steps"]) for spec in parsed))
    bar = progress_bar(total=len(modes) * len(delays) * args.episodes, enabled=not args.no_progress,
                       desc="episodes", unit="ep")
    results, settings, episodes = {}, {}, {}
    t0 = time.monotonic()
    with bar:
        for label, spec in zip(modes, parsed):
            results[label], episodes[label] = {}, {}
            for delay_ms in delays:
                evaluator.configure(delay_ms * 1e-3, spec["stitch"], horizon_start=args.horizon_start,
                                    **{key: spec.get(key, value) for key, value in defaults.items()})
                summary = evaluator.evaluate(args.episodes, progress=lambda _: bar.update(1),
                                             transition_waypoints=window)
                results[label][f"{delay_ms:g}"] = {k: summary[k] for k in FIGURES}
                episodes[label][f"{delay_ms:g}"] = [{k: ep[k] for k in EPISODE_FIELDS} for ep in summary["episodes"]]
                settings[label] = {k: summary[k] for k in SETTINGS}   # what the mode ran with
                echo(f"[bench stitching] {label:>10} delay {delay_ms:>4g} ms: "
                     + " ".join(f"{k}={summary[k]}" for k in FIGURES), file=sys.stderr)
    out = {"bench": "stitching", "checkpoint": str(args.checkpoint or default_checkpoint()),
           "episodes": args.episodes, "seed": args.seed, "machine": machine(),
           "wall_s": round(time.monotonic() - t0, 1), "transition_waypoints": window, "settings": settings,
           "results": results}
    print(json.dumps(out))
    if args.out:
        Path(args.out).write_text(json.dumps(dict(out, episodes_by_cell=episodes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
