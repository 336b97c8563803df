"""Seeded randomness for training: per-sample random numbers drawn from seeds built out of
(seed, step, index) (see the trainer module's docstring for why), and the process RNGs (seeding
them, and capturing / restoring their state for an exact resume)."""

from __future__ import annotations

import random

import numpy as np
import torch

from dp_ros.policy.config import PolicyConfig


def sample_seed(*parts: int) -> int:
    """A 63-bit seed from a tuple of non-negative ints (SeedSequence mixes them well)."""
    a, b = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32)
    return (int(a) << 31) ^ int(b)


def draw_randomness(seeds, cfg: PolicyConfig, with_crop: bool = True):
    """Per sample: diffusion timestep, noise (Tp, Da) and, when the config crops, one crop
    offset (top, left) per camera and observation step. -> (noise, timesteps, crops|None)."""
    B, To, Tp, Da = len(seeds), cfg.obs_horizon, cfg.pred_horizon, cfg.action_dim
    noise = torch.empty(B, Tp, Da)
    timesteps = torch.empty(B, dtype=torch.long)
    crop = cfg.crop if (with_crop and cfg.cameras) else None
    crops = {cam: torch.empty(B, To, 2, dtype=torch.long) for cam in cfg.cameras} if crop else None
    for i, s in enumerate(seeds):
        g = torch.Generator().manual_seed(int(s))
        timesteps[i] = torch.randint(0, cfg.num_train_timesteps, (1,), generator=g)[0]
        noise[i] = torch.randn(Tp, Da, generator=g)
        if crops is not None:
            for cam, (H, W) in cfg.cameras.items():
                crops[cam][i, :, 0] = torch.randint(0, H - crop[0] + 1, (To,), generator=g)
                crops[cam][i, :, 1] = torch.randint(0, W - crop[1] + 1, (To,), generator=g)
    return noise, timesteps, crops


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict:
    """The process's Python, NumPy, torch (and CUDA, on a CUDA device) RNG states."""
    st = {"python": random.getstate(), "numpy": np.random.get_state(),
          "torch": torch.get_rng_state()}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def set_rng_state(st: dict, device: torch.device) -> None:
    """Restore what rng_state captured."""
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)
