"""Checkpoint directory: everything the policy node needs, nothing executable.

    config.json             {"format", "format_version", "policy_config", "extra"}
    normalizer.safetensors  '{key}.{scale|offset|min|max}'
    model.safetensors       the weights to deploy (the EMA weights when training)
    training_state.pt       optional: optimizer / LR scheduler / EMA state for resuming

Loading checks the config keys and every weight shape against the network the config builds, and
says exactly what differs, rather than deploying a half-loaded model."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import PolicyConfig
from .diffusion import DiffusionPolicy
from .normalizer import LinearNormalizer

FORMAT = "dp_ros.diffusion_policy"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
NORMALIZER_FILE = "normalizer.safetensors"
MODEL_FILE = "model.safetensors"
TRAINING_STATE_FILE = "training_state.pt"
_MAX_LISTED = 12


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded as it stands (missing file, wrong keys or shapes)."""


def _atomic_write(path: Path, write) -> None:
    # Write next to the target then rename, so a reader never sees a half-written file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _model_state(policy: DiffusionPolicy) -> dict[str, torch.Tensor]:
    # The normaliser has its own file; the weights file holds the networks only.
    return {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()
            if not k.startswith("normalizer.")}


def save_checkpoint(path_dir, policy: DiffusionPolicy, extra: dict | None = None,
                    training_state: dict | None = None, weights_dtype: str | None = None) -> Path:
    """Write a checkpoint directory. `policy` holds the weights to deploy (pass the EMA model's
    averaged_model when training; it must carry the fitted normaliser). `extra`: JSON-able
    metadata (epoch, data set, git hash...). `training_state`: anything torch.save can store;
    without it a stale training_state.pt from an earlier save is removed. `weights_dtype`
    ("float16" / "bfloat16") stores the floating-point weights at that precision to keep shipped
    models small; load_checkpoint casts them back to the model's float32 parameters."""
    path = Path(path_dir)
    path.mkdir(parents=True, exist_ok=True)
    cfg = policy.config
    missing = [k for k in ["action", *cfg.lowdim_obs] if k not in policy.normalizer]
    if missing:
        raise ValueError(f"save_checkpoint: the policy's normalizer has no statistics for "
                         f"{missing}; a checkpoint without them cannot be deployed")
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "policy_config": cfg.to_dict(), "extra": dict(extra or {})}
    text = json.dumps(meta, indent=2, sort_keys=False)  # fails early if extra is not JSON-able
    meta_st = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
    weights = _model_state(policy)
    if weights_dtype is not None:
        dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(weights_dtype)
        if dtype is None:
            raise ValueError(f"weights_dtype must be float16 or bfloat16, not {weights_dtype!r}")
        weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}
        meta["weights_dtype"] = weights_dtype
        text = json.dumps(meta, indent=2, sort_keys=False)
    _atomic_write(path / MODEL_FILE, lambda p: save_file(weights, p, metadata=meta_st))
    _atomic_write(path / NORMALIZER_FILE,
                  lambda p: save_file(policy.normalizer.flat_state(), p, metadata=meta_st))
    ts = path / TRAINING_STATE_FILE
    if training_state is not None:
        _atomic_write(ts, lambda p: torch.save(training_state, p))
    elif ts.exists():
        ts.unlink()
    # config.json last: its presence marks a complete checkpoint.
    _atomic_write(path / CONFIG_FILE, lambda p: Path(p).write_text(text + "\n"))
    return path


def _resolve_dir(path) -> Path:
    path = Path(path)
    if path.is_file() and path.name == CONFIG_FILE:
        path = path.parent
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {str(path)!r} does not exist")
    return path


def _need(path: Path, name: str) -> Path:
    f = path / name
    if not f.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} is missing {name}")
    return f


