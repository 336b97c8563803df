"""`dp-ros export`: a checkpoint made ready to ship: the deployable weights only (no optimiser or RNG
state), stored at a smaller precision, with where it came from in its config.json.

    dp-ros export runs/train-pusht-state-v2/checkpoints/best models/pusht_state_policy --weights-dtype float16 --stitch none
    dp-ros export runs/train-pusht-state-prefix/checkpoints/last models/pusht_state_policy --stitch inpaint:0:0:0 --action-horizon 6

The EMA weights are what inference uses; float16 halves the file, and load_checkpoint casts them
back to float32 (evaluate the exported copy: it is what users run).
"""

import argparse
import json
import sys
from pathlib import Path

from dp_ros.core.scheduler import parse_stitch


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dp-ros export", description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", help="checkpoint directory (e.g. runs/<run>/checkpoints/best)")
    ap.add_argument("out", help="directory to write (e.g. models/<name>); must not hold another checkpoint")
    ap.add_argument("--weights-dtype", choices=("float16", "bfloat16", "float32"), default="float16")
    ap.add_argument("--force", action="store_true", help="overwrite a checkpoint already in OUT")
    ap.add_argument("--stitch", default=None,
                    help="how this policy's chunks should join: none, ensemble, blend[:B] or "
                         "inpaint[:K[:W[:B[:G[:N[:M]]]]]] (B blend steps, K pulled steps, W warm start, G "
                         "guidance, N candidate chunks, M 1/0: free steps held to the demonstrations' motion; "
                         "e.g. inpaint:0:0:0 = the frozen prefix alone). The deploy graph runs it where the "
                         "config says `stitch: auto` (its default)")
    ap.add_argument("--action-horizon", type=int, default=None,
                    help="Ta, waypoints this policy should execute per chunk when deployed, if not the Ta it "
                         "was trained with (1 .. Tp - To + 1). The deploy graph runs it where the config says "
                         "`action_horizon: 0` (its default)")
    ap.add_argument("--demo-motion-from", default=None, metavar="ZARR",
                    help="record the demonstrations' top speed and sharpest turn from this replay buffer (the "
                         "one the checkpoint was trained on), for a checkpoint trained before dp-train recorded "
                         "them; stitch inpaint holds each chunk's free steps to them")
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        stitch = parse_stitch(args.stitch) if args.stitch else None
    except ValueError as exc:
        print(f"[dp-ros export] ERROR: --stitch: {exc}", file=sys.stderr)
        return 2
    from dp_ros.policy.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    src, out = Path(args.checkpoint), Path(args.out)
    if (out / "config.json").exists() and not args.force:
        print(f"[dp-ros export] ERROR: {out} already holds a checkpoint (--force overwrites it)", file=sys.stderr)
        return 2
    try:
        policy = load_checkpoint(src)
    except (CheckpointError, OSError, ValueError) as exc:
        print(f"[dp-ros export] ERROR: {exc}", file=sys.stderr)
        return 2
    extra = dict(policy.checkpoint_extra or {})
    extra.setdefault("exported_from", str(src))     # re-exporting an export keeps the run it came from
    # deploy settings: an export's own are kept, but for those given here (--stitch: all of the stitch's)
    deploy = dict(extra.get("deploy") or {})
    if stitch:
        deploy = {**({"action_horizon": deploy["action_horizon"]} if "action_horizon" in deploy else {}), **stitch}
    if args.action_horizon is not None:
        from dp_ros.graph import executed_steps, read_checkpoint_config

        try:
            if args.action_horizon < 1:   # 0 would mean "the checkpoint's": nothing to ship
                raise ValueError(f"must be >= 1 to ship (0 means the checkpoint's own), got {args.action_horizon}")
            deploy["action_horizon"] = executed_steps(read_checkpoint_config(src), args.action_horizon)
        except ValueError as exc:
            print(f"[dp-ros export] ERROR: --action-horizon: {exc}", file=sys.stderr)
            return 2
    if deploy:
        extra["deploy"] = deploy
    if args.demo_motion_from:
        try:
            extra["demo_motion"] = demo_motion_from(args.demo_motion_from, policy)
        except (OSError, ValueError) as exc:
            print(f"[dp-ros export] ERROR: --demo-motion-from: {exc}", file=sys.stderr)
            return 2
    dtype = None if args.weights_dtype == "float32" else args.weights_dtype
    save_checkpoint(out, policy, extra=extra, weights_dtype=dtype)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(json.dumps({"checkpoint": str(out), "from": str(src), "weights_dtype": args.weights_dtype,
                      "bytes": size, "deploy": extra.get("deploy", {}), "demo_motion": extra.get("demo_motion")}))
    return 0


def demo_motion_from(path, policy) -> dict:
    """DemoMotion of the replay buffer at path, for the policy's action space."""
    from dp_ros.core.robot_features import robot_spec
    from dp_ros.data.replay_buffer import ReplayBuffer
    from dp_ros.train.data import demo_motion_of

    buf = ReplayBuffer.open(path)
    cfg = policy.config
    if "action" not in buf.keys or buf["action"].shape[1] != cfg.action_dim:
        raise ValueError(f"{path} has no 'action' array of the policy's dim {cfg.action_dim}")
    motion = demo_motion_of(buf, robot_spec(policy.checkpoint_extra or {}, cfg.lowdim_obs, cfg.action_dim))
    if motion is None:
        raise ValueError(f"{path} has no episode of 3 steps or more")
    return motion


if __name__ == "__main__":
    sys.exit(main())
