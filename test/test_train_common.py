"""Shared helpers for the test_train_* files (a synthetic reach store, a tiny config) and the
fast checks of the eval images."""

import numpy as np
import pytest
import torch

from dp_ros.data.replay_buffer import ReplayBuffer
from dp_ros.train.config import load_config

H = W = 48
FREQ = 10.0
FIXED_POSE = [0.55, 0.0, 0.05, 1.0, 0.0, 0.0, 0.0]
STORE_CONFIG = {"frequency": FREQ, "dt": 1.0 / FREQ, "cameras": {"top": "/camera/top/image"},
                "image_size": [H, W], "obs": {"robot_pose": "tcp_xy"}, "action_space": "xy",
                "fixed_pose": FIXED_POSE}


def make_store(path, n_episodes=6, length=24, seed=0, task="reach"):
    """Reach: the image shows a target blob; the TCP moves towards it; action = the next
    commanded xy (position control). Enough structure for a loss to drop in a few dozen steps."""
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer.create_or_open(path, STORE_CONFIG)
    ys, xs = np.mgrid[0:H, 0:W]
    for e in range(n_episodes):
        target = rng.uniform([0.4, -0.15], [0.7, 0.15])
        pose = rng.uniform([0.4, -0.15], [0.7, 0.15])
        poses, actions = [], []
        for _ in range(length):
            poses.append(pose.copy())
            pose = pose + 0.25 * (target - pose)
            actions.append(pose.copy())
        poses, actions = np.array(poses), np.array(actions)
        frames = np.zeros((length, H, W, 3), np.uint8)
        cy = (target[0] - 0.4) / 0.3 * (H - 1)
        cx = (target[1] + 0.15) / 0.3 * (W - 1)
        blob = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / 18.0)
        frames[..., 0] = (255 * blob).astype(np.uint8)
        for k, p in enumerate(poses):   # the arm: a green dot
            py = int(round((p[0] - 0.4) / 0.3 * (H - 1)))
            px = int(round((p[1] + 0.15) / 0.3 * (W - 1)))
            frames[k, max(py - 1, 0):py + 2, max(px - 1, 0):px + 2, 1] = 255
        buf.add_episode({"top": frames, "robot_pose": poses, "action": actions,
                         "timestamp": np.arange(length) / FREQ}, name=f"ep{e}",
                        info={"metadata": {"task": task}})
    return path


TINY_OVERRIDES = [
    "policy.obs_horizon=2", "policy.pred_horizon=8", "policy.action_horizon=4",
    "policy.down_dims=[16,32]", "policy.kernel_size=3", "policy.diffusion_step_embed_dim=16",
    "policy.image_feature_dim=8", "policy.num_keypoints=4", "policy.num_inference_steps=3",
    "policy.num_train_timesteps=20", "policy.pooling=avg",
    "training.batch_size=4", "training.num_workers=0", "training.num_threads=1",
    "training.lr=1e-3", "training.warmup_steps=2", "training.max_steps=6",
    "training.log_every=1", "training.eval_every=3", "training.checkpoint_every=3",
    "training.eval_batches=1", "training.eval_batch_size=4", "training.plot_samples=2",
    "training.seed=3", "data.val_ratio=0.2",
    # fp32 whatever the host CPU: `auto` is bf16 on AMX / AVX512-BF16 CPUs, and the exact-resume
    # and DDP-equivalence checks are fp32 properties (test_train_precision covers bf16).
    "training.mixed_precision='no'",
]


def tiny_config(store, *extra, crop=None):
    over = [f"data.path={store}", f"data.crop={crop}" if crop else "data.crop=null",
            *TINY_OVERRIDES, *extra]
    return load_config(None, over)


def test_plots_shapes():
    from dp_ros.train.plots import action_chunks_image, obs_strip_image
    demo = torch.linspace(0, 1, 3 * 8 * 2).reshape(3, 8, 2)
    img = action_chunks_image(demo, demo + 0.1, obs_horizon=2, action_horizon=4)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.shape[1] == 2 * 200 and img.shape[0] == 22 + 3 * 120
    # the two series are drawn in their colours
    assert (img == np.array([0, 150, 0], np.uint8)).all(-1).any()
    assert (img == np.array([220, 30, 30], np.uint8)).all(-1).any()
    strip = obs_strip_image({"top": torch.rand(2, 2, 3, 48, 64),
                             "wrist": torch.rand(2, 2, 3, 24, 24)}, max_height=48)
    assert strip.dtype == np.uint8 and strip.shape[0] == 2 * 48 + 2
    assert strip.shape[1] == 64 * 2 + 48 * 2 + 3 * 2
    with pytest.raises(ValueError):
        action_chunks_image(demo, demo[:2], 2, 4)
