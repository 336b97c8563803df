"""The training loop: data, normaliser, optimiser, EMA, checkpoints, logging, offline eval, DDP.

Reproducibility and data parallelism rest on one rule: every random number a training sample
needs (diffusion timestep, noise, crop window) is drawn from a generator seeded by
(seed, step, the sample's index in the *global* batch), and the data order comes from a
permutation seeded by (seed, epoch). So
  * N processes with batch B see the same global batch and the same per-sample randomness as
    one process with batch N*B; DDP averages the N per-process mean losses' gradients, which is
    the gradient of the mean over N*B (equal counts per rank), and GroupNorm has no batch
    statistics, so the updates agree up to float summation order;
  * resuming at step k replays exactly what an uninterrupted run does from step k, whatever the
    DataLoader's workers or prefetching did.
The one exception is dropout (transformer backbone only), which uses the process's torch RNG:
it is restored on resume but differs between 1 and N processes."""

from __future__ import annotations

import copy
import json
import math
import os
import random
import shlex
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Subset

from dp_ros.core.robot_features import robot_spec
from dp_ros.data.dataset import SequenceDataset, train_val_split
from dp_ros.data.replay_buffer import ReplayBuffer
from dp_ros.policy.checkpoint import load_training_state, save_checkpoint
from dp_ros.policy.config import PolicyConfig
from dp_ros.policy.diffusion import DiffusionPolicy
from dp_ros.policy.ema import EMAModel
from dp_ros.policy.normalizer import LinearNormalizer
from dp_ros.train.config import ConfigError, TrainConfig, resolve_policy_config

TRAINING_STATE_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"


def info(msg: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"[dp-train] {msg}", file=sys.stderr, flush=True)


# --- seeded per-sample randomness ------------------------------------------------------------
def sample_seed(*parts: int) -> int:
    """A 63-bit seed from a tuple of non-negative ints (SeedSequence mixes them well)."""
    a, b = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32)
    return (int(a) << 31) ^ int(b)


def draw_randomness(seeds, cfg: PolicyConfig, with_crop: bool = True):
    """Per sample: diffusion timestep, noise (Tp, Da) and, when the config crops, one crop
    offset (top, left) per camera and observation step. -> (noise, timesteps, crops|None)."""
    B, To, Tp, Da = len(seeds), cfg.obs_horizon, cfg.pred_horizon, cfg.action_dim
    noise = torch.empty(B, Tp, Da)
    timesteps = torch.empty(B, dtype=torch.long)
    crop = cfg.crop if (with_crop and cfg.cameras) else None
    crops = {cam: torch.empty(B, To, 2, dtype=torch.long) for cam in cfg.cameras} if crop else None
    for i, s in enumerate(seeds):
        g = torch.Generator().manual_seed(int(s))
        timesteps[i] = torch.randint(0, cfg.num_train_timesteps, (1,), generator=g)[0]
        noise[i] = torch.randn(Tp, Da, generator=g)
        if crops is not None:
            for cam, (H, W) in cfg.cameras.items():
                crops[cam][i, :, 0] = torch.randint(0, H - crop[0] + 1, (To,), generator=g)
                crops[cam][i, :, 1] = torch.randint(0, W - crop[1] + 1, (To,), generator=g)
    return noise, timesteps, crops


