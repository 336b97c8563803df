"""`dp-ros bench train --config FILE [--steps N] [--precisions fp32,auto] [KEY=VALUE ...]`: the
training step's speed in each precision, as one JSON.

The step is the trainer's own (dp_ros.train.trainer.Trainer.train_step: forward, backward,
gradient clip, optimiser, LR schedule, EMA), on a Trainer built from the config exactly as
`dp-train` builds it, once per precision; data loading is not timed (batches are drawn before),
and the precisions' steps are interleaved so a shared machine's load falls on each alike.
Where the config's data.path does not exist (a fresh clone), a small store of the config's
shapes is synthesised in a temporary directory, so the figures need no recorded data.

`--compare-loss N` instead trains N steps in fp32 and in bf16 from the same seed (plus fp32 from
another seed, the run-to-run noise) and prints the loss curves' moving averages and their
largest relative differences. A measurement: prints JSON, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# bench name -> training.mixed_precision
PRECISIONS = {"fp32": "no", "bf16": "bf16", "auto": "auto"}
NAME_OF = {"no": "fp32", "bf16": "bf16", "fp16": "fp16"}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dp-ros bench train", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="training YAML (config/train/*.yaml)")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                    help="dotted config overrides, as for dp-train")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per precision")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--precisions", default="fp32,auto",
                    help="comma list of fp32, bf16, auto (auto: what the trainer would pick; "
                         "measured once if it is one already listed); a suffix /nhwc or /nchw "
                         "sets that entry's encoder memory format (e.g. bf16/nchw,bf16/nhwc)")
    ap.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                    help="vision encoder memory format: as the trainer picks, or forced")
    ap.add_argument("--synthetic", action="store_true",
                    help="synthetic data even where data.path exists")
    ap.add_argument("--compare-loss", type=int, metavar="N", default=None,
                    help="train N steps fp32 vs bf16 (same seed) and fp32 (another seed); "
                         "print the loss curves instead of timing")
    ap.add_argument("--window", type=int, default=100,
                    help="--compare-loss: moving-average window in steps")
    return ap


# --- machine ---------------------------------------------------------------------------------
def machine() -> dict:
    import torch

    from dp_ros.train.precision import cpu_capabilities
    cpu = cpu_capabilities()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu["model"], "cores": cpu["cores"], "amx": cpu["amx_bf16"],
            "avx512_bf16": cpu["avx512_bf16"], "torch_threads": torch.get_num_threads(),
            "gpu": gpu, "torch": torch.__version__}


# --- synthetic data --------------------------------------------------------------------------
def synthetic_shapes(cfg) -> dict:
    """The store shapes the config implies where no data says them: the data section's keys,
    the policy section's dims where it gives them, else a planar reach (2-D pose and action)."""
    d, pol = cfg.data, cfg.policy
    pol_cams = dict(pol.get("cameras") or {})
    cams = list(d.cameras) if d.cameras is not None else (list(pol_cams) or ["top"])
    hw = {c: [int(x) for x in (d.image_size or pol_cams.get(c) or [96, 96])] for c in cams}
    pol_low = dict(pol.get("lowdim_obs") or {})
    lowdim = list(d.lowdim) if d.lowdim is not None else (list(pol_low) or ["robot_pose"])
    return {"cameras": hw, "lowdim": {k: int(pol_low.get(k, 2)) for k in lowdim},
            "action_dim": int(pol.get("action_dim") or 2),
            "frequency": float(pol.get("control_frequency_hz") or 10.0)}


def write_synthetic_store(path, shapes: dict, n_windows: int, n_episodes: int = 6,
                          seed: int = 0, task: str = "synthetic") -> Path:
    """A reach-like store: each episode's image shows a target blob, the pose moves a quarter of
    the way to it each step, the action is the next pose. Learnable, so loss curves fall."""
    from dp_ros.core.robot_features import SOURCES
    from dp_ros.data.replay_buffer import ReplayBuffer
    rng = np.random.default_rng(seed)
    freq = shapes["frequency"]
    by_dim = {dim: name for name, dim in SOURCES.items() if name != "joints"}
    config = {"frequency": freq, "dt": 1.0 / freq,
              "cameras": {c: f"/camera/{c}/image_raw" for c in shapes["cameras"]},
              "obs": {k: by_dim[d] for k, d in shapes["lowdim"].items() if d in by_dim}}
    length = max(24, math.ceil(n_windows / max(n_episodes - 1, 1)) + 8)
    buf = ReplayBuffer.create_or_open(path, config)
    da = shapes["action_dim"]
    for e in range(n_episodes):
        target = rng.uniform(-1, 1, 2)
        pose = rng.uniform(-1, 1, 2)
        poses = []
        for _ in range(length + 1):
            poses.append(pose.copy())
            pose = pose + 0.25 * (target - pose)
        poses = np.array(poses, np.float32)

        def widen(x, dim):   # the planar signal repeated to any width
            return np.resize(x, (len(x), dim)) if dim != 2 else x
        data = {"action": widen(poses[1:], da), "timestamp": np.arange(length) / freq}
        for k, dim in shapes["lowdim"].items():
            data[k] = widen(poses[:-1], dim)
        for cam, (H, W) in shapes["cameras"].items():
            ys, xs = np.mgrid[0:H, 0:W]
            cy, cx = (target + 1) / 2 * [H - 1, W - 1]
            frames = np.zeros((length, H, W, 3), np.uint8)
            frames[..., 0] = (255 * np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (0.02 * H * W)))
            for i, p in enumerate(poses[:-1]):
                py, px = np.round((p + 1) / 2 * [H - 1, W - 1]).astype(int)
                frames[i, max(py - 2, 0):py + 3, max(px - 2, 0):px + 3, 1] = 255
            data[cam] = frames
        buf.add_episode(data, name=f"synthetic_{e}", info={"metadata": {"task": task}})
    return Path(path)


