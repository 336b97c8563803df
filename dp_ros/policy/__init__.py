"""Diffusion Policy core: config, normaliser, networks, sampler, EMA, checkpoints. No ROS here.

Imports are lazy so `from dp_ros.policy import PolicyConfig` does not pull in torchvision and
diffusers for tools that only need the config."""

import importlib

_EXPORTS = {
    "PolicyConfig": "config",
    "LinearNormalizer": "normalizer",
    "ConditionalUnet1D": "unet",
    "TransformerForDiffusion": "transformer",
    "ObsEncoder": "vision",
    "replace_batchnorm_with_groupnorm": "vision",
    "DiffusionPolicy": "diffusion",
    "EMAModel": "ema",
    "CheckpointError": "checkpoint",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_training_state": "checkpoint",
    "read_checkpoint_meta": "checkpoint",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
