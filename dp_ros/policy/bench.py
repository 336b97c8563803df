"""`dp-ros bench inference --preset paper-real|sim` or `--checkpoint DIR`: inference latency of the
policy network, with a preset's random weights or a trained checkpoint's, on random inputs. Prints
one JSON object. A measurement, never a pass/fail. A U-Net at batch 1 on the CPU is also timed with
PyTorch's own Conv1d path (`pytorch_conv1d`), in the same run, for the ratio."""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch

from .config import PolicyConfig
from .diffusion import DiffusionPolicy
from .normalizer import LinearNormalizer

PRESETS = {
    # The paper's real-robot set-up: two 240x320 cameras, random crop to 216x288, large U-Net.
    "paper-real": dict(action_dim=2, obs_horizon=2, pred_horizon=16, action_horizon=8,
                       lowdim_obs={"robot_pose": 2},
                       cameras={"camera0": [240, 320], "camera1": [240, 320]}, crop=[216, 288],
                       down_dims=[512, 1024, 2048], kernel_size=5, num_inference_steps=10),
    # Push-T in simulation: one 96x96 camera cropped to 84x84.
    "sim": dict(action_dim=2, obs_horizon=2, pred_horizon=16, action_horizon=8,
                lowdim_obs={"robot_pose": 2}, cameras={"camera0": [96, 96]}, crop=[84, 84],
                down_dims=[256, 512, 1024], kernel_size=5, num_inference_steps=10),
    # Smoke-test size (seconds on a CPU); not a meaningful timing.
    "tiny": dict(action_dim=2, obs_horizon=2, pred_horizon=16, action_horizon=8,
                 lowdim_obs={"robot_pose": 2}, cameras={"camera0": [48, 48]}, crop=[40, 40],
                 down_dims=[32, 64], kernel_size=3, diffusion_step_embed_dim=32,
                 num_inference_steps=4),
}


def build(preset: str, backbone: str | None = None, steps: int | None = None,
          device: str = "cpu") -> DiffusionPolicy:
    kw = dict(PRESETS[preset])
    if backbone:
        kw["backbone"] = backbone
    if steps:
        kw["num_inference_steps"] = steps
    cfg = PolicyConfig(**kw)
    policy = DiffusionPolicy(cfg)
    norm = LinearNormalizer()
    for k, d in {"action": cfg.action_dim, **cfg.lowdim_obs}.items():
        norm.set_limits(k, -torch.ones(d), torch.ones(d))
    policy.set_normalizer(norm)
    return policy.to(device).eval()


def random_obs(cfg: PolicyConfig, batch: int, device, generator=None) -> dict:
    obs = {}
    for k, (h, w) in cfg.cameras.items():
        obs[k] = torch.rand(batch, cfg.obs_horizon, 3, h, w, generator=generator).to(device)
    for k, d in cfg.lowdim_obs.items():
        obs[k] = (torch.rand(batch, cfg.obs_horizon, d, generator=generator) * 2 - 1).to(device)
    return obs


def _timer(device: torch.device):
    cuda = device.type == "cuda"

    def measure(fn, repeats: int, warmup: int) -> list[float]:
        for _ in range(warmup):
            fn()
        out = []
        for _ in range(repeats):
            if cuda:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize(device)
            out.append((time.perf_counter() - t0) * 1e3)
        return out

    return measure


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    # Nearest-rank percentile: honest for the handful of repeats a benchmark run uses.
    idx = min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))
    return s[idx]


def _r(x: float) -> float:
    return round(float(x), 3)


def run_inference(preset: str | None, device: str = "cpu", steps: int | None = None, repeats: int = 20,
                  warmup: int = 3, batch: int = 1, backbone: str | None = None, checkpoint=None) -> dict:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench: --device cuda requested but CUDA is not available")
    torch.manual_seed(0)
    if checkpoint is not None:
        from .checkpoint import load_checkpoint
        policy = load_checkpoint(checkpoint, device=device)
        if steps:
            policy.config.num_inference_steps = steps
    else:
        policy = build(preset, backbone=backbone, steps=steps, device=device)
    cfg = policy.config
    gen = torch.Generator().manual_seed(0)
    obs = random_obs(cfg, batch, dev, gen)
    measure = _timer(dev)

    with torch.no_grad():
        cond = policy.encode_obs(obs, latest=True)
        x = torch.randn(batch, cfg.pred_horizon, cfg.action_dim, device=dev)
        t = torch.full((batch,), cfg.num_train_timesteps // 2, device=dev, dtype=torch.long)
        enc_ms = measure(lambda: policy.encode_obs(obs, latest=True), repeats, warmup)
        step_ms = measure(lambda: policy._denoise(x, t, cond), repeats, warmup)
    total_ms = measure(lambda: policy.predict_action(obs, generator=gen), repeats, warmup)
    reference = None
    if cfg.backbone == "unet" and dev.type == "cpu" and batch == 1:
        from .unet import Conv1d
        Conv1d.fast_batch1 = False
        try:
            with torch.no_grad():
                ref_step = measure(lambda: policy._denoise(x, t, cond), repeats, warmup)
            ref_total = measure(lambda: policy.predict_action(obs, generator=gen), repeats, warmup)
        finally:
            Conv1d.fast_batch1 = True
        reference = {"denoise_step_ms": _r(statistics.median(ref_step)),
                     "predict_action_ms": _r(statistics.median(ref_total))}

    def count(m):
        return sum(p.numel() for p in m.parameters())

    def summary(xs):
        return {"median": _r(statistics.median(xs)), "p90": _r(_pct(xs, 0.9)),
                "max": _r(max(xs))}

    return {
        "preset": preset,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "device": str(dev),
        "device_name": (torch.cuda.get_device_name(dev) if dev.type == "cuda"
                        else f"cpu ({torch.get_num_threads()} threads)"),
        "torch": torch.__version__,
        "backbone": cfg.backbone,
        "batch": batch,
        "cameras": cfg.cameras,
        "crop": cfg.crop,
        "down_dims": cfg.down_dims if cfg.backbone == "unet" else None,
        "obs_horizon": cfg.obs_horizon,
        "pred_horizon": cfg.pred_horizon,
        "action_horizon": cfg.action_horizon,
        "denoising_steps": cfg.num_inference_steps,
        "repeats": repeats,
        "warmup": warmup,
        "params": {"total": count(policy), "encoder": count(policy.obs_encoder),
                   "noise_net": count(policy.noise_net)},
        "encoder_ms": summary(enc_ms),
        "denoise_step_ms": summary(step_ms),
        "predict_action_ms": summary(total_ms),
        "pytorch_conv1d": reference,
    }


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="dp-ros bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("inference", help="policy inference latency (random weights and inputs)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--preset", choices=sorted(PRESETS))
    which.add_argument("--checkpoint", help="a trained checkpoint directory (its network, its DDIM steps)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda (default: cuda when available)")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: preset's, 10)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--backbone", choices=["unet", "transformer"], default=None)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's); on a busy machine 1 is steadier")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.batch < 1 or args.warmup < 0:
        parser.error("--repeats and --batch must be >= 1, --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_inference(args.preset, device=args.device, steps=args.steps,
                           repeats=args.repeats, warmup=args.warmup, batch=args.batch,
                           backbone=args.backbone, checkpoint=args.checkpoint)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
