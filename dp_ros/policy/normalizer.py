"""Per-dimension min/max normaliser to [-1, 1].

[-1, 1] and not zero-mean/unit-variance: the DDPM/DDIM samplers clip the predicted clean sample to
[-1, 1] at each step, so with z-scores part of the action space would be unreachable.
Images are not handled here (they arrive in [0, 1] and the encoder rescales them)."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

RANGE_EPS = 1e-4


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    return torch.as_tensor(np.asarray(x))


class _Stats(nn.Module):
    """x_norm = x * scale + offset, per last dimension; min/max kept for inspection."""

    def __init__(self, dim: int):
        super().__init__()
        for name in ("scale", "offset", "min", "max"):
            self.register_buffer(name, torch.zeros(dim))


class LinearNormalizer(nn.Module):
    """Maps each key (``action`` and every low-dim observation) to [-1, 1] per dimension.

    A module (buffers only, no parameters) so ``policy.to(device)`` moves it along."""

    def __init__(self):
        super().__init__()
        self.stats = nn.ModuleDict()

    # --- building -------------------------------------------------------------------------
    def fit(self, data: Mapping[str, object], range_eps: float = RANGE_EPS) -> "LinearNormalizer":
        """data: key -> array (..., D). Statistics are over every axis but the last.
        Keys already present are replaced, others kept."""
        for key, arr in data.items():
            x = _as_tensor(arr).detach().to(torch.float64)
            if x.ndim == 0:
                raise ValueError(f"normalizer.fit: {key!r} must have a feature dimension")
            x = x.reshape(-1, x.shape[-1])
            if x.shape[0] == 0:
                raise ValueError(f"normalizer.fit: {key!r} has no samples")
            if not torch.isfinite(x).all():
                raise ValueError(f"normalizer.fit: {key!r} contains NaN or inf")
            lo, hi = x.min(dim=0).values, x.max(dim=0).values
            self.set_limits(key, lo, hi, range_eps=range_eps)
        return self

    def set_limits(self, key: str, lo, hi, range_eps: float = RANGE_EPS) -> None:
        """Set [lo, hi] -> [-1, 1] directly (e.g. known workspace limits)."""
        lo = _as_tensor(lo).to(torch.float64).reshape(-1)
        hi = _as_tensor(hi).to(torch.float64).reshape(-1)
        if lo.shape != hi.shape:
            raise ValueError(f"normalizer: {key!r} lo and hi differ in shape")
        if "." in key:
            raise ValueError(f"normalizer: key {key!r} must not contain '.'")
        rng = hi - lo
        const = rng < range_eps
        # A (near-)constant dimension maps to 0 instead of dividing by ~0.
        scale = torch.where(const, torch.ones_like(rng), 2.0 / rng.clamp_min(range_eps))
        offset = torch.where(const, -(lo + hi) / 2.0, -1.0 - scale * lo)
        st = _Stats(lo.numel())
        st.scale.copy_(scale)
        st.offset.copy_(offset)
        st.min.copy_(lo)
        st.max.copy_(hi)
        ref = next(iter(self.buffers()), None)
        if ref is not None:
            st = st.to(ref.device)
        self.stats[key] = st

    # --- queries --------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return list(self.stats.keys())

    def __contains__(self, key) -> bool:
        return key in self.stats

    def dim(self, key: str) -> int:
        return self._get(key).scale.numel()

    def limits(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        st = self._get(key)
        return st.min.cpu().numpy().copy(), st.max.cpu().numpy().copy()

    def _get(self, key: str) -> _Stats:
        if key not in self.stats:
            raise KeyError(f"normalizer has no statistics for {key!r} (has {self.keys()}); "
                           f"fit it on the training data first")
        return self.stats[key]

    # --- mapping --------------------------------------------------------------------------
    def normalize(self, data, key: str | None = None):
        """Tensor (with key) -> tensor; dict -> dict, normalising the keys this normaliser knows
        and passing the others (images) through unchanged."""
        return self._apply_map(data, key, forward=True)

    def unnormalize(self, data, key: str | None = None):
        return self._apply_map(data, key, forward=False)

    def _apply_map(self, data, key, forward):
        if isinstance(data, Mapping):
            return {k: (self._one(k, v, forward) if k in self.stats else v)
                    for k, v in data.items()}
        if key is None:
            raise ValueError("normalize/unnormalize of a tensor needs key=")
        return self._one(key, data, forward)

    def _one(self, key, x, forward):
        st = self._get(key)
        x = _as_tensor(x)
        if not x.is_floating_point():
            x = x.float()
        if x.shape[-1] != st.scale.numel():
            raise ValueError(f"normalizer: {key!r} has {st.scale.numel()} dims but the input's "
                             f"last axis is {x.shape[-1]}")
        scale = st.scale.to(device=x.device, dtype=x.dtype)
        offset = st.offset.to(device=x.device, dtype=x.dtype)
        return x * scale + offset if forward else (x - offset) / scale

    # --- state ----------------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # Keys are data-dependent: create the entries a saved state has before the children load,
        # so an unfitted normaliser (e.g. in a freshly built policy) can receive a checkpoint.
        head = prefix + "stats."
        dims = {}
        for name, value in state_dict.items():
            if name.startswith(head) and name.endswith(".scale"):
                dims[name[len(head):-len(".scale")]] = value.numel()
        for key, d in dims.items():
            if key not in self.stats or self.stats[key].scale.numel() != d:
                self.stats[key] = _Stats(d)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def flat_state(self) -> dict[str, torch.Tensor]:
        """'{key}.{scale|offset|min|max}' -> tensor, for safetensors."""
        return {k[len("stats."):]: v.detach().cpu().contiguous()
                for k, v in self.state_dict().items()}

    @classmethod
    def from_flat_state(cls, flat: Mapping[str, torch.Tensor]) -> "LinearNormalizer":
        norm = cls()
        norm.load_state_dict({"stats." + k: v for k, v in flat.items()})
        return norm