def read_checkpoint_meta(path) -> tuple[PolicyConfig, dict]:
    """(PolicyConfig, extra) from config.json, without building the network."""
    path = _resolve_dir(path)
    f = _need(path, CONFIG_FILE)
    try:
        meta = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{CONFIG_FILE}: not valid JSON ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{CONFIG_FILE}: not a {FORMAT} checkpoint "
                              f"(format={meta.get('format') if isinstance(meta, dict) else None!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{CONFIG_FILE}: format_version {version!r} is not supported "
                              f"(this code reads <= {FORMAT_VERSION})")
    raw = meta.get("policy_config")
    if not isinstance(raw, dict):
        raise CheckpointError(f"{CONFIG_FILE}: no policy_config object")
    names = PolicyConfig.field_names()
    unknown = sorted(set(raw) - set(names))
    missing = PolicyConfig.missing_keys(raw)
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"unknown keys {unknown}")
        if missing:
            parts.append(f"missing keys {missing}")
        raise CheckpointError(f"{CONFIG_FILE}: policy_config has " + " and ".join(parts)
                              + " (written by a different version of PolicyConfig?)")
    try:
        cfg = PolicyConfig.from_dict(raw, require_all=True)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{CONFIG_FILE}: {e}") from e
    extra = meta.get("extra") or {}
    return cfg, extra


def _load_tensors(path: Path, name: str) -> dict[str, torch.Tensor]:
    f = _need(path, name)
    try:
        return load_file(str(f), device="cpu")
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{name}: cannot be read ({e})") from e


def _fmt(shape) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + (",)" if len(shape) == 1 else ")")


def _compare(name: str, saved: dict, expected: dict) -> list[str]:
    diffs = []
    for k in expected:
        if k not in saved:
            diffs.append(f"{k} is missing (config gives {_fmt(expected[k].shape)})")
        elif tuple(saved[k].shape) != tuple(expected[k].shape):
            diffs.append(f"{k} has shape {_fmt(saved[k].shape)} but config gives "
                         f"{_fmt(expected[k].shape)}")
    for k in saved:
        if k not in expected:
            diffs.append(f"{k} is not in the network the config builds")
    if len(diffs) > _MAX_LISTED:
        diffs = diffs[:_MAX_LISTED] + [f"... and {len(diffs) - _MAX_LISTED} more"]
    return [f"{name}: {d}" for d in diffs]


def load_model_tensors(path) -> dict[str, torch.Tensor]:
    """A checkpoint directory's network weights (model.safetensors) by name, on the CPU."""
    return _load_tensors(_resolve_dir(path), MODEL_FILE)


def load_checkpoint(path, device="cpu") -> DiffusionPolicy:
    """Rebuild the policy from a checkpoint directory, in eval mode, on `device`."""
    path = _resolve_dir(path)
    cfg, extra = read_checkpoint_meta(path)
    weights = _load_tensors(path, MODEL_FILE)
    norm_flat = _load_tensors(path, NORMALIZER_FILE)
    policy = DiffusionPolicy(cfg)
    policy.checkpoint_extra = extra

    diffs = _compare(MODEL_FILE, weights, _model_state(policy))
    # Normaliser: one entry per key with the dims the config fixes.
    dims = {"action": cfg.action_dim, **cfg.lowdim_obs}
    expected_norm = {f"{k}.{f}": torch.empty(d) for k, d in dims.items()
                     for f in ("scale", "offset", "min", "max")}
    diffs += _compare(NORMALIZER_FILE, norm_flat, expected_norm)
    if diffs:
        raise CheckpointError(f"checkpoint {str(path)!r} does not match its config:\n  "
                              + "\n  ".join(diffs))
    try:
        policy.load_state_dict(weights, strict=False)
        policy.set_normalizer(LinearNormalizer.from_flat_state(norm_flat))
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r}: {e}") from e
    return policy.to(device).eval()


def load_training_state(path, map_location="cpu") -> dict | None:
    """The optional training_state.pt (optimizer etc.), or None when the checkpoint has none."""
    f = _resolve_dir(path) / TRAINING_STATE_FILE
    if not f.is_file():
        return None
    return torch.load(f, map_location=map_location, weights_only=False)
