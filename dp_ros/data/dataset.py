"""Training windows from a zarr replay buffer, sampled as the Diffusion Policy reference does.

Each item is one window of Tp = pred_horizon consecutive steps inside one episode:
  obs[k]   = the first To = obs_horizon steps of the window
  action   = all Tp steps
Windows may hang over the episode's ends by pad_before = To-1 steps at the start and
pad_after = Ta-1 steps at the end; the missing steps repeat the episode's first/last step
(the robot "waits" before the start and holds at the end). A window never mixes two episodes.
An episode of L steps gives L - Tp + pad_before + pad_after + 1 windows, none when that is < 1
(as in the reference).

Images are held decompressed in memory when they fit `image_cache_gb`, else read lazily from zarr
(only the frames of one window); low-dim keys and actions are small and held in memory. The store is opened per process, so DataLoader workers (fork or
spawn) each open their own read-only handle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from dp_ros.data.replay_buffer import ReplayBuffer


def train_val_split(n_episodes: int, val_ratio: float,
                    seed: int = 0) -> tuple[list[int], list[int]]:
    """Episode indices (train, val). At least one validation episode when val_ratio > 0 and at
    least one training episode always (as the reference's get_val_mask)."""
    if n_episodes < 1:
        raise ValueError("need at least one episode")
    if not 0.0 <= val_ratio < 1.0:
        raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio}")
    n_val = 0 if val_ratio <= 0 else min(max(1, round(n_episodes * val_ratio)), n_episodes - 1)
    rng = np.random.default_rng(seed)
    val = sorted(int(i) for i in rng.choice(n_episodes, size=n_val, replace=False))
    val_set = set(val)
    train = [i for i in range(n_episodes) if i not in val_set]
    return train, val