def data_overrides(cfg_path, overrides, tmp: Path, synthetic: bool) -> tuple[list[str], str]:
    """-> (extra overrides pointing data.path at usable data, what the data is)."""
    from dp_ros.train.config import load_config
    cfg = load_config(cfg_path, overrides)
    if not synthetic and cfg.data.path and Path(cfg.data.path).exists():
        return [], str(cfg.data.path)
    # Enough windows for a training batch however the episodes are split.
    n_windows = 2 * cfg.training.batch_size + 16
    store = write_synthetic_store(tmp / "synthetic.zarr", synthetic_shapes(cfg), n_windows,
                                  seed=cfg.training.seed, task=cfg.data.task or "synthetic")
    return [f"data.path={store}"], "synthetic"


def make_trainer(cfg_path, overrides, mode: str, run_dir: Path):
    from dp_ros.train.config import load_config
    from dp_ros.train.trainer import Trainer
    # Quoted: YAML would read a bare `no` as false.
    cfg = load_config(cfg_path, [*overrides, f"training.mixed_precision={mode!r}"])
    return Trainer(cfg, run_dir, progress=False, command_line="dp-ros bench train")


# --- timing ----------------------------------------------------------------------------------
def set_channels_last(trainer, how: str) -> bool:
    import torch
    if how != "auto":
        fmt = torch.channels_last if how == "on" else torch.contiguous_format
        trainer.policy.obs_encoder.to(memory_format=fmt)
    convs = [m.weight for m in trainer.policy.obs_encoder.modules()
             if isinstance(m, torch.nn.Conv2d)]
    return bool(convs) and convs[0].is_contiguous(memory_format=torch.channels_last) \
        and not convs[0].is_contiguous()


def _batches(trainer, n: int) -> list:
    it = trainer._batches()
    return [next(it) for _ in range(n)]


def time_round_robin(trainers: dict, steps: int, warmup: int, n_batches: int = 4) -> dict:
    """Seconds per step for each trainer, their steps interleaved (A B A B ...) so that load
    from other processes on a shared machine falls on every precision alike."""
    batches = {k: _batches(tr, min(n_batches, steps + warmup)) for k, tr in trainers.items()}
    times: dict = {k: [] for k in trainers}
    for i in range(warmup + steps):
        for k, tr in trainers.items():
            b = batches[k]
            t0 = time.perf_counter()
            loss, _ = tr.train_step(b[i % len(b)])
            float(loss)     # waits for the step (CUDA is asynchronous)
            if i >= warmup:
                times[k].append(time.perf_counter() - t0)
    return times


