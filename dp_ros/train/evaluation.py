"""Offline evaluation: action MSE and diffusion loss of a policy on fixed, evenly spread dataset
windows with fixed sampling noise (comparable across evals), and the eval images for TensorBoard."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from dp_ros.policy.config import PolicyConfig
from dp_ros.policy.diffusion import DiffusionPolicy
from dp_ros.train.loss import training_loss
from dp_ros.train.seeding import draw_randomness, sample_seed


@torch.no_grad()
def evaluate_policy(policy: DiffusionPolicy, dataset, n_batches: int = 4, batch_size: int = 32,
                    seed: int = 0, n_samples: int = 0) -> dict:
    """Predict on n_batches * batch_size windows spread evenly over the dataset (the same ones
    every call, with the same sampling noise, so numbers are comparable across evals).
    Returns action_mse (all Tp steps), action_mse_executed (the Ta steps from To-1), loss (the
    diffusion loss with fixed per-window noise), n_windows, and `samples` (the first n_samples
    windows' demo/pred/obs for plotting) when n_samples > 0. Units: unnormalised actions."""
    cfg = policy.config
    n = len(dataset)
    if n == 0:
        raise ValueError("offline eval: the dataset has no windows")
    count = min(n, n_batches * batch_size)
    idx = np.unique(np.linspace(0, n - 1, count).round().astype(np.int64)).tolist()
    loader = DataLoader(Subset(dataset, idx), batch_size=batch_size, shuffle=False,
                        num_workers=0, generator=torch.Generator())
    lo, hi = cfg.obs_horizon - 1, cfg.obs_horizon - 1 + cfg.action_horizon
    se = se_exec = 0.0
    n_el = n_exec = 0
    loss_sum, n_loss = 0.0, 0
    samples = None
    was_training = policy.training
    policy.eval()
    try:
        for bi, batch in enumerate(loader):
            gen = torch.Generator(device=policy.device).manual_seed(sample_seed(seed, 0, bi))
            pred = policy.predict_action(batch["obs"], generator=gen)["action_pred"].float().cpu()
            demo = batch["action"].float()
            err = (pred - demo) ** 2
            se += float(err.sum())
            n_el += err.numel()
            se_exec += float(err[:, lo:hi].sum())
            n_exec += err[:, lo:hi].numel()
            B = demo.shape[0]
            seeds = [sample_seed(seed, 1, bi * batch_size + j) for j in range(B)]
            noise, ts, _ = draw_randomness(seeds, cfg, with_crop=False)
            loss_sum += float(training_loss(policy, batch, noise, ts)) * B
            n_loss += B
            if n_samples and samples is None:
                samples = {"demo": demo[:n_samples], "pred": pred[:n_samples],
                           "obs": {c: batch["obs"][c][:n_samples] for c in cfg.cameras}}
    finally:
        policy.train(was_training)
    out = {"action_mse": se / n_el, "action_mse_executed": se_exec / n_exec,
           "loss": loss_sum / n_loss, "n_windows": len(idx)}
    if n_samples:
        out["samples"] = samples
    return out


def offline_eval(policy: DiffusionPolicy, dataset, n_batches: int = 4, batch_size: int = 32,
                 seed: int = 0) -> float:
    """Action MSE (unnormalised units, all Tp steps) of predict_action against the demonstrated
    chunks on held-out windows; see evaluate_policy for the details and other metrics."""
    return evaluate_policy(policy, dataset, n_batches, batch_size, seed)["action_mse"]


def write_eval_images(writer, samples: dict, cfg: PolicyConfig, step: int) -> None:
    """evaluate_policy's samples as TensorBoard images: action chunks, observation frames."""
    from dp_ros.train.plots import action_chunks_image, obs_strip_image
    img = action_chunks_image(samples["demo"], samples["pred"], cfg.obs_horizon,
                              cfg.action_horizon)
    writer.add_image("eval/action_chunks", img, step, dataformats="HWC")
    if samples["obs"]:
        writer.add_image("eval/obs_frames", obs_strip_image(samples["obs"]), step,
                         dataformats="HWC")
