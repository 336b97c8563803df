"""A valid checkpoint with random weights: what `make deploy` runs until a trained model is in
models/, and what the graph tests drive (its actions roam the whole workspace)."""

from pathlib import Path

import numpy as np
import torch

from dp_ros.core.robot_features import DEFAULT_FIXED_POSE
from dp_ros.graph import default_config, load_params
from dp_ros.policy.checkpoint import save_checkpoint
from dp_ros.policy.config import PolicyConfig
from dp_ros.policy.diffusion import DiffusionPolicy
from dp_ros.policy.normalizer import LinearNormalizer

UNTRAINED_NOTE = ("UNTRAINED: random weights. The arm moves, but not towards any goal; "
                  "no trained model is in models/ yet.")


def make_untrained_checkpoint(path, task="reach", tiny=False, seed=0, config_file=None) -> Path:
    world = load_params(config_file or default_config())["sim_world_node"]
    lo, hi = np.asarray(world["task_xy_min"], float), np.asarray(world["task_xy_max"], float)
    size = [48, 48] if tiny else [96, 96]
    cfg = PolicyConfig(action_dim=2, obs_horizon=2, pred_horizon=16, action_horizon=8,
                       lowdim_obs={"robot_pose": 2}, cameras={"top": size},
                       crop=None if tiny else [84, 84],
                       down_dims=[32, 64] if tiny else [64, 128, 256],
                       diffusion_step_embed_dim=32 if tiny else 128,
                       num_inference_steps=4 if tiny else 10)
    torch.manual_seed(seed)
    policy = DiffusionPolicy(cfg)
    normalizer = LinearNormalizer()
    for key in ("action", "robot_pose"):
        normalizer.set_limits(key, lo, hi)
    policy.set_normalizer(normalizer)
    extra = {"task": task, "note": UNTRAINED_NOTE, "trained": False,
             "robot": {"obs_sources": {"robot_pose": "tcp_xy"}, "action_space": "xy",
                       "fixed_pose": world.get("home_pose", DEFAULT_FIXED_POSE)}}
    return save_checkpoint(path, policy, extra=extra)
