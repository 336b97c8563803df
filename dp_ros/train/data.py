"""Training data: what the replay buffer holds (inspect_data), the train / validation datasets,
the normaliser fitted to the training set, and the seeded data order and loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from dp_ros.core.action_space import ActionSpace
from dp_ros.core.robot_features import robot_spec
from dp_ros.data.dataset import SequenceDataset
from dp_ros.data.replay_buffer import ReplayBuffer
from dp_ros.policy.config import PolicyConfig
from dp_ros.policy.demo_motion import DemoMotion
from dp_ros.policy.normalizer import LinearNormalizer
from dp_ros.train.config import ConfigError, DataConfig, TrainConfig
from dp_ros.train.distributed import info
from dp_ros.train.seeding import sample_seed


def _frequency_from_timestamps(buf: ReplayBuffer) -> float | None:
    if "timestamp" not in buf or buf.n_steps < 2:
        return None
    ts = np.asarray(buf["timestamp"][:buf.n_steps], dtype=np.float64)
    ends = buf.episode_ends
    starts = np.concatenate([[0], ends[:-1]])
    diffs = np.concatenate([np.diff(ts[s:e]) for s, e in zip(starts, ends) if e - s > 1] or [[]])
    diffs = diffs[diffs > 0]
    return float(1.0 / np.median(diffs)) if len(diffs) else None


def inspect_data(cfg: TrainConfig) -> dict:
    """What the replay buffer holds, as the policy needs it (see resolve_policy_config), plus the
    checkpoint's robot spec and task."""
    d = cfg.data
    if not d.path:
        raise ConfigError("data.path is empty: set it to the zarr replay buffer "
                          "(e.g. data.path=data/reach.zarr)")
    try:
        buf = ReplayBuffer.open(d.path)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"data.path: {e}") from None
    store = buf.config
    keys = buf.keys
    if buf.n_episodes < 1:
        raise ConfigError(f"{d.path} holds no episodes")
    if "action" not in keys:
        raise ConfigError(f"{d.path} has no 'action' array (keys: {keys})")
    ndim = {k: len(buf[k].shape) for k in keys}
    images = [k for k in keys if ndim[k] == 4 and buf[k].shape[-1] == 3]
    lowdims = [k for k in keys if ndim[k] == 2 and k not in ("action", "timestamp")]
    store_cams = [c for c in store.get("cameras", {}) if c in images] or images
    store_obs = {k: v for k, v in dict(store.get("obs", {})).items() if k in lowdims}
    cameras = list(d.cameras) if d.cameras is not None else store_cams
    lowdim = list(d.lowdim) if d.lowdim is not None else (list(store_obs) or lowdims)
    bad = [c for c in cameras if c not in images]
    if bad:
        raise ConfigError(f"data.cameras: {bad} are not image arrays in {d.path} "
                          f"(cameras: {images})")
    bad = [k for k in lowdim if k not in lowdims]
    if bad:
        raise ConfigError(f"data.lowdim: {bad} are not low-dim arrays in {d.path} "
                          f"(low-dim keys: {lowdims})")
    cam_hw = {c: (list(d.image_size) if d.image_size else [int(x) for x in buf[c].shape[1:3]])
              for c in cameras}
    freq = store.get("frequency")
    freq = float(freq) if freq else _frequency_from_timestamps(buf)
    if freq is None:
        given = cfg.policy.get("control_frequency_hz")
        if given is None:
            raise ConfigError(f"{d.path} records no control frequency (no 'frequency' in its "
                              "config, no timestamps); set policy.control_frequency_hz")
        freq = float(given)
    action_dim = int(buf["action"].shape[1])
    lowdim_dims = {k: int(buf[k].shape[1]) for k in lowdim}
    raw_robot = {"obs_sources": {k: store_obs[k] for k in lowdim if k in store_obs}}
    if store.get("action_space"):
        raw_robot["action_space"] = store["action_space"]
    if store.get("fixed_pose") is not None:
        raw_robot["fixed_pose"] = store["fixed_pose"]
    try:
        robot = robot_spec({"robot": raw_robot}, lowdim_dims, action_dim)
    except ValueError as e:
        raise ConfigError(f"{d.path}: {e}") from None
    tasks = set()
    for ep in buf.episodes:
        t = (ep.get("metadata") or {}).get("task") or ep.get("task")
        if t:
            tasks.add(str(t))
    task = ",".join(sorted(tasks)) if tasks else (buf.attrs.get("task") or store.get("task"))
    if task and d.task and d.task != task:
        info(f"warning: data.task={d.task!r} but the data says {task!r}; using the data's")
    return {"path": str(Path(d.path).resolve()), "frequency": freq,
            "cameras": cam_hw, "lowdim": lowdim_dims, "action_dim": action_dim,
            "n_episodes": buf.n_episodes, "task": task or d.task, "robot": robot,
            "demo_motion": demo_motion_of(buf, robot)}


