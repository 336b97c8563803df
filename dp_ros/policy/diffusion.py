"""DiffusionPolicy: observation encoder + noise network + DDPM training / DDIM sampling.

Only the global-conditioning formulation exists here: observations (images and low-dim) are
encoded once into a condition vector and never diffused, so the encoder runs once per
predict_action whatever the number of denoising steps."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from torch import nn

from .config import PolicyConfig
from .normalizer import LinearNormalizer
from .transformer import TransformerForDiffusion
from .unet import ConditionalUnet1D
from .vision import ObsEncoder


def make_train_scheduler(config: PolicyConfig) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=config.num_train_timesteps,
                         beta_schedule=config.beta_schedule, variance_type="fixed_small",
                         clip_sample=config.clip_sample, prediction_type=config.prediction_type)


def make_inference_scheduler(config: PolicyConfig) -> DDIMScheduler:
    # Same betas as training; DDIM lets inference use far fewer steps than training.
    return DDIMScheduler(num_train_timesteps=config.num_train_timesteps,
                         beta_schedule=config.beta_schedule, clip_sample=config.clip_sample,
                         set_alpha_to_one=True, steps_offset=0,
                         prediction_type=config.prediction_type)


class DiffusionPolicy(nn.Module):
    def __init__(self, config: PolicyConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.normalizer = LinearNormalizer()
        self.obs_encoder = ObsEncoder(config)
        feat = self.obs_encoder.feature_dim
        if config.backbone == "unet":
            # a prefix-trained network also sees which steps are given (clean): one more channel
            self.noise_net = ConditionalUnet1D(
                input_dim=config.action_dim + (1 if config.train_prefix_steps else 0),
                output_dim=config.action_dim, global_cond_dim=feat * config.obs_horizon,
                diffusion_step_embed_dim=config.diffusion_step_embed_dim,
                down_dims=config.down_dims, kernel_size=config.kernel_size,
                n_groups=config.n_groups)
        else:
            self.noise_net = TransformerForDiffusion(
                input_dim=config.action_dim, output_dim=config.action_dim,
                horizon=config.pred_horizon, n_obs_steps=config.obs_horizon, cond_dim=feat,
                n_layer=config.n_layer, n_head=config.n_head, n_emb=config.n_emb,
                p_drop_emb=config.p_drop_emb, p_drop_attn=config.p_drop_attn,
                causal_attn=config.causal_attn, n_cond_layers=config.n_cond_layers)
        self.train_scheduler = make_train_scheduler(config)
        self.inference_scheduler = make_inference_scheduler(config)

    # --- helpers --------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def set_normalizer(self, normalizer: LinearNormalizer) -> None:
        """Copy the statistics in (the policy keeps its own module, on its own device)."""
        needed = ["action", *self.config.lowdim_obs]
        missing = [k for k in needed if k not in normalizer]
        if missing:
            raise ValueError(f"normalizer lacks statistics for {missing}")
        dims = {"action": self.config.action_dim, **self.config.lowdim_obs}
        for k in needed:
            if normalizer.dim(k) != dims[k]:
                raise ValueError(f"normalizer: {k!r} has {normalizer.dim(k)} dims, "
                                 f"config gives {dims[k]}")
        fresh = LinearNormalizer()
        fresh.load_state_dict(normalizer.state_dict())
        self.normalizer.stats = fresh.stats.to(self.device)

    def _check_normalizer(self) -> None:
        missing = [k for k in ["action", *self.config.lowdim_obs] if k not in self.normalizer]
        if missing:
            raise RuntimeError(f"policy normalizer has no statistics for {missing}; "
                               f"call set_normalizer() first")

    def _to_device(self, obs: dict) -> dict:
        dev = self.device
        keys = self.config.obs_keys
        missing = [k for k in keys if k not in obs]
        if missing:
            raise KeyError(f"observation keys {missing} missing (got {sorted(obs)})")
        out = {}
        for k in keys:
            x = torch.as_tensor(obs[k]).to(dev)
            # float64 numpy arrays would not run through float32 weights; uint8 images stay.
            out[k] = x.to(self.dtype) if x.is_floating_point() else x
        return out

    def encode_obs(self, obs: dict, latest: bool) -> torch.Tensor:
        """Normalise and encode the obs window -> (B, To, F). latest: use the last To steps
        (inference); else the first To (training samples whose window starts To-1 steps back)."""
        self._check_normalizer()
        obs = self.normalizer.normalize(self._to_device(obs))
        To = self.config.obs_horizon
        lead = {k: tuple(v.shape[:2]) for k, v in obs.items()}
        if any(v.ndim < 3 for v in obs.values()) or len(set(lead.values())) != 1:
            raise ValueError(f"observations must all be (B, T, ...) with the same B and T, "
                             f"got {lead}")
        T = next(iter(lead.values()))[1]
        if T < To:
            raise ValueError(f"observations need {To} time steps (obs_horizon), got {T}")
        obs = {k: (v[:, -To:] if latest else v[:, :To]) for k, v in obs.items()}
        return self.obs_encoder(obs)

    def _denoise(self, noisy, t, cond, given=None):
        """given: (B or 1, Tp, 1) bool, the steps given clean (prefix-trained networks only)."""
        if self.config.train_prefix_steps:
            mask = torch.zeros_like(noisy[..., :1]) if given is None else given.to(noisy.dtype).expand_as(noisy[..., :1])
            noisy = torch.cat([noisy, mask], dim=-1)
        if self.config.backbone == "unet":
            return self.noise_net(noisy, t, global_cond=cond.flatten(1))
        return self.noise_net(noisy, t, cond)

    # --- training -------------------------------------------------------------------------
    def compute_loss(self, batch: dict, noise: torch.Tensor | None = None,
                     timesteps: torch.Tensor | None = None) -> torch.Tensor:
        """batch = {"obs": {name: (B, >=To, ...)}, "action": (B, Tp, Da) unnormalised}
        -> scalar MSE between the sampled noise and its prediction. `noise` (B, Tp, Da) and
        `timesteps` (B,) are drawn here unless given (the trainer passes per-sample seeded ones
        so that data-parallel processes reproduce one process's batch)."""
        cfg = self.config
        action = torch.as_tensor(batch["action"]).to(self.device, self.dtype)
        if action.ndim != 3 or action.shape[1:] != (cfg.pred_horizon, cfg.action_dim):
            raise ValueError(f"batch['action'] must be (B, {cfg.pred_horizon}, {cfg.action_dim})"
                             f", got {tuple(action.shape)}")
        cond = self.encode_obs(batch["obs"], latest=False)
        naction = self.normalizer.normalize(action, "action")
        noise = torch.randn_like(naction) if noise is None else noise.to(self.device, naction.dtype)
        t = (torch.randint(0, cfg.num_train_timesteps, (naction.shape[0],), device=self.device)
             if timesteps is None else timesteps.to(self.device))
        noisy = self.train_scheduler.add_noise(naction, noise, t)
        target = noise if cfg.prediction_type == "epsilon" else naction
        if cfg.train_prefix_steps > 0:
            # a clean prefix of random length, given and not scored (see PolicyConfig)
            d = torch.randint(0, cfg.train_prefix_steps + 1, (naction.shape[0], 1, 1), device=self.device)
            given = torch.arange(cfg.pred_horizon, device=self.device).reshape(1, -1, 1) < d
            noisy = torch.where(given, naction, noisy)
            pred = self._denoise(noisy, t, cond, given)
            scored = (~given).expand_as(pred).float()
            return ((pred.float() - target.float()) ** 2 * scored).sum() / scored.sum().clamp(min=1.0)
        pred = self._denoise(noisy, t, cond)
        return F.mse_loss(pred.float(), target.float())   # fp32 loss under autocast

    # --- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def predict_action(self, obs: dict, generator: torch.Generator | None = None,
                       num_inference_steps: int | None = None, prefix: torch.Tensor | None = None,
                       prefix_weight: torch.Tensor | None = None, initial: torch.Tensor | None = None,
                       warm_start: float = 0.0, guidance: float = 0.0,
                       num_samples: int = 1) -> dict[str, torch.Tensor]:
        """obs: {name: (B, To, ...)} (the last To steps are used) ->
        {"action_pred": (B, Tp, Da), "action": (B, Ta, Da)}, unnormalised. "action" starts at
        the latest observation step: action_pred[:, To-1 : To-1+Ta].

        prefix (B, Tp, Da) unnormalised actions with prefix_weight (Tp,) in [0, 1]: inpainting
        (real-time chunking). Before every denoising step the sample is pulled toward the prefix
        noised to that step's level, x <- w * noised(prefix) + (1 - w) * x (replacement), so the
        network fills the free steps consistently with it; weight 1 freezes a step (it comes out
        equal to the prefix), a weight between 0 and 1 only pulls, 0 leaves it free. A network
        trained with train_prefix_steps gets its frozen steps clean instead of noised, as in
        training: replacement alone decides the free steps' mode at the noisiest steps, where
        the noised prefix carries almost no signal, and the mode then often ignores it.

        guidance > 0: the steps with a weight between 0 and 1 are guided instead of pulled (real-time
        chunking's soft mask, as Black, Galliker and Levine do it): at every denoising step the
        network's clean estimate is moved by the gradient, through the network, of the weighted
        distance between that estimate and the prefix (pseudo-inverse guidance, its weight capped
        by `guidance`: _guided_denoise). The whole chunk then moves to agree with the prefix where
        it is weighted, not only the weighted steps themselves; it costs a backward pass through
        the noise network per step. Frozen steps stay frozen as above.

        initial (B, Tp, Da) unnormalised, with warm_start in [0, 1): the sampler skips that share of
        its denoising steps and starts from `initial` noised to the first remaining step's level
        (SDEdit) instead of from pure noise. Given the executing plan on this chunk's grid, the
        mode is then the plan's (it is settled at the skipped, noisiest steps), and the skipped
        steps are network evaluations saved.

        num_samples > 1: that many chunks per observation, from independent noise (B * num_samples
        rows, each observation's together); the observation is encoded once."""
        cfg = self.config
        num_samples = int(num_samples)
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        cond = self.encode_obs(obs, latest=True)  # once, reused by every denoising step
        if num_samples > 1:
            cond = cond.repeat_interleave(num_samples, dim=0)
        B = cond.shape[0]
        shape = (B, cfg.pred_horizon, cfg.action_dim)
        gen_dev = generator.device if generator is not None else self.device
        x = torch.randn(shape, generator=generator, device=gen_dev, dtype=cond.dtype)
        x = x.to(self.device)
        known = w = None
        if prefix is not None:
            known, w = self._inpaint_target(prefix, prefix_weight, shape, cond.dtype)
        sched = self.inference_scheduler
        sched.set_timesteps(num_inference_steps or cfg.num_inference_steps, device=self.device)
        timesteps = sched.timesteps
        if initial is not None and warm_start > 0:
            if not 0 <= warm_start < 1:
                raise ValueError(f"warm_start must be in [0, 1), got {warm_start}")
            init = torch.as_tensor(initial, device=self.device, dtype=cond.dtype)
            init = init.unsqueeze(0).expand(shape[0], -1, -1) if init.ndim == 2 else init
            if tuple(init.shape) != shape or not torch.all(torch.isfinite(init)):
                raise ValueError(f"initial must be finite, {shape} (B, Tp, Da), got {tuple(init.shape)}")
            timesteps = timesteps[min(int(round(len(timesteps) * warm_start)), len(timesteps) - 1):]
            x = self.train_scheduler.add_noise(self.normalizer.normalize(init, "action"), x, timesteps[:1])
        if not (math.isfinite(guidance) and guidance >= 0):
            raise ValueError(f"guidance must be >= 0, got {guidance}")
        # guided: the soft steps (0 < w < 1) are steered through the network instead of pulled; the
        # frozen ones are still replaced, and are guided too unless the network is given them clean
        # (a prefix-trained network's own estimate there is untrained: nothing to steer by)
        guided = False
        if known is not None and guidance > 0:
            steer = torch.where(w >= 1, torch.zeros_like(w), w) if cfg.train_prefix_steps > 0 else w
            guided = bool(torch.any(steer > 0))
        pull = torch.where(w >= 1, w, torch.zeros_like(w)) if guided else w
        for t in timesteps:
            if known is not None:
                noise = torch.randn(shape, generator=generator, device=gen_dev, dtype=cond.dtype).to(self.device)
                x = pull * self.train_scheduler.add_noise(known, noise, t.reshape(1)) + (1 - pull) * x
                if cfg.train_prefix_steps > 0:
                    x = torch.where(w >= 1, known, x)
            given = None if known is None else w >= 1
            if guided:
                out = self._guided_denoise(x, t, cond, given, known, steer, float(guidance))
            else:
                out = self._denoise(x, t, cond, given)
            x = sched.step(out, t, x, generator=generator).prev_sample
        if known is not None:
            frozen = w >= 1
            x = torch.where(frozen, known, x)
        action_pred = self.normalizer.unnormalize(x, "action")
        if known is not None:   # frozen steps exactly as given, not through a normalise round trip
            action_pred = torch.where(frozen, prefix.to(action_pred), action_pred)
        start = cfg.obs_horizon - 1
        return {"action_pred": action_pred,
                "action": action_pred[:, start:start + cfg.action_horizon]}

    def _guided_denoise(self, x, t, cond, given, known, soft, max_weight):
        """The network's output at (x, t), corrected toward `known` where `soft` > 0 by
        pseudo-inverse guidance: the clean estimate x0_hat moves by c * J^T soft (known - x0_hat),
        J = d x0_hat / d x. Uncapped, c = 1 / sqrt(alpha_bar) (pseudo-inverse guidance with
        r^2 = 1 - alpha_bar: normalised actions have unit scale); real-time chunking caps its
        guidance weight at beta, which on this noise schedule is c <= beta * sqrt(1 - alpha_bar)
        (the flow time tau = sqrt(ab) / (sqrt(ab) + sqrt(1 - ab)) carries its cap over)."""
        abar = self.inference_scheduler.alphas_cumprod[int(t)].to(x.device, x.dtype)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            out = self._denoise(xg, t, cond, given)
            x0 = out if self.config.prediction_type == "sample" else (xg - (1 - abar).sqrt() * out) / abar.sqrt()
            (grad,) = torch.autograd.grad(x0, xg, grad_outputs=(soft * (known - x0)).detach())
        c = torch.minimum(max_weight * (1 - abar).sqrt(), 1 / abar.sqrt())
        x0 = x0.detach() + c * grad
        if self.config.prediction_type == "sample":
            return x0
        return (x - abar.sqrt() * x0) / (1 - abar).sqrt()

    def _inpaint_target(self, prefix, weight, shape, dtype):
        prefix = torch.as_tensor(prefix, device=self.device, dtype=dtype)
        if prefix.ndim == 2:
            prefix = prefix.unsqueeze(0).expand(shape[0], -1, -1)
        if tuple(prefix.shape) != shape:
            raise ValueError(f"prefix must be {shape} (B, Tp, Da), got {tuple(prefix.shape)}")
        if weight is None:
            raise ValueError("a prefix needs prefix_weight (Tp,)")
        w = torch.as_tensor(weight, device=self.device, dtype=dtype).reshape(1, -1, 1)
        if w.shape[1] != shape[1] or not torch.all((w >= 0) & (w <= 1)):
            raise ValueError(f"prefix_weight must be {shape[1]} values in [0, 1]")
        # steps with weight 0 may hold anything (NaN included): they never enter the sample
        prefix = torch.where(w > 0, prefix, torch.zeros_like(prefix))
        if not torch.all(torch.isfinite(prefix)):
            raise ValueError("prefix contains NaN or inf where its weight is positive")
        return self.normalizer.normalize(prefix, "action"), w