def place_crop_at_centre(img: torch.Tensor, offsets: torch.Tensor, crop) -> torch.Tensor:
    """(B, T, C, H, W) images, (B, T, 2) window offsets -> images of the same shape whose centre
    h x w window holds the chosen window (the rest is zero; the encoder's centre crop never reads
    it). This lets the policy's own encoder apply our seeded crop through its centre crop."""
    B, T, C, H, W = img.shape
    h, w = crop
    n = B * T
    x = img.reshape(n, C, H, W)
    dev = x.device
    offsets = offsets.to(dev).reshape(n, 2)
    rows = (offsets[:, 0, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (offsets[:, 1, None] + torch.arange(w, device=dev))[:, None, None, :]
    win = x[torch.arange(n, device=dev)[:, None, None, None],
            torch.arange(C, device=dev)[None, :, None, None], rows, cols]
    out = x.new_zeros(x.shape)
    top, left = (H - h) // 2, (W - w) // 2
    out[:, :, top:top + h, left:left + w] = win
    return out.reshape(B, T, C, H, W)


@contextmanager
def _centre_crop_only(encoder: nn.Module):
    # ObsEncoder picks random vs centre crop from its own `training` flag only; its children
    # (ResNet + GroupNorm, no dropout) behave the same in either mode, so flipping just this
    # flag changes nothing but the crop.
    was = encoder.training
    encoder.training = False
    try:
        yield
    finally:
        encoder.training = was


def training_loss(policy: DiffusionPolicy, batch: dict, noise: torch.Tensor,
                  timesteps: torch.Tensor, crops: dict | None = None) -> torch.Tensor:
    """DiffusionPolicy.compute_loss with the randomness passed in (see the module docstring).
    crops: {camera: (B, To, 2)} offsets, used when the policy crops and is in train mode;
    without them the encoder crops as it would by itself."""
    cfg = policy.config
    dev = policy.device
    To = cfg.obs_horizon
    action = torch.as_tensor(batch["action"]).to(dev, policy.dtype)
    obs = {k: torch.as_tensor(v)[:, :To] for k, v in batch["obs"].items()}
    ctx = nullcontext()
    if crops is not None and cfg.crop is not None and policy.obs_encoder.training:
        for cam, off in crops.items():
            obs[cam] = place_crop_at_centre(obs[cam].to(dev), off, cfg.crop)
        ctx = _centre_crop_only(policy.obs_encoder)
    with ctx:
        return policy.compute_loss({"obs": obs, "action": action}, noise=noise, timesteps=timesteps)


class _LossModule(nn.Module):
    """What DDP wraps: its forward is the loss, so gradient sync hooks see every parameter."""

    def __init__(self, policy: DiffusionPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, obs, action, noise, timesteps, crops):
        return training_loss(self.policy, {"obs": obs, "action": action}, noise, timesteps,
                             crops)


# --- data order ------------------------------------------------------------------------------
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


# --- data ------------------------------------------------------------------------------------
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
            "n_episodes": buf.n_episodes, "task": task or d.task, "robot": robot}


def make_dataset(path, pcfg: PolicyConfig, episodes, image_size=None) -> SequenceDataset:
    return SequenceDataset(path, obs_horizon=pcfg.obs_horizon, pred_horizon=pcfg.pred_horizon,
                           action_horizon=pcfg.action_horizon, camera_keys=list(pcfg.cameras),
                           lowdim_keys=list(pcfg.lowdim_obs), episodes=episodes,
                           image_size=image_size)


# --- offline eval ----------------------------------------------------------------------------
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


# --- distributed -----------------------------------------------------------------------------
@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def pick_device(pref: str, local_rank: int | None = None) -> torch.device:
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(pref)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"training.device={pref!r} but CUDA is not available here")
        if dev.index is None:
            dev = torch.device("cuda", local_rank or 0)
    return dev


