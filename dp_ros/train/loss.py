"""The diffusion training loss with its randomness passed in (timesteps, noise, crop windows drawn
by dp_ros.train.seeding), used by the training step and by offline eval."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from dp_ros.policy.diffusion import DiffusionPolicy


def place_crop_at_centre(img: torch.Tensor, offsets: torch.Tensor, crop) -> torch.Tensor:
    """(B, T, C, H, W) images, (B, T, 2) window offsets -> images of the same shape whose centre
    h x w window holds the chosen window (the rest is zero; the encoder's centre crop never reads
    it). This lets the policy's own encoder apply our seeded crop through its centre crop."""
    B, T, C, H, W = img.shape
    h, w = crop
    n = B * T
    x = img.reshape(n, C, H, W)
    dev = x.device
    offsets = offsets.to(dev).reshape(n, 2)
    rows = (offsets[:, 0, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (offsets[:, 1, None] + torch.arange(w, device=dev))[:, None, None, :]
    win = x[torch.arange(n, device=dev)[:, None, None, None],
            torch.arange(C, device=dev)[None, :, None, None], rows, cols]
    out = x.new_zeros(x.shape)
    top, left = (H - h) // 2, (W - w) // 2
    out[:, :, top:top + h, left:left + w] = win
    return out.reshape(B, T, C, H, W)


@contextmanager
def _centre_crop_only(encoder: nn.Module):
    # ObsEncoder picks random vs centre crop from its own `training` flag only; its children
    # (ResNet + GroupNorm, no dropout) behave the same in either mode, so flipping just this
    # flag changes nothing but the crop.
    was = encoder.training
    encoder.training = False
    try:
        yield
    finally:
        encoder.training = was


def training_loss(policy: DiffusionPolicy, batch: dict, noise: torch.Tensor,
                  timesteps: torch.Tensor, crops: dict | None = None) -> torch.Tensor:
    """DiffusionPolicy.compute_loss with the randomness passed in (see dp_ros.train.trainer).
    crops: {camera: (B, To, 2)} offsets, used when the policy crops and is in train mode;
    without them the encoder crops as it would by itself."""
    cfg = policy.config
    dev = policy.device
    To = cfg.obs_horizon
    action = torch.as_tensor(batch["action"]).to(dev, policy.dtype)
    obs = {k: torch.as_tensor(v)[:, :To] for k, v in batch["obs"].items()}
    ctx = nullcontext()
    if crops is not None and cfg.crop is not None and policy.obs_encoder.training:
        for cam, off in crops.items():
            obs[cam] = place_crop_at_centre(obs[cam].to(dev), off, cfg.crop)
        ctx = _centre_crop_only(policy.obs_encoder)
    with ctx:
        return policy.compute_loss({"obs": obs, "action": action}, noise=noise, timesteps=timesteps)


class LossModule(nn.Module):
    """What DDP wraps: its forward is the loss, so gradient sync hooks see every parameter."""

    def __init__(self, policy: DiffusionPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, obs, action, noise, timesteps, crops):
        return training_loss(self.policy, {"obs": obs, "action": action}, noise, timesteps,
                             crops)
