"""TransformerForDiffusion: the time-series diffusion transformer backbone.

Noisy action tokens are the decoder input (causal self-attention); the memory it cross-attends to
is [diffusion-step token, one token per observation step]."""

from __future__ import annotations

import torch
from torch import nn

from .unet import SinusoidalPosEmb, timesteps_to_batch


class TransformerForDiffusion(nn.Module):
    """sample (B, Tp, input_dim), timestep (B,) or int, cond (B, To, cond_dim)
    -> (B, Tp, output_dim)."""

    def __init__(self, input_dim: int, output_dim: int, horizon: int, n_obs_steps: int,
                 cond_dim: int, n_layer: int = 8, n_head: int = 4, n_emb: int = 256,
                 p_drop_emb: float = 0.0, p_drop_attn: float = 0.3, causal_attn: bool = True,
                 n_cond_layers: int = 0):
        super().__init__()
        self.horizon, self.n_obs_steps, self.cond_dim = horizon, n_obs_steps, cond_dim
        n_mem = 1 + n_obs_steps

        self.input_emb = nn.Linear(input_dim, n_emb)
        self.pos_emb = nn.Parameter(torch.zeros(1, horizon, n_emb))
        self.drop = nn.Dropout(p_drop_emb)
        self.time_emb = SinusoidalPosEmb(n_emb)
        self.cond_obs_emb = nn.Linear(cond_dim, n_emb)
        self.cond_pos_emb = nn.Parameter(torch.zeros(1, n_mem, n_emb))
        if n_cond_layers > 0:
            layer = nn.TransformerEncoderLayer(n_emb, n_head, 4 * n_emb, p_drop_attn,
                                               activation="gelu", batch_first=True,
                                               norm_first=True)
            self.cond_encoder = nn.TransformerEncoder(layer, n_cond_layers,
                                                      enable_nested_tensor=False)
        else:
            self.cond_encoder = nn.Sequential(
                nn.Linear(n_emb, 4 * n_emb), nn.Mish(), nn.Linear(4 * n_emb, n_emb))
        layer = nn.TransformerDecoderLayer(n_emb, n_head, 4 * n_emb, p_drop_attn,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, n_layer)

        if causal_attn:
            # Self-attention: action i sees actions <= i.
            tgt = torch.ones(horizon, horizon).triu(1).bool()
            # Cross-attention: action i sees the step token and observation steps <= i (action i
            # and observation i share a time step), so no action looks at a later observation.
            t = torch.arange(horizon)[:, None]
            s = torch.arange(n_mem)[None, :]
            mem = ~(s - 1 <= t)
            self.register_buffer("tgt_mask", _additive(tgt), persistent=False)
            self.register_buffer("memory_mask", _additive(mem), persistent=False)
        else:
            self.tgt_mask = None
            self.memory_mask = None

        self.ln_f = nn.LayerNorm(n_emb)
        self.head = nn.Linear(n_emb, output_dim)
        self.apply(_init_weights)
        nn.init.normal_(self.pos_emb, std=0.02)
        nn.init.normal_(self.cond_pos_emb, std=0.02)

    def forward(self, sample: torch.Tensor, timestep, cond: torch.Tensor) -> torch.Tensor:
        B, T, _ = sample.shape
        if T != self.horizon:
            raise ValueError(f"sample has {T} steps, the transformer was built for {self.horizon}")
        if cond.ndim != 3 or cond.shape[1:] != (self.n_obs_steps, self.cond_dim):
            raise ValueError(f"cond must be (B, {self.n_obs_steps}, {self.cond_dim}), "
                             f"got {tuple(cond.shape)}")
        t_tok = self.time_emb(timesteps_to_batch(timestep, B, sample.device)).unsqueeze(1)
        mem = torch.cat([t_tok.to(sample.dtype), self.cond_obs_emb(cond)], dim=1)
        mem = self.cond_encoder(self.drop(mem + self.cond_pos_emb))
        x = self.drop(self.input_emb(sample) + self.pos_emb)
        x = self.decoder(x, mem, tgt_mask=self.tgt_mask, memory_mask=self.memory_mask)
        return self.head(self.ln_f(x))


def _additive(blocked: torch.Tensor) -> torch.Tensor:
    return torch.zeros(blocked.shape).masked_fill(blocked, float("-inf"))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
