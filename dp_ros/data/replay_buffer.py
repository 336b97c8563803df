"""Zarr v3 replay buffer in the layout of the Diffusion Policy reference code.

    <store>/data/<camera>      uint8   (N, H, W, 3)  chunked a few frames at a time, Blosc zstd
    <store>/data/<lowdim key>  float32 (N, D)
    <store>/data/action        float32 (N, Da)
    <store>/data/timestamp     float64 (N,)          control-step time, seconds of ROS time
    <store>/meta/episode_ends  int64   (E,)          cumulative: episode i = [ends[i-1], ends[i])

Root attributes:
    dp_ros_replay_buffer  format version
    config                the conversion config every episode was made with; opening the store
                          with a different config fails (mixing dt, image size, action space, ...
                          in one data set would silently corrupt training)
    episodes              one record per episode: {"name", ...source info}; the commit point of
                          add_episode (see below)

Appends are ordered data arrays -> meta/episode_ends -> attrs["episodes"]; a crash part-way leaves
extra rows or ends that a writable open() trims back to the committed episodes, and a read-only
open ignores. Arrays are read lazily: `buf["top"]` is the zarr array, nothing is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

FORMAT_VERSION = 1
RESERVED_KEYS = ("action", "timestamp")
IMAGE_CHUNK_FRAMES = 4        # small: a training sample reads To frames at a random position
LOWDIM_CHUNK_STEPS = 4096
ENDS_CHUNK = 1024


class ConfigMismatch(ValueError):
    pass


def normalize_config(config: dict) -> dict:
    """JSON round trip: tuples -> lists, numpy -> python, so equality means the same config."""
    def default(obj):
        if hasattr(obj, "tolist"):
            return obj.tolist()
        raise TypeError(f"config value {obj!r} is not JSON-serialisable")
    return json.loads(json.dumps(config, default=default, sort_keys=True))


def config_diff(stored: dict, wanted: dict) -> list[str]:
    keys = sorted(set(stored) | set(wanted))
    return [f"{k}: store has {stored.get(k, '<unset>')!r}, requested {wanted.get(k, '<unset>')!r}"
            for k in keys if stored.get(k) != wanted.get(k)]


def _compressor(dtype: np.dtype) -> BloscCodec:
    # Byte shuffle helps multi-byte floats; for uint8 images it would be a no-op.
    shuffle = "noshuffle" if dtype.itemsize == 1 else "shuffle"
    return BloscCodec(cname="zstd", clevel=3, shuffle=shuffle)


class ReplayBuffer:
    """Episodes of equal-rate steps, concatenated per key. Use create_or_open() / open()."""

    def __init__(self, root: zarr.Group, path: Path, writable: bool):
        self.root = root
        self.path = path
        self.writable = writable

    # --- opening --------------------------------------------------------------------------
    @classmethod
    def create_or_open(cls, path, config: dict | None = None) -> "ReplayBuffer":
        """Open `path` for appending, creating it with `config` if it does not exist.
        An existing store must have been made with the same config (ConfigMismatch otherwise);
        config=None opens an existing store whatever its config."""
        path = Path(path)
        if (path / "zarr.json").exists():
            root = zarr.open_group(str(path), mode="r+")
            buf = cls(root, path, writable=True)
            buf._check_format()
            if config is not None:
                stored = buf.config
                wanted = normalize_config(config)
                diff = config_diff(stored, wanted)
                if diff:
                    raise ConfigMismatch(f"{path} was made with a different config: "
                                         + "; ".join(diff))
            buf._repair()
            return buf
        if config is None:
            raise FileNotFoundError(f"no replay buffer at {path} and no config to create one")
        if path.exists() and any(path.iterdir()):
            raise FileExistsError(f"{path} exists and is not a zarr replay buffer")
        root = zarr.open_group(str(path), mode="w")
        root.require_group("data")
        meta = root.require_group("meta")
        meta.create_array("episode_ends", shape=(0,), chunks=(ENDS_CHUNK,), dtype="int64")
        root.attrs.update({"dp_ros_replay_buffer": FORMAT_VERSION,
                           "config": normalize_config(config), "episodes": []})
        return cls(root, path, writable=True)

    @classmethod
    def open(cls, path) -> "ReplayBuffer":
        """Read-only (safe from DataLoader workers)."""
        path = Path(path)
        if not (path / "zarr.json").exists():
            raise FileNotFoundError(f"no replay buffer at {path}")
        buf = cls(zarr.open_group(str(path), mode="r"), path, writable=False)
        buf._check_format()
        return buf

    def _check_format(self) -> None:
        if "meta" not in self.root or "episode_ends" not in self.root["meta"]:
            raise ValueError(f"{self.path} is a zarr group but not a replay buffer "
                             "(no meta/episode_ends)")

    def _repair(self) -> None:
        """Trim what an interrupted add_episode left beyond the last committed episode."""
        n = self.n_episodes
        ends = self.root["meta/episode_ends"]
        if ends.shape[0] != n:
            ends.resize((n,))
        end = self.n_steps
        for key in self.keys:
            arr = self.root["data"][key]
            if arr.shape[0] != end:
                arr.resize((end,) + arr.shape[1:])

    # --- layout ---------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        return dict(self.root.attrs.get("config", {}))

    @property
    def episodes(self) -> list[dict]:
        """Per-episode records ({"name": ..., ...}) of the committed episodes."""
        return list(self.root.attrs.get("episodes", []))

    @property
    def episode_names(self) -> list[str]:
        return [e.get("name") for e in self.episodes]

    @property
    def attrs(self):
        return self.root.attrs

    @property
    def n_episodes(self) -> int:
        return min(len(self.root.attrs.get("episodes", [])),
                   self.root["meta/episode_ends"].shape[0])

    @property
    def episode_ends(self) -> np.ndarray:
        n = self.n_episodes
        return np.asarray(self.root["meta/episode_ends"][:n], dtype=np.int64)

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(np.concatenate([[0], self.episode_ends]))

    @property
    def n_steps(self) -> int:
        ends = self.episode_ends
        return int(ends[-1]) if len(ends) else 0

    @property
    def keys(self) -> list[str]:
        return sorted(self.root["data"].array_keys())

    def episode_slice(self, i: int) -> slice:
        ends = self.episode_ends
        n = len(ends)
        if not -n <= i < n:
            raise IndexError(f"episode {i} out of range ({n} episodes)")
        i %= n
        return slice(int(ends[i - 1]) if i > 0 else 0, int(ends[i]))

    def __getitem__(self, key: str) -> zarr.Array:
        """The lazy zarr array data/<key> (rows past the committed episodes are not data)."""
        if key not in self.root["data"]:
            raise KeyError(f"no key {key!r} in {self.path} (keys: {self.keys})")
        return self.root["data"][key]

    def __contains__(self, key: str) -> bool:
        return key in self.root["data"]

    def get_episode(self, i: int, keys=None) -> dict[str, np.ndarray]:
        s = self.episode_slice(i)
        return {k: self[k][s] for k in (keys or self.keys)}

    # --- appending ------------------------------------------------------------------------
    def _check_against_config(self, data: dict[str, np.ndarray]) -> None:
        from dp_ros.core.action_space import KINDS
        from dp_ros.core.robot_features import source_dim

        cfg = self.config
        cams = list(cfg.get("cameras", {}))
        obs = dict(cfg.get("obs", {}))
        if cams or obs or "action_space" in cfg:
            expected = set(cams) | set(obs) | set(RESERVED_KEYS)
            if set(data) != expected:
                raise ValueError(f"episode keys {sorted(data)} do not match the store's config "
                                 f"{sorted(expected)}")
        if "image_size" in cfg:
            h, w = cfg["image_size"]
            for cam in cams:
                if data[cam].shape[1:] != (h, w, 3):
                    raise ValueError(f"camera {cam!r} frames are {data[cam].shape[1:]}, the store "
                                     f"holds ({h}, {w}, 3)")
        for key, source in obs.items():
            if data[key].shape[1:] != (source_dim(source),):
                raise ValueError(f"{key!r} ({source}) must be (T, {source_dim(source)}), got "
                                 f"{data[key].shape}")
        if "action_space" in cfg and data["action"].shape[1:] != (KINDS[cfg["action_space"]],):
            raise ValueError(f"action ({cfg['action_space']}) must be "
                             f"(T, {KINDS[cfg['action_space']]}), got {data['action'].shape}")

    def add_episode(self, data: dict[str, np.ndarray], name: str | None = None,
                    info: dict | None = None) -> int:
        """Append one episode: data[key] arrays of equal length T >= 1. Images must be uint8
        (T, H, W, 3); everything else is stored float32 except `timestamp` (float64).
        Returns the episode index."""
        if not self.writable:
            raise PermissionError(f"{self.path} was opened read-only")
        if not data:
            raise ValueError("empty episode")
        lengths = {k: len(v) for k, v in data.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"episode arrays differ in length: {lengths}")
        T = next(iter(lengths.values()))
        if T < 1:
            raise ValueError("episode has no steps")
        if name is not None and name in self.episode_names:
            raise ValueError(f"an episode named {name!r} is already in {self.path}")
        prepared = {}
        for k, v in data.items():
            v = np.asarray(v)
            if v.ndim == 4 and v.shape[-1] == 3:
                if v.dtype != np.uint8:
                    raise ValueError(f"image key {k!r} must be uint8, got {v.dtype}")
            elif k == "timestamp":
                v = v.astype(np.float64)
            else:
                v = v.astype(np.float32)
            if not np.issubdtype(v.dtype, np.integer) and not np.all(np.isfinite(v)):
                raise ValueError(f"{k!r} contains NaN or inf")
            prepared[k] = v
        self._check_against_config(prepared)

        group = self.root["data"]
        existing = self.keys
        if existing and set(existing) != set(prepared):
            raise ValueError(f"episode keys {sorted(prepared)} differ from the store's "
                             f"{existing}")
        for k, v in prepared.items():
            if k in group:
                arr = group[k]
                if arr.shape[1:] != v.shape[1:] or arr.dtype != v.dtype:
                    raise ValueError(f"{k!r}: episode has {v.dtype}{v.shape[1:]}, store has "
                                     f"{arr.dtype}{arr.shape[1:]}")
        start = self.n_steps
        for k, v in prepared.items():
            if k not in group:
                per = IMAGE_CHUNK_FRAMES if v.ndim == 4 else LOWDIM_CHUNK_STEPS
                group.create_array(k, shape=(0,) + v.shape[1:], dtype=v.dtype,
                                   chunks=(per,) + v.shape[1:],
                                   compressors=_compressor(v.dtype))
            arr = group[k]
            arr.resize((start + T,) + v.shape[1:])
            arr[start:start + T] = v
        ends = self.root["meta/episode_ends"]
        n = self.n_episodes
        ends.resize((n + 1,))
        ends[n] = start + T
        record = dict(info or {})
        record["name"] = name if name is not None else f"episode_{n:06d}"
        record["length"] = int(T)
        # The commit point: until this attribute write lands, the episode does not exist.
        self.root.attrs["episodes"] = self.episodes + [normalize_config(record)]
        return n

    def __repr__(self) -> str:
        return (f"ReplayBuffer({str(self.path)!r}, episodes={self.n_episodes}, "
                f"steps={self.n_steps}, keys={self.keys})")
