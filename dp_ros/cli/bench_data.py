"""`dp-ros bench data --config FILE`: how fast the training loader makes batches, with the images
read from zarr per window and held in memory (data.image_cache_gb), in one run.

Builds the training set as dp-train does (same config, overrides, split and policy shapes), then
times whole batches from the training DataLoader. Where data.path does not exist a small store of
the config's shapes is synthesised, as `dp-ros bench train` does. Prints JSON.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dp-ros bench data", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="training YAML (config/train/*.yaml)")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    ap.add_argument("--batches", type=int, default=20, help="timed batches per mode")
    ap.add_argument("--workers", type=int, default=0,
                    help="DataLoader workers (default 0: one process, the cost per batch itself)")
    ap.add_argument("--synthetic", action="store_true", help="synthetic data even where data.path exists")
    return ap


def time_loader(cfg, n_batches: int, workers: int, cache_gb: float) -> dict:
    from dp_ros.data.dataset import train_val_split
    from dp_ros.train.config import resolve_policy_config
    from dp_ros.train.data import (SeededBatchSampler, inspect_data, make_train_loader,
                                   make_train_val_sets)

    cfg.data.image_cache_gb = cache_gb
    info = inspect_data(cfg)
    pcfg = resolve_policy_config(cfg, info)
    train_eps, val_eps = train_val_split(info["n_episodes"], cfg.data.val_ratio, cfg.data.split_seed)
    start = time.perf_counter()
    train_set, _ = make_train_val_sets(cfg.data, pcfg, train_eps, val_eps)
    build_s = time.perf_counter() - start
    t = cfg.training
    sampler = SeededBatchSampler(len(train_set), t.batch_size, 0, 1, t.seed)
    batches = iter(make_train_loader(train_set, sampler, workers, pin_memory=False, seed=t.seed))
    next(batches)                                    # workers started, first reads done
    times = []
    for _ in range(n_batches):
        start = time.perf_counter()
        try:
            next(batches)
        except StopIteration:
            break
        times.append(time.perf_counter() - start)
    held = bool(train_set._images_in_memory)
    ms = statistics.median(times) * 1e3
    return {"images_in_memory": held, "dataset_build_s": round(build_s, 2),
            "batch_ms_median": round(ms, 2), "windows_per_s": round(t.batch_size / ms * 1e3, 1),
            "batches": len(times)}


def main(argv=None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    from dp_ros.cli.bench_train import data_overrides, machine
    from dp_ros.train.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        extra, source = data_overrides(args.config, args.overrides, Path(tmp), args.synthetic)
        load = lambda: load_config(args.config, [*args.overrides, *extra])   # noqa: E731
        cfg = load()
        out = {"machine": machine(), "config": args.config, "data": source,
               "batch_size": cfg.training.batch_size, "workers": args.workers,
               "lazy": time_loader(load(), args.batches, args.workers, 0.0),
               "in_memory": time_loader(load(), args.batches, args.workers,
                                        max(cfg.data.image_cache_gb, 1e3))}
        out["speedup"] = round(out["lazy"]["batch_ms_median"] / out["in_memory"]["batch_ms_median"], 2)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
