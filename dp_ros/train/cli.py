"""dp-train (= dp-ros train): train a Diffusion Policy on a zarr replay buffer.

    dp-train --config config/train/reach_image.yaml [KEY=VALUE ...] [--out RUN_DIR]
    dp-train --resume RUN_DIR [KEY=VALUE ...]              continue exactly where last/ stopped
    dp-train --eval-only --checkpoint DIR [--config YAML]  offline action MSE as JSON
    torchrun --nproc_per_node N dp_ros/train/cli.py --config ...   data parallel (DDP)

Overrides are dotted YAML values, e.g. training.max_steps=200 policy.down_dims=[64,128]
data.path=data/reach.zarr. training.batch_size is per process."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from dp_ros.train.config import ConfigError, load_config


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dp-train", description=__doc__.split("\n")[0],
                                epilog=__doc__.split("\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted config overrides (YAML values)")
    p.add_argument("--config", help="training YAML (config/train/*.yaml)")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/NAME-TIME)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its checkpoints/last")
    p.add_argument("--stop-at", type=int, metavar="STEP",
                   help="stop after STEP (saving last/) without changing the LR schedule")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true",
                   help="print the merged config as YAML and exit")
    g = p.add_argument_group("offline eval")
    g.add_argument("--eval-only", action="store_true",
                   help="evaluate --checkpoint on held-out data and print JSON")
    g.add_argument("--checkpoint", metavar="DIR", help="checkpoint directory to evaluate")
    g.add_argument("--split", choices=("val", "train", "all"), default="val",
                   help="episodes to evaluate on (default: the run's validation episodes)")
    g.add_argument("--n-batches", type=int, default=None,
                   help="eval batches (default training.eval_batches)")
    g.add_argument("--batch-size", type=int, default=None, help="eval batch size")
    g.add_argument("--device", default=None, help="eval device (default training.device)")
    return p


def _eval_only(args) -> int:
    import torch

    from dp_ros.data.dataset import train_val_split
    from dp_ros.data.replay_buffer import ReplayBuffer
    from dp_ros.policy.checkpoint import load_checkpoint
    from dp_ros.train.config import config_from_dict
    from dp_ros.train.data import make_dataset
    from dp_ros.train.distributed import pick_device
    from dp_ros.train.evaluation import evaluate_policy

    if not args.checkpoint:
        raise ConfigError("--eval-only needs --checkpoint DIR")
    if args.config:
        cfg = load_config(args.config, args.overrides)
    else:
        from dp_ros.policy.checkpoint import read_checkpoint_meta
        _, extra = read_checkpoint_meta(args.checkpoint)
        if "train_config" not in extra:
            raise ConfigError(f"{args.checkpoint} has no train_config; pass --config")
        from dp_ros.train.config import apply_overrides
        cfg = config_from_dict(apply_overrides(extra["train_config"], args.overrides),
                               f"{args.checkpoint} train_config")
    t = cfg.training
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    device = pick_device(args.device or t.device)
    policy = load_checkpoint(args.checkpoint, device=device)
    pcfg = policy.config
    n = ReplayBuffer.open(cfg.data.path).n_episodes
    train_eps, val_eps = train_val_split(n, cfg.data.val_ratio, cfg.data.split_seed)
    episodes = {"val": val_eps, "train": train_eps, "all": list(range(n))}[args.split]
    if not episodes:
        raise ConfigError(f"no {args.split} episodes (val_ratio={cfg.data.val_ratio}); "
                          "use --split train or all")
    # Resize to what the policy takes when every camera has one size (else as stored).
    sizes = {tuple(v) for v in pcfg.cameras.values()}
    size = list(next(iter(sizes))) if len(sizes) == 1 else None
    ds = make_dataset(cfg.data.path, pcfg, episodes, size)
    res = evaluate_policy(policy, ds, args.n_batches or t.eval_batches,
                          args.batch_size or t.eval_batch_size or t.batch_size, seed=t.seed)
    out = {"checkpoint": str(Path(args.checkpoint)), "data": cfg.data.path, "split": args.split,
           "episodes": episodes, **res}
    print(json.dumps(out, indent=2))
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_intermixed_args(argv)
    try:
        if args.eval_only:
            return _eval_only(args)
        if args.resume:
            # The run's own config, unless one is given (then data/policy must match the run).
            path = args.config or Path(args.resume) / "config.yaml"
            cfg = load_config(path, args.overrides)
        elif args.config:
            cfg = load_config(args.config, args.overrides)
        else:
            raise ConfigError("give --config YAML (or --resume RUN_DIR); "
                              "see config/train/*.yaml")
        if args.print_config:
            print(cfg.to_yaml(), end="")
            return 0
        from dp_ros.train.trainer import Trainer
        cmd = " ".join(shlex.quote(a) for a in ["dp-train", *argv])
        trainer = Trainer(cfg, run_dir=args.resume or args.out, resume=bool(args.resume),
                          progress=not args.no_progress, command_line=cmd)
        try:
            summary = trainer.fit(stop_at=args.stop_at)
        finally:
            trainer.close()
        if trainer.is_main:
            print(json.dumps(summary, indent=2))
    except ConfigError as e:
        print(f"dp-train: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from dp_ros.policy.checkpoint import CheckpointError
        if isinstance(e, CheckpointError):
            print(f"dp-train: error: {e}", file=sys.stderr)
            return 2
        raise
    finally:
        try:
            import torch.distributed as dist
            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
        except ImportError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