def demo_motion_of(buf: ReplayBuffer, robot: dict) -> dict | None:
    """The demonstrations' top speed and sharpest turn (DemoMotion) over the whole buffer, for the
    checkpoint; None when no episode is long enough to have a turn."""
    dims = ActionSpace(robot["action_space"], np.asarray(robot["fixed_pose"])).position_dims
    try:
        return DemoMotion.from_actions(buf["action"][:buf.n_steps], buf.episode_ends, dims).to_dict()
    except ValueError:
        return None


def make_dataset(path, pcfg: PolicyConfig, episodes, image_size=None,
                 image_cache_gb: float = 0.0) -> SequenceDataset:
    return SequenceDataset(path, obs_horizon=pcfg.obs_horizon, pred_horizon=pcfg.pred_horizon,
                           action_horizon=pcfg.action_horizon, camera_keys=list(pcfg.cameras),
                           lowdim_keys=list(pcfg.lowdim_obs), episodes=episodes,
                           image_size=image_size, image_cache_gb=image_cache_gb)


def make_train_val_sets(d: DataConfig, pcfg: PolicyConfig, train_episodes, val_episodes):
    """-> (train set, validation set or None: no validation episodes, or too short for one
    window, when offline eval uses training windows)."""
    train_set = make_dataset(d.path, pcfg, train_episodes, d.image_size, d.image_cache_gb)
    val_set = make_dataset(d.path, pcfg, val_episodes, d.image_size, d.image_cache_gb) \
        if val_episodes else None
    if val_set is not None and len(val_set) == 0:
        info("warning: the validation episodes are too short for one window; "
             "evaluating on training windows")
        val_set = None
    return train_set, val_set


def fit_normalizer(dataset: SequenceDataset, keys) -> LinearNormalizer:
    """Min/max limits of `keys` over the dataset."""
    stats = dataset.get_stats()
    normalizer = LinearNormalizer()
    for key in keys:
        normalizer.set_limits(key, stats[key]["min"], stats[key]["max"])
    return normalizer


class SeededBatchSampler:
    """Batches of dataset indices: per epoch a permutation seeded by (seed, epoch), cut into
    global batches of batch_size * world (the remainder dropped); rank r gets slice r of each.
    set_epoch(epoch, start) resumes part-way through an epoch."""

    def __init__(self, n: int, batch_size: int, rank: int = 0, world: int = 1, seed: int = 0):
        self.n, self.batch_size, self.rank, self.world, self.seed = n, batch_size, rank, world, seed
        self.epoch = 0
        self.start = 0

    @property
    def batches_per_epoch(self) -> int:
        return self.n // (self.batch_size * self.world)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.start)

    def __iter__(self):
        g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch))
        perm = torch.randperm(self.n, generator=g)
        G = self.batch_size * self.world
        for b in range(self.start, self.batches_per_epoch):
            lo = b * G + self.rank * self.batch_size
            yield perm[lo:lo + self.batch_size].tolist()


def make_train_loader(dataset, sampler: SeededBatchSampler, num_workers: int, pin_memory: bool,
                      seed: int) -> DataLoader:
    kw = {}
    if num_workers > 0:
        kw = {"persistent_workers": True, "prefetch_factor": 2}
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                      pin_memory=pin_memory, generator=torch.Generator().manual_seed(seed), **kw)
