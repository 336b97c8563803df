"""Exponential moving average of the weights, with Diffusion Policy's warm-up schedule:

    decay(step) = clamp(1 - (1 + step / inv_gamma) ** -power, min_value, max_value)

so early averages follow the fast-changing weights and later ones average over ~1/(1-decay)
steps. The averaged model is what gets deployed."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .normalizer import LinearNormalizer


class EMAModel:
    def __init__(self, model: nn.Module, update_after_step: int = 0, inv_gamma: float = 1.0,
                 power: float = 0.75, min_value: float = 0.0, max_value: float = 0.9999):
        self.averaged_model = copy.deepcopy(model).eval()
        self.averaged_model.requires_grad_(False)
        self.update_after_step = update_after_step
        self.inv_gamma = inv_gamma
        self.power = power
        self.min_value = min_value
        self.max_value = max_value
        self.optimization_step = 0
        self.decay = 0.0

    def get_decay(self, optimization_step: int) -> float:
        step = max(0, optimization_step - self.update_after_step - 1)
        if step <= 0:
            return 0.0  # the first update copies the weights
        value = 1.0 - (1.0 + step / self.inv_gamma) ** -self.power
        return max(self.min_value, min(value, self.max_value))

    @torch.no_grad()
    def step(self, model: nn.Module) -> None:
        self.decay = self.get_decay(self.optimization_step)
        avg_params = dict(self.averaged_model.named_parameters())
        averaged, live = [], []
        for name, p in model.named_parameters():
            a = avg_params[name]
            if not p.requires_grad:
                a.copy_(p)  # frozen weights are copied, not averaged
            elif a.dtype == p.dtype and a.device == p.device:
                averaged.append(a)
                live.append(p.detach())
            else:
                a.mul_(self.decay).add_(p.detach().to(a.dtype), alpha=1.0 - self.decay)
        # decay*a + (1-decay)*p for every weight in one fused call: a few kernel launches instead
        # of two per tensor (hundreds of tensors; on a GPU a launch costs more than its arithmetic).
        if averaged:
            torch._foreach_lerp_(averaged, live, 1.0 - self.decay)
        # Buffers (normaliser statistics, masks) are not learned: track the live model's.
        src_mods = dict(model.named_modules())
        for name, mod in self.averaged_model.named_modules():
            if isinstance(mod, LinearNormalizer) and name in src_mods:
                mod.stats = copy.deepcopy(src_mods[name].stats)
        avg_bufs = dict(self.averaged_model.named_buffers())
        for name, b in model.named_buffers():
            if name in avg_bufs and avg_bufs[name].shape == b.shape:
                avg_bufs[name].copy_(b)
        self.optimization_step += 1

    def state_dict(self) -> dict:
        return {"averaged_model": self.averaged_model.state_dict(),
                "optimization_step": self.optimization_step, "decay": self.decay,
                "update_after_step": self.update_after_step, "inv_gamma": self.inv_gamma,
                "power": self.power, "min_value": self.min_value, "max_value": self.max_value}

    def load_state_dict(self, state: dict) -> None:
        self.averaged_model.load_state_dict(state["averaged_model"])
        for k in ("optimization_step", "decay", "update_after_step", "inv_gamma", "power",
                  "min_value", "max_value"):
            if k in state:
                setattr(self, k, state[k])