def bench(args) -> dict:
    names = [p.strip() for p in args.precisions.split(",") if p.strip()]
    fmt = {n: {"nhwc": "on", "nchw": "off"}.get(n.partition("/")[2], "?") if "/" in n
           else args.channels_last for n in names}
    bad = [p for p in names if p.partition("/")[0] not in PRECISIONS or fmt[p] == "?"]
    if bad:
        raise SystemExit(f"--precisions: unknown {bad}; choose from {list(PRECISIONS)}, "
                         f"optionally with /nhwc or /nchw")
    over = [*args.overrides, "training.num_workers=0"]   # batches are drawn before timing
    out: dict = {"config": args.config, "overrides": list(args.overrides), "steps": args.steps,
                 "warmup": args.warmup}
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        tmp = Path(tmp)
        extra, out["data"] = data_overrides(args.config, over, tmp, args.synthetic)
        over += extra
        # auto last, so that where it picks what another name already runs it is not re-run.
        order = sorted(dict.fromkeys(names), key=lambda n: n.startswith("auto"))
        trainers, modes = {}, {}
        for name in order:
            mode = PRECISIONS[name.partition("/")[0]]
            trainer = make_trainer(args.config, over, mode, tmp / f"run_{len(trainers)}")
            ran = NAME_OF[trainer.precision.name]
            cl = set_channels_last(trainer, fmt[name])
            has_cameras = bool(trainer.policy_cfg.cameras)
            out.setdefault("batch_size", trainer.cfg.training.batch_size)
            out.setdefault("params_M", round(sum(p.numel() for p in trainer.policy.parameters())
                                             / 1e6, 2))
            out.setdefault("device", str(trainer.device))
            if name.startswith("auto"):
                out["auto"] = {"picks": ran, "channels_last": cl,
                               "reason": trainer.precision.reason}
                if (ran, cl) in modes.values():   # measured under its own name
                    trainer.close()
                    continue
            trainers[name], modes[name] = trainer, (ran, cl)
        times = time_round_robin(trainers, args.steps, args.warmup)
        for name, tr in trainers.items():
            med = statistics.median(times[name])
            results[name] = {"mixed_precision": modes[name][0], "channels_last": modes[name][1],
                             "s_per_step": round(med, 4),
                             "samples_per_s": round(tr.cfg.training.batch_size / med, 2),
                             "s_per_step_min": round(min(times[name]), 4),
                             "s_per_step_max": round(max(times[name]), 4)}
            tr.close()
        trainers.clear()
    out["machine"] = machine()
    out["results"] = {n: results[n] for n in names if n in results}
    if "auto" not in out:   # say what auto would pick even when it was not timed
        from dp_ros.train.precision import resolve_precision
        p = resolve_precision("auto", "cuda" if out.get("device", "").startswith("cuda")
                              else "cpu", has_cameras=has_cameras)
        out["auto"] = {"picks": NAME_OF[p.name], "channels_last": p.channels_last,
                       "reason": p.reason}
    fp32 = [n for n in out["results"] if out["results"][n]["mixed_precision"] == "fp32"]
    if fp32:    # relative to the first fp32 entry (as listed)
        base = out["results"][fp32[0]]["s_per_step"]
        out["speedup_vs_fp32"] = {k: round(base / r["s_per_step"], 3)
                                  for k, r in out["results"].items()}
    return out


# --- loss curves -----------------------------------------------------------------------------
def _losses(run_dir: Path) -> dict[int, float]:
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "train/loss" in rec:
            out[int(rec["step"])] = float(rec["train/loss"])
    return out


def moving_average(losses: dict[int, float], window: int) -> dict[int, float]:
    """Mean of the logged losses in (step - window, step], at each logged step."""
    steps = sorted(losses)
    return {s: statistics.fmean(losses[t] for t in steps if s - window < t <= s) for s in steps}


def compare_loss(args) -> dict:
    n = int(args.compare_loss)
    log_every = 10
    over = [*args.overrides, f"training.max_steps={n}", f"training.log_every={log_every}",
            f"training.eval_every={n}", f"training.checkpoint_every={n}"]
    runs = {"fp32": ("no", []), "bf16": ("bf16", []), "fp32_seed+1": ("no", ["seed+1"])}
    curves, wall, info = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="compare_precision_") as tmp:
        tmp = Path(tmp)
        extra, data = data_overrides(args.config, over, tmp, args.synthetic)
        over += extra
        from dp_ros.train.config import load_config
        seed = load_config(args.config, over).training.seed
        for name, (mode, flags) in runs.items():
            o = over + ([f"training.seed={seed + 1}"] if flags else [])
            trainer = make_trainer(args.config, o, mode, tmp / name)
            info[name] = trainer.precision.to_dict()
            t0 = time.perf_counter()
            trainer.fit()
            wall[name] = round(time.perf_counter() - t0, 1)
            trainer.close()
            curves[name] = moving_average(_losses(tmp / name), args.window)
    steps = sorted(curves["fp32"])
    full = [s for s in steps if s >= args.window]       # full windows only

    def max_rel(a, b):
        return max(abs(curves[a][s] - curves[b][s]) / abs(curves[b][s]) for s in full)
    marks = sorted({s for s in full if s % max(n // 10, log_every) == 0} | {steps[-1]})
    return {"config": args.config, "overrides": list(args.overrides), "data": data,
            "steps": n, "window": args.window, "machine": machine(), "runs": info,
            "wall_s": wall,
            "moving_average": {str(s): {k: round(c[s], 5) for k, c in curves.items()}
                               for s in marks},
            "max_rel_diff": {"bf16_vs_fp32": round(max_rel("bf16", "fp32"), 4),
                             "fp32_other_seed_vs_fp32": round(max_rel("fp32_seed+1", "fp32"),
                                                              4)}}


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from dp_ros.train.config import ConfigError
    try:
        out = compare_loss(args) if args.compare_loss else bench(args)
    except ConfigError as e:
        print(f"dp-ros bench train: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
