"""Shared pieces of the sanity checks: seeding, a small CPU training loop (AdamW, cosine schedule
with warm-up, EMA weights for evaluation), batched sampling, and the MSE-regression baseline that
reuses the diffusion policy's noise network."""

import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# Small network: the checks must train in a couple of CPU minutes.
DEFAULT_NET = {"down_dims": [32, 64], "kernel_size": 3, "n_groups": 8, "diffusion_step_embed_dim": 32}


def seed_everything(seed, threads=1):
    # One intra-op thread: these nets are too small to gain from more, and on a shared 2-core box
    # a second thread mostly spins against other jobs (measured: slower and far more erratic).
    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def log(msg):
    print(f"[sanity] {msg}", file=sys.stderr, flush=True)


def make_config(obs, action, obs_horizon, pred_horizon, action_horizon, **overrides):
    from dp_ros.policy.config import PolicyConfig
    kw = dict(
        obs_horizon=obs_horizon, pred_horizon=pred_horizon, action_horizon=action_horizon,
        action_dim=action.shape[-1], lowdim_obs={k: v.shape[-1] for k, v in obs.items()},
        cameras={}, backbone="unet", num_train_timesteps=100, num_inference_steps=10, **DEFAULT_NET)
    kw.update(overrides)
    return PolicyConfig(**kw)


def make_normalizer(obs, action):
    from dp_ros.policy.normalizer import LinearNormalizer
    n = LinearNormalizer()
    n.fit({"action": action.reshape(-1, action.shape[-1]),
           **{k: v.reshape(-1, v.shape[-1]) for k, v in obs.items()}})
    return n


def _train(model, obs, action, seed, steps, batch_size, lr, warmup):
    """Minibatch training of any module exposing compute_loss(batch). Returns the EMA model."""
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from dp_ros.policy.ema import EMAModel

    g = torch.Generator().manual_seed(seed)
    obs_t = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in obs.items()}
    act_t = torch.as_tensor(action, dtype=torch.float32)
    n = len(act_t)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-6)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=warmup, num_training_steps=steps)
    ema = EMAModel(model)
    model.train()
    t0 = time.time()
    losses = []
    for step in range(steps):
        idx = torch.randint(0, n, (batch_size,), generator=g)
        loss = model.compute_loss({"obs": {k: v[idx] for k, v in obs_t.items()}, "action": act_t[idx]})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema.step(model)
        losses.append(loss.item())
        if (step + 1) % 500 == 0:
            log(f"step {step + 1}/{steps} loss {np.mean(losses[-100:]):.5f} ({time.time() - t0:.0f}s)")
    averaged = ema.averaged_model
    averaged.eval()
    info = {
        "train_steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "final_loss": float(np.mean(losses[-100:])),  # mean of the last 100 steps: single steps are noisy
        "train_wall_s": round(time.time() - t0, 2),
    }
    return averaged, info


def _fitted_policy(obs, action, obs_horizon, pred_horizon, action_horizon, seed, config_overrides):
    """A seeded DiffusionPolicy with its normaliser fitted: the diffusion policy itself, or the
    network the regression baseline reuses (same architecture, same initialisation)."""
    from dp_ros.policy.diffusion import DiffusionPolicy
    torch.manual_seed(seed)
    cfg = make_config(obs, action, obs_horizon, pred_horizon, action_horizon, **config_overrides)
    policy = DiffusionPolicy(cfg)
    policy.set_normalizer(make_normalizer(obs, action))
    return policy


def train_diffusion(obs, action, obs_horizon, pred_horizon, action_horizon, seed, steps,
                    batch_size=256, lr=1e-3, warmup=100, **config_overrides):
    policy = _fitted_policy(obs, action, obs_horizon, pred_horizon, action_horizon, seed, config_overrides)
    log(f"diffusion Tp={pred_horizon}: {sum(p.numel() for p in policy.parameters())} params, {steps} steps")
    return _train(policy, obs, action, seed, steps, batch_size, lr, warmup)


@torch.no_grad()
def sample_chunks(policy, obs, n_samples, seed, batch=1024, num_inference_steps=None, prefix=None,
                  prefix_weight=None, warm_start=0.0):
    """obs: {name: (N, To, D)} -> action_pred samples (N, n_samples, Tp, Da). Each observation is
    repeated n_samples times so every sample starts from its own initial noise. prefix (N, Tp, Da)
    with prefix_weight (Tp,): inpainted into every sample of its observation; with warm_start > 0
    the whole prefix chunk is also the sampler's starting point (predict_action's `initial`)."""
    g = torch.Generator().manual_seed(seed)
    n = len(next(iter(obs.values())))
    rep = {k: torch.as_tensor(np.repeat(v, n_samples, axis=0), dtype=torch.float32) for k, v in obs.items()}
    rep_prefix = None if prefix is None else torch.as_tensor(np.repeat(prefix, n_samples, axis=0), dtype=torch.float32)
    total = n * n_samples
    out = []
    for i in range(0, total, batch):
        out.append(policy.predict_action({k: v[i:i + batch] for k, v in rep.items()}, generator=g,
                                         num_inference_steps=num_inference_steps,
                                         prefix=None if rep_prefix is None else rep_prefix[i:i + batch],
                                         prefix_weight=prefix_weight, warm_start=warm_start,
                                         initial=None if rep_prefix is None or not warm_start
                                         else rep_prefix[i:i + batch])["action_pred"])
    pred = torch.cat(out).cpu().numpy()
    return pred.reshape(n, n_samples, *pred.shape[1:])


class RegressionPolicy(nn.Module):
    """The diffusion policy's noise network used as a plain regressor: same observation encoding
    and conditioning, the noisy-action input replaced by zeros and the diffusion step fixed at 0,
    output read as the (normalised) action chunk, MSE loss. This is the unimodal baseline the
    multimodality check contrasts against."""

    def __init__(self, diffusion_policy):
        super().__init__()
        self.inner = diffusion_policy

    def _forward(self, obs):
        p = self.inner
        cond = p.encode_obs(obs, latest=True).flatten(1)  # normalises; (B, To*F) as the U-Net takes it
        cfg = p.config
        zeros = torch.zeros(cond.shape[0], cfg.pred_horizon, cfg.action_dim, dtype=cond.dtype)
        return p.noise_net(zeros, 0, global_cond=cond)

    def compute_loss(self, batch):
        target = self.inner.normalizer.normalize(batch["action"], key="action")
        return F.mse_loss(self._forward(batch["obs"]), target)

    @torch.no_grad()
    def predict_action(self, obs, generator=None):
        naction = self._forward(obs)
        return {"action_pred": self.inner.normalizer.unnormalize(naction, key="action")}


def train_regression(obs, action, obs_horizon, pred_horizon, action_horizon, seed, steps,
                     batch_size=256, lr=1e-3, warmup=100, **config_overrides):
    inner = _fitted_policy(obs, action, obs_horizon, pred_horizon, action_horizon, seed, config_overrides)
    model = RegressionPolicy(inner)
    log(f"regression baseline Tp={pred_horizon}: {steps} steps")
    return _train(model, obs, action, seed, steps, batch_size, lr, warmup)


@torch.no_grad()
def predict_chunks(model, obs):
    t = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in obs.items()}
    return model.predict_action(t)["action_pred"].cpu().numpy()

