"""ConditionalUnet1D: the CNN noise-prediction network of Diffusion Policy.

A 1-D U-Net over the action sequence's time axis. The observation features and the diffusion step
condition every residual block through FiLM (per-channel scale and bias)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SinusoidalPosEmb(nn.Module):
    """Transformer-style sinusoidal embedding of a (diffusion step) scalar."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:
            raise ValueError("SinusoidalPosEmb dim must be even")
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32)
                          * (-math.log(10000.0) / max(half - 1, 1)))
        args = t.to(torch.float32)[:, None] * freqs[None, :]
        return torch.cat([args.sin(), args.cos()], dim=-1)


def timesteps_to_batch(timestep, batch: int, device) -> torch.Tensor:
    """int / 0-d / (B,) timestep -> (B,) tensor on device."""
    if not torch.is_tensor(timestep):
        timestep = torch.tensor([timestep], device=device)
    timestep = timestep.to(device).reshape(-1)
    return timestep.expand(batch) if timestep.numel() == 1 else timestep


class Conv1d(nn.Conv1d):
    """nn.Conv1d (same parameters, same results) with a faster CPU path for batch 1, the
    deployed policy's case. PyTorch sends a batch-1 1-D convolution on the CPU to its generic
    im2col kernel: ~150 us per call at this network's sizes on the development machine, where one
    linear layer over the unfolded input takes a third of that (`dp-ros bench inference` times
    both: fast_batch1 = False is PyTorch's path)."""

    fast_batch1 = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not self.fast_batch1 or x.device.type != "cpu" or x.shape[0] != 1 or self.groups != 1
                or self.dilation != (1,) or self.padding_mode != "zeros" or isinstance(self.padding, str)):
            return super().forward(x)
        (k,), (stride,), (pad,) = self.kernel_size, self.stride, self.padding
        if pad:
            x = F.pad(x, (pad, pad))
        # (1, C, L) -> windows (1, L_out, C * k), in the order of the weight's (C, k) entries
        windows = x.unfold(2, k, stride).transpose(1, 2).reshape(1, -1, self.in_channels * k)
        return F.linear(windows, self.weight.reshape(self.out_channels, -1), self.bias).transpose(1, 2)


class Conv1dBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish; 'same' padding keeps the sequence length."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, n_groups: int):
        super().__init__()
        self.block = nn.Sequential(
            Conv1d(in_ch, out_ch, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_ch),
            nn.Mish(),
        )

    def forward(self, x):
        return self.block(x)


class ConditionalResidualBlock1D(nn.Module):
    """Two conv blocks; FiLM from the condition between them; 1x1 conv on the skip if needed."""

    def __init__(self, in_ch, out_ch, cond_dim, kernel_size, n_groups, cond_predict_scale=True):
        super().__init__()
        self.out_ch = out_ch
        self.cond_predict_scale = cond_predict_scale
        self.block0 = Conv1dBlock(in_ch, out_ch, kernel_size, n_groups)
        self.block1 = Conv1dBlock(out_ch, out_ch, kernel_size, n_groups)
        self.film = nn.Sequential(
            nn.Mish(), nn.Linear(cond_dim, out_ch * 2 if cond_predict_scale else out_ch))
        self.residual = Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, cond):
        h = self.block0(x)
        film = self.film(cond).unsqueeze(-1)  # B, C(*2), 1: broadcast over time
        if self.cond_predict_scale:
            scale, bias = film[:, : self.out_ch], film[:, self.out_ch:]
            h = scale * h + bias
        else:
            h = h + film
        h = self.block1(h)
        return h + self.residual(x)


class ConditionalUnet1D(nn.Module):
    """sample (B, T, input_dim), timestep (B,) or int, global_cond (B, global_cond_dim)
    -> predicted noise (B, T, input_dim). T must be divisible by 2**(len(down_dims)-1).

    Topology follows the reference implementation (skip of the deepest level joins right after
    the middle blocks, each up level upsamples after its residual blocks), so parameter counts and
    compute match the paper's numbers for the same down_dims."""

    def __init__(self, input_dim: int, global_cond_dim: int, diffusion_step_embed_dim: int = 128,
                 down_dims=(256, 512, 1024), kernel_size: int = 5, n_groups: int = 8,
                 cond_predict_scale: bool = True, output_dim: int | None = None):
        super().__init__()
        dims = [input_dim, *down_dims]
        dsed = diffusion_step_embed_dim
        self.step_encoder = nn.Sequential(
            SinusoidalPosEmb(dsed), nn.Linear(dsed, dsed * 4), nn.Mish(), nn.Linear(dsed * 4, dsed))
        cond_dim = dsed + global_cond_dim
        self.global_cond_dim = global_cond_dim

        def res(i, o):
            return ConditionalResidualBlock1D(i, o, cond_dim, kernel_size, n_groups,
                                              cond_predict_scale)

        pairs = list(zip(dims[:-1], dims[1:]))
        self.down = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(pairs):
            last = i == len(pairs) - 1
            self.down.append(nn.ModuleList([
                res(c_in, c_out), res(c_out, c_out),
                Conv1d(c_out, c_out, 3, stride=2, padding=1) if not last else nn.Identity(),
            ]))
        mid = dims[-1]
        self.mid = nn.ModuleList([res(mid, mid), res(mid, mid)])
        self.up = nn.ModuleList()
        for c_in, c_out in reversed(pairs[1:]):
            self.up.append(nn.ModuleList([
                res(c_out * 2, c_in), res(c_in, c_in),
                nn.ConvTranspose1d(c_in, c_in, 4, stride=2, padding=1),
            ]))
        self.final = nn.Sequential(
            Conv1dBlock(down_dims[0], down_dims[0], kernel_size, n_groups),
            Conv1d(down_dims[0], input_dim if output_dim is None else output_dim, 1))

    def forward(self, sample: torch.Tensor, timestep, global_cond: torch.Tensor | None = None):
        x = sample.transpose(1, 2)  # B, C, T for Conv1d
        cond = self.step_encoder(timesteps_to_batch(timestep, x.shape[0], x.device))
        if self.global_cond_dim:
            if global_cond is None or global_cond.shape[-1] != self.global_cond_dim:
                got = None if global_cond is None else tuple(global_cond.shape)
                raise ValueError(f"global_cond must be (B, {self.global_cond_dim}), got {got}")
            cond = torch.cat([cond, global_cond], dim=-1)
        skips = []
        for block0, block1, downsample in self.down:
            x = block1(block0(x, cond), cond)
            skips.append(x)
            x = downsample(x)
        for block in self.mid:
            x = block(x, cond)
        for block0, block1, upsample in self.up:
            x = torch.cat([x, skips.pop()], dim=1)
            x = upsample(block1(block0(x, cond), cond))
        return self.final(x).transpose(1, 2)