def create_indices(episode_ends: np.ndarray, sequence_length: int, pad_before: int,
                   pad_after: int, episodes: list[int] | None = None) -> np.ndarray:
    """(M, 3) rows (episode_start, episode_end, window_start) with window_start relative to the
    episode start, in [-pad_before, length - sequence_length + pad_after]."""
    ends = np.asarray(episode_ends, dtype=np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    chosen = range(len(ends)) if episodes is None else episodes
    rows = []
    for i in chosen:
        s, e = int(starts[i]), int(ends[i])
        length = e - s
        lo, hi = -pad_before, length - sequence_length + pad_after
        for w in range(lo, hi + 1):
            rows.append((s, e, w))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


_IMAGES_IN_MEMORY: dict = {}


def images_in_memory(path: str, buf, key: str, n_steps: int) -> np.ndarray:
    """buf[key][:n_steps] decompressed, read once per version of the array in this process (a
    store rewritten or grown at the same path rewrites the array's metadata)."""
    meta = Path(path) / "data" / key / "zarr.json"
    version = (path, key, n_steps, meta.stat().st_mtime_ns if meta.exists() else None)
    held = _IMAGES_IN_MEMORY.get((path, key))
    if held is None or held[0] != version:
        held = _IMAGES_IN_MEMORY[(path, key)] = (version, np.asarray(buf[key][:n_steps]))
    return held[1]


class SequenceDataset(Dataset):
    def __init__(self, zarr_path, obs_horizon: int, pred_horizon: int, action_horizon: int,
                 camera_keys, lowdim_keys, episodes=None, image_size=None, image_cache_gb: float = 0.0):
        if not 1 <= obs_horizon <= pred_horizon:
            raise ValueError(f"need 1 <= obs_horizon ({obs_horizon}) <= pred_horizon "
                             f"({pred_horizon})")
        if not 1 <= action_horizon <= pred_horizon:
            raise ValueError(f"need 1 <= action_horizon ({action_horizon}) <= pred_horizon")
        self.zarr_path = str(zarr_path)
        self.To, self.Tp, self.Ta = int(obs_horizon), int(pred_horizon), int(action_horizon)
        self.camera_keys = list(camera_keys)
        self.lowdim_keys = list(lowdim_keys)
        self.image_size = None if image_size is None else tuple(int(x) for x in image_size)
        self._buf = None
        self._arrays = {}
        buf = self.buffer
        missing = [k for k in self.camera_keys + self.lowdim_keys + ["action"] if k not in buf]
        if missing:
            raise KeyError(f"{zarr_path} has no keys {missing} (keys: {buf.keys})")
        self.episode_ends = buf.episode_ends
        n = len(self.episode_ends)
        self.episodes = list(range(n)) if episodes is None else [int(i) for i in episodes]
        bad = [i for i in self.episodes if not 0 <= i < n]
        if bad:
            raise IndexError(f"episodes {bad} out of range ({n} episodes in {zarr_path})")
        self.indices = create_indices(self.episode_ends, self.Tp, pad_before=self.To - 1,
                                      pad_after=self.Ta - 1, episodes=self.episodes)
        # Low-dim arrays are small (N x D floats): hold them in memory; zarr's per-read overhead
        # (~1 ms) would otherwise dominate each item. Images stay lazy.
        n_steps = buf.n_steps
        self._lowdim = {k: np.asarray(buf[k][:n_steps], dtype=np.float32)
                        for k in self.lowdim_keys + ["action"]}
        # Images too, decompressed, when they fit image_cache_gb: a lazy read costs ~1 ms per
        # window (zarr's per-read overhead), ten times the rest of the item, which starves a GPU.
        # Shared by every dataset of this store in the process (train and validation) and, as
        # nothing writes to them, by forked loader workers.
        self._images_in_memory = {}
        if self.camera_keys and image_cache_gb > 0:
            nbytes = sum(n_steps * int(np.prod(buf[k].shape[1:])) for k in self.camera_keys)
            if nbytes <= image_cache_gb * 1e9:
                self._images_in_memory = {k: images_in_memory(self.zarr_path, buf, k, n_steps)
                                          for k in self.camera_keys}

    # The zarr handle is per process: never pickled to workers, reopened on first use there.
    @property
    def buffer(self) -> ReplayBuffer:
        if self._buf is None:
            self._buf = ReplayBuffer.open(self.zarr_path)
        return self._buf

    def _array(self, key: str):
        if key in self._images_in_memory:
            return self._images_in_memory[key]
        arr = self._arrays.get(key)
        if arr is None:         # opening an array reads its metadata: once per process
            arr = self._arrays[key] = self.buffer[key]
        return arr

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_buf"] = None
        state["_arrays"] = {}
        return state

    def __len__(self) -> int:
        return len(self.indices)

    def window_rows(self, i: int) -> np.ndarray:
        """Global row index of each of the Tp steps of window i (edge-padded)."""
        s, e, w = (int(x) for x in self.indices[i])
        return s + np.clip(np.arange(w, w + self.Tp), 0, e - s - 1)

    def _images(self, key: str, rows: np.ndarray) -> torch.Tensor:
        # One contiguous read, then repeat rows for the padding.
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        imgs = self._array(key)[lo:hi][rows - lo]                       # (To, H, W, 3) uint8
        if self.image_size is not None and imgs.shape[1:3] != self.image_size:
            import cv2
            h, w = self.image_size
            imgs = np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA)
                             for im in imgs])
        x = torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2)
        return x.float().div_(255.0)

    def __getitem__(self, i: int) -> dict:
        rows = self.window_rows(i)
        obs_rows = rows[: self.To]
        obs = {k: self._images(k, obs_rows) for k in self.camera_keys}
        for k in self.lowdim_keys:
            obs[k] = torch.from_numpy(self._lowdim[k][obs_rows])
        action = torch.from_numpy(self._lowdim["action"][rows])
        return {"obs": obs, "action": action}

    def get_stats(self) -> dict[str, dict[str, np.ndarray]]:
        """Per-dimension min/max of action and every low-dim key over this dataset's episodes
        (padding repeats existing steps, so it cannot change the range)."""
        ends = self.episode_ends
        stats = {}
        for key in ["action"] + self.lowdim_keys:
            arr = self._lowdim[key]
            parts = [arr[(ends[i - 1] if i > 0 else 0):ends[i]] for i in self.episodes]
            parts = [p for p in parts if len(p)]
            if not parts:
                raise ValueError("no data to compute statistics from")
            x = np.concatenate(parts).astype(np.float64)
            stats[key] = {"min": x.min(axis=0), "max": x.max(axis=0),
                          "mean": x.mean(axis=0), "std": x.std(axis=0)}
        return stats