def init_distributed(device_pref: str) -> tuple[DistInfo, torch.device]:
    """torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_*: then join the group (NCCL on
    CUDA, gloo on CPU); without them run as a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_pref, local if world > 1 else None)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local), device


def _git_info() -> dict:
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return {"git_commit": commit or None, "git_dirty": bool(dirty) if commit else None}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}


def _rng_state(device: torch.device) -> dict:
    st = {"python": random.getstate(), "numpy": np.random.get_state(),
          "torch": torch.get_rng_state()}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def _set_rng_state(st: dict, device: torch.device) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_run_dir(cfg: TrainConfig) -> Path:
    name = cfg.name or "train"
    return Path("runs") / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


# --- the trainer -----------------------------------------------------------------------------
class Trainer:
    """Build everything from a TrainConfig; fit() trains (or continues, with resume=True) and
    writes RUN_DIR/{config.yaml, metrics.jsonl, tb/, checkpoints/{last,best}/}."""

    def __init__(self, cfg: TrainConfig, run_dir=None, resume: bool = False,
                 progress: bool = True, command_line: str | None = None):
        t = cfg.training
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        self.cfg = cfg
        self.progress = progress
        self.command_line = command_line or " ".join(shlex.quote(a) for a in sys.argv)
        self.dist, self.device = init_distributed(t.device)
        self.is_main = self.dist.is_main
        self.run_dir = self._agree_on_run_dir(run_dir)
        if not resume and (self.run_dir / CHECKPOINT_DIR / "last" / "config.json").exists():
            raise ConfigError(f"{self.run_dir} already holds a run; pass --resume {self.run_dir} "
                              f"to continue it or --out another directory")

        self.data_info = inspect_data(cfg)
        self.policy_cfg = resolve_policy_config(cfg, self.data_info)
        cfg.policy = self.policy_cfg.to_dict()     # the run dir's config is complete
        n_eps = self.data_info["n_episodes"]
        self.train_episodes, self.val_episodes = train_val_split(n_eps, cfg.data.val_ratio,
                                                                 cfg.data.split_seed)
        path, size = cfg.data.path, cfg.data.image_size
        self.train_set = make_dataset(path, self.policy_cfg, self.train_episodes, size)
        self.val_set = (make_dataset(path, self.policy_cfg, self.val_episodes, size)
                        if self.val_episodes else None)
        if self.val_set is not None and len(self.val_set) == 0:
            info("warning: the validation episodes are too short for one window; "
                 "evaluating on training windows")
            self.val_set = None
        global_batch = t.batch_size * self.dist.world
        if len(self.train_set) < global_batch:
            raise ConfigError(f"the training episodes give {len(self.train_set)} windows, fewer "
                              f"than one global batch ({t.batch_size} x {self.dist.world} "
                              f"processes); lower training.batch_size or add data")

        # Same init on every rank (DDP also broadcasts rank 0's weights, this keeps EMA equal).
        seed_everything(t.seed)
        self.policy = DiffusionPolicy(self.policy_cfg)
        stats = self.train_set.get_stats()
        normalizer = LinearNormalizer()
        for key in ["action", *self.policy_cfg.lowdim_obs]:
            normalizer.set_limits(key, stats[key]["min"], stats[key]["max"])
        self.policy.set_normalizer(normalizer)
        self.policy.to(self.device).train()
        self.ema = EMAModel(self.policy, power=t.ema_power, max_value=t.ema_max_decay,
                            inv_gamma=t.ema_inv_gamma)
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=t.lr,
                                           betas=tuple(t.betas), eps=t.eps,
                                           weight_decay=t.weight_decay)
        from diffusers.optimization import get_scheduler
        self.lr_scheduler = get_scheduler(t.lr_scheduler, self.optimizer,
                                          num_warmup_steps=t.warmup_steps,
                                          num_training_steps=t.max_steps)
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.amp_dtype == torch.float16)
        self.loss_module = _LossModule(self.policy)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel
            # No BatchNorm anywhere, and the normaliser is identical on every rank: no buffers
            # to broadcast each step.
            self.model = DistributedDataParallel(
                self.loss_module, device_ids=[self.device.index] if self.device.type == "cuda"
                else None, broadcast_buffers=False)
        else:
            self.model = self.loss_module
        seed_everything(t.seed + self.dist.rank)   # dropout differs per rank, as it should

        self.sampler = SeededBatchSampler(len(self.train_set), t.batch_size, self.dist.rank,
                                          self.dist.world, t.seed)
        kw = {}
        if t.num_workers > 0:
            kw = {"persistent_workers": True, "prefetch_factor": 2}
        self.loader = DataLoader(self.train_set, batch_sampler=self.sampler,
                                 num_workers=t.num_workers,
                                 pin_memory=self.device.type == "cuda",
                                 generator=torch.Generator().manual_seed(t.seed), **kw)

        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_value = None
        self.best_step = None
        self.last_metrics: dict = {}
        self.wall_time_before = 0.0
        self._t0 = time.time()
        # The code that trains is the code at start: later commits must not relabel a run.
        self.git = _git_info()
        self._writer = None
        if resume:
            self._load_resume()
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / CONFIG_FILE).write_text(cfg.to_yaml())
            if resume:
                self._truncate_metrics()
        n_params = sum(p.numel() for p in self.policy.parameters())
        info(f"run dir {self.run_dir}; {n_eps} episodes ({len(self.train_episodes)} train, "
             f"{len(self.val_episodes)} val), {len(self.train_set)} train windows; "
             f"{n_params / 1e6:.2f}M parameters; device {self.device}"
             f"{f' x {self.dist.world} processes' if self.dist.enabled else ''}; "
             f"amp {self.amp_dtype}; step {self.step}/{t.max_steps}")

    # --- setup helpers ----------------------------------------------------------------------
    def _agree_on_run_dir(self, run_dir) -> Path:
        path = [str(run_dir) if run_dir is not None else
                (str(default_run_dir(self.cfg)) if self.is_main else None)]
        if self.dist.enabled:
            dist.broadcast_object_list(path, src=0)   # ranks would disagree on a timestamp
        return Path(path[0])

    def _amp_dtype(self):
        mode = self.cfg.training.mixed_precision
        if self.device.type != "cuda":
            if mode in ("bf16", "fp16"):
                raise ConfigError(f"training.mixed_precision={mode} needs CUDA (device is "
                                  f"{self.device}); use auto or no")
            return None
        if mode == "no":
            return None
        if mode == "auto":
            mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return torch.bfloat16 if mode == "bf16" else torch.float16

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    # --- state ------------------------------------------------------------------------------
    def _gather_rng(self) -> list:
        mine = _rng_state(self.device)
        if not self.dist.enabled:
            return [mine]
        states = [None] * self.dist.world
        dist.all_gather_object(states, mine)
        return states

    def training_state(self, rng: list) -> dict:
        return {"version": TRAINING_STATE_VERSION,
                "model": self.policy.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "lr_scheduler": self.lr_scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "step": self.step, "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch, "rng": rng, "world_size": self.dist.world,
                "best_value": self.best_value, "best_step": self.best_step,
                "wall_time_s": self.wall_time(), "config": self.cfg.to_dict()}

    def _load_resume(self) -> None:
        last = self.run_dir / CHECKPOINT_DIR / "last"
        ts = load_training_state(last) if (last / "config.json").exists() else None
        if ts is None:
            raise ConfigError(f"--resume {self.run_dir}: no {last}/training_state.pt to resume "
                              "from")
        saved = ts["config"]
        diffs = []
        for section in ("data", "policy"):
            now = self.cfg.to_dict()[section]
            for k in sorted(set(now) | set(saved.get(section, {}))):
                a, b = saved.get(section, {}).get(k), now.get(k)
                if a != b:
                    diffs.append(f"{section}.{k}: run has {a!r}, now {b!r}")
        if diffs:
            raise ConfigError("cannot resume with a different data/policy config: "
                              + "; ".join(diffs))
        if ts.get("world_size", 1) != self.dist.world:
            info(f"warning: resuming a {ts.get('world_size')}-process run with "
                 f"{self.dist.world} processes: same global batch only if batch_size was "
                 "scaled; data order continues from the same epoch")
        self.policy.load_state_dict(ts["model"])
        self.ema.load_state_dict(ts["ema"])
        self.optimizer.load_state_dict(ts["optimizer"])
        self.lr_scheduler.load_state_dict(ts["lr_scheduler"])
        self.scaler.load_state_dict(ts["scaler"])
        self.step, self.epoch = int(ts["step"]), int(ts["epoch"])
        self.batch_in_epoch = int(ts["batch_in_epoch"])
        self.best_value, self.best_step = ts.get("best_value"), ts.get("best_step")
        self.wall_time_before = float(ts.get("wall_time_s", 0.0))
        rng = ts.get("rng") or []
        if len(rng) == self.dist.world:
            _set_rng_state(rng[self.dist.rank], self.device)
        else:
            seed_everything(sample_seed(self.cfg.training.seed, self.step, self.dist.rank))
        info(f"resumed {self.run_dir} at step {self.step} (epoch {self.epoch})")

    def _truncate_metrics(self) -> None:
        # Lines a crashed run wrote after its last checkpoint would repeat steps.
        f = self.run_dir / METRICS_FILE
        if not f.exists():
            return
        keep = []
        for line in f.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= self.step:
                    keep.append(line)
            except ValueError:
                pass
        f.write_text("".join(k + "\n" for k in keep))

    def wall_time(self) -> float:
        return self.wall_time_before + (time.time() - self._t0)

    # --- logging ----------------------------------------------------------------------------
    @property
    def writer(self):
        if self._writer is None and self.is_main:
            from torch.utils.tensorboard import SummaryWriter
            # On resume drop events a crashed run logged after the checkpoint we continue from.
            self._writer = SummaryWriter(str(self.run_dir / "tb"),
                                         purge_step=self.step + 1 if self.step else None)
        return self._writer

    def _log(self, record: dict) -> None:
        if not self.is_main:
            return
        with open(self.run_dir / METRICS_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")
        for k, v in record.items():
            if "/" in k and isinstance(v, (int, float)) and math.isfinite(v):
                self.writer.add_scalar(k, v, record["step"])

    def _reduce_mean(self, x: torch.Tensor) -> float:
        x = x.detach().float().clone()
        if self.dist.enabled:
            dist.all_reduce(x, op=dist.ReduceOp.SUM)
            x /= self.dist.world
        return float(x)

    # --- checkpoints ------------------------------------------------------------------------
    def checkpoint_extra(self) -> dict:
        cfg, di = self.cfg, self.data_info
        return {
            "task": di["task"], "robot": di["robot"], "trained": True,
            "weights": "ema", "weights_dtype": cfg.checkpoint.weights_dtype,
            "data_path": di["path"], "n_episodes": di["n_episodes"],
            "train_episodes": self.train_episodes, "val_episodes": self.val_episodes,
            "data_frequency_hz": di["frequency"],
            "steps": self.step, "epoch": self.epoch, "max_steps": cfg.training.max_steps,
            "global_batch_size": cfg.training.batch_size * self.dist.world,
            "world_size": self.dist.world, "device": str(self.device),
            "wall_time_s": round(self.wall_time(), 3), **self.git,
            "command_line": self.command_line, "metrics": self.last_metrics,
            "best": {"metric": cfg.checkpoint.best_metric, "value": self.best_value,
                     "step": self.best_step},
            "train_config": cfg.to_dict(),
        }

    def deploy_model(self) -> DiffusionPolicy:
        """The EMA weights, in checkpoint.weights_dtype (the normaliser stays float32)."""
        ema = self.ema.averaged_model
        if self.cfg.checkpoint.weights_dtype == "float32":
            return ema
        half = copy.deepcopy(ema).to("cpu", torch.float16)
        half.set_normalizer(self.policy.normalizer)   # float32 statistics, not rounded
        return half

    def save(self, which: str) -> Path | None:
        """Collective under DDP (RNG states are gathered); rank 0 writes."""
        rng = self._gather_rng()
        if not self.is_main:
            return None
        with_state = which == "last" or self.cfg.checkpoint.best_training_state
        return save_checkpoint(self.run_dir / CHECKPOINT_DIR / which, self.deploy_model(),
                               extra=self.checkpoint_extra(),
                               training_state=self.training_state(rng) if with_state else None)

    # --- eval -------------------------------------------------------------------------------
    def evaluate(self) -> dict | None:
        """Offline eval of the EMA model on rank 0; saves best/ when the metric improved."""
        t, c = self.cfg.training, self.cfg.checkpoint
        improved = [False]
        metrics = None
        if self.is_main:
            split, ds = ("val", self.val_set) if self.val_set is not None else \
                ("train", self.train_set)
            bs = t.eval_batch_size or t.batch_size
            res = evaluate_policy(self.ema.averaged_model, ds, t.eval_batches, bs, seed=t.seed,
                                  n_samples=t.plot_samples)
            metrics = {f"{split}/{k}": res[k] for k in ("action_mse", "action_mse_executed",
                                                        "loss")}
            self.last_metrics = {"step": self.step, "split": split, **metrics,
                                 "n_windows": res["n_windows"]}
            value = res[c.best_metric]
            if self.best_value is None or value < self.best_value:
                self.best_value, self.best_step = value, self.step
                improved[0] = True
            self._log({"step": self.step, "epoch": self.epoch, **metrics,
                       f"{split}/best_{c.best_metric}": self.best_value})
            if res.get("samples") is not None:
                self._eval_images(res["samples"])
        if self.dist.enabled:
            dist.broadcast_object_list(improved, src=0)
        if improved[0] and c.save_best:
            self.save("best")
        return metrics

    def _eval_images(self, samples: dict) -> None:
        from dp_ros.train.plots import action_chunks_image, obs_strip_image
        cfg = self.policy_cfg
        img = action_chunks_image(samples["demo"], samples["pred"], cfg.obs_horizon,
                                  cfg.action_horizon)
        self.writer.add_image("eval/action_chunks", img, self.step, dataformats="HWC")
        if samples["obs"]:
            self.writer.add_image("eval/obs_frames", obs_strip_image(samples["obs"]), self.step,
                                  dataformats="HWC")

    # --- training ---------------------------------------------------------------------------
    def _batches(self):
        """Endless batches; (epoch, batch_in_epoch) always says where the next one comes from."""
        while True:
            self.sampler.set_epoch(self.epoch, start=self.batch_in_epoch)
            for batch in self.loader:
                self.batch_in_epoch += 1
                yield batch
            self.epoch += 1
            self.batch_in_epoch = 0

    def train_step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.cfg.training
        B = batch["action"].shape[0]
        base = self.dist.rank * t.batch_size     # this rank's slice of the global batch
        seeds = [sample_seed(t.seed, self.step, base + j) for j in range(B)]
        noise, timesteps, crops = draw_randomness(seeds, self.policy_cfg)
        obs = {k: v.to(self.device, non_blocking=True) for k, v in batch["obs"].items()}
        action = batch["action"].to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self.model(obs, action, noise, timesteps, crops)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        max_norm = t.grad_clip if t.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.lr_scheduler.step()
        self.ema.step(self.policy)
        return loss.detach(), grad_norm.detach()

    def fit(self, stop_at: int | None = None) -> dict:
        """Train to training.max_steps (or stop after step `stop_at`, saving last/, without
        changing the LR schedule: for splitting a run). Returns a summary."""
        from tqdm.auto import tqdm
        t = self.cfg.training
        end = t.max_steps if stop_at is None else min(int(stop_at), t.max_steps)
        batches = self._batches()
        bar = tqdm(total=t.max_steps, initial=self.step, desc="train", dynamic_ncols=True,
                   disable=not (self.progress and self.is_main), unit="step")
        loss_sum = torch.zeros((), device=self.device)
        gn_sum = torch.zeros((), device=self.device)
        n_acc = 0
        t_log, step_log = time.perf_counter(), self.step
        last_loss = None
        try:
            while self.step < end:
                batch = next(batches)
                loss, grad_norm = self.train_step(batch)
                self.step += 1
                loss_sum += loss.float()
                gn_sum += grad_norm.float()
                n_acc += 1
                bar.update(1)
                if self.step % t.log_every == 0 or self.step == end:
                    last_loss = self._reduce_mean(loss_sum / n_acc)
                    now = time.perf_counter()
                    rate = (self.step - step_log) / max(now - t_log, 1e-9)
                    lr = self.lr_scheduler.get_last_lr()[0]
                    self._log({"step": self.step, "epoch": self.epoch, "train/loss": last_loss,
                               "train/lr": lr, "train/grad_norm": float(gn_sum) / n_acc,
                               "train/ema_decay": self.ema.decay, "train/steps_per_s": rate})
                    bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}", refresh=False)
                    loss_sum.zero_()
                    gn_sum.zero_()
                    n_acc = 0
                    t_log, step_log = now, self.step
                if self.step % t.eval_every == 0 or self.step == t.max_steps:
                    self.evaluate()
                if self.step % t.checkpoint_every == 0 or self.step == end:
                    self.save("last")
        finally:
            bar.close()
            if self._writer is not None:
                self._writer.flush()
        return {"run_dir": str(self.run_dir), "step": self.step, "epoch": self.epoch,
                "loss": last_loss, "wall_time_s": round(self.wall_time(), 3),
                "best": {"metric": self.cfg.checkpoint.best_metric, "value": self.best_value,
                         "step": self.best_step},
                "metrics": self.last_metrics}

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
