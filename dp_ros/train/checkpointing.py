"""Run directories and checkpoints: the run directory's layout, the deployable weights, what a
checkpoint records about the code (git), and loading a run's last/ state to resume it."""

from __future__ import annotations

import copy
import json
import subprocess
from datetime import datetime
from pathlib import Path

import torch

from dp_ros.policy.checkpoint import load_training_state
from dp_ros.policy.diffusion import DiffusionPolicy
from dp_ros.policy.normalizer import LinearNormalizer
from dp_ros.train.config import ConfigError, TrainConfig
from dp_ros.train.distributed import info

TRAINING_STATE_VERSION = 1
# RUN_DIR/{config.yaml, metrics.jsonl, tb/, checkpoints/{last,best}/}
CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"


def default_run_dir(cfg: TrainConfig) -> Path:
    name = cfg.name or "train"
    return Path("runs") / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def checkpoint_dir(run_dir: Path, which: str) -> Path:
    """RUN_DIR/checkpoints/WHICH (last or best)."""
    return run_dir / CHECKPOINT_DIR / which


def holds_run(run_dir: Path) -> bool:
    """Whether run_dir already has a last/ checkpoint (a run to resume, not to overwrite)."""
    return (checkpoint_dir(run_dir, "last") / "config.json").exists()


def git_info() -> dict:
    """The commit of the code that trains, and whether tracked files differ from it."""
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


def deploy_model(ema_model: DiffusionPolicy, normalizer: LinearNormalizer,
                 weights_dtype: str) -> DiffusionPolicy:
    """The EMA weights, in weights_dtype (the normaliser stays float32)."""
    if weights_dtype == "float32":
        return ema_model
    half = copy.deepcopy(ema_model).to("cpu", torch.float16)
    half.set_normalizer(normalizer)   # float32 statistics, not rounded
    return half


# Data settings that change how the windows are read, never which ones: a resumed run may differ
# (and a run saved before such a key existed lacks it).
HOW_DATA_IS_READ = {("data", "image_cache_gb")}


def load_resume_state(run_dir: Path, cfg: TrainConfig, world: int) -> dict:
    """run_dir's last/ training state, refusing a config whose data or policy section differs
    from the run's."""
    last = checkpoint_dir(run_dir, "last")
    ts = load_training_state(last) if holds_run(run_dir) else None
    if ts is None:
        raise ConfigError(f"--resume {run_dir}: no {last}/training_state.pt to resume from")
    saved = ts["config"]
    diffs = []
    for section in ("data", "policy"):
        now = cfg.to_dict()[section]
        for k in sorted(set(now) | set(saved.get(section, {}))):
            if (section, k) in HOW_DATA_IS_READ:
                continue
            a, b = saved.get(section, {}).get(k), now.get(k)
            if a != b:
                diffs.append(f"{section}.{k}: run has {a!r}, now {b!r}")
    if diffs:
        raise ConfigError("cannot resume with a different data/policy config: "
                          + "; ".join(diffs))
    if ts.get("world_size", 1) != world:
        info(f"warning: resuming a {ts.get('world_size')}-process run with "
             f"{world} processes: same global batch only if batch_size was "
             "scaled; data order continues from the same epoch")
    return ts


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop metrics lines after `step`: lines a crashed run wrote after its last checkpoint
    would repeat steps."""
    f = run_dir / METRICS_FILE
    if not f.exists():
        return
    keep = []
    for line in f.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except ValueError:
            pass
    f.write_text("".join(k + "\n" for k in keep))


def init_weights_from(policy: DiffusionPolicy, path) -> list[str]:
    """Copy a trained checkpoint's network weights into `policy` (training.init_from). Every tensor
    must have the checkpoint's shape, except input layers this config widens (same shape but more
    input channels, dim 1: the prefix-mask channel of train_prefix_steps): their old channels are
    copied and the new ones start at zero, so the network computes what the checkpoint's did.
    The normaliser is not taken (the run fits its own to its data). Returns the widened names;
    ConfigError names every tensor that does not fit."""
    from dp_ros.policy.checkpoint import CheckpointError, MODEL_FILE, load_model_tensors

    try:
        saved = load_model_tensors(path)
    except CheckpointError as exc:
        raise ConfigError(f"training.init_from: {exc}") from exc
    own = {k: v for k, v in policy.state_dict().items() if not k.startswith("normalizer.")}
    widened, problems = [], []
    for name, target in own.items():
        if name not in saved:
            problems.append(f"{name} is not in the checkpoint")
            continue
        src = saved[name]
        if src.shape == target.shape:
            continue
        wider = (src.ndim == target.ndim >= 2 and src.shape[0] == target.shape[0]
                 and src.shape[2:] == target.shape[2:] and src.shape[1] < target.shape[1])
        if wider:
            widened.append(name)
        else:
            problems.append(f"{name} is {tuple(src.shape)} there, {tuple(target.shape)} here")
    problems += [f"{name} is only in the checkpoint" for name in saved if name not in own]
    if problems:
        raise ConfigError(f"training.init_from {str(path)!r}: its {MODEL_FILE} does not fit this policy "
                          "(same network settings, or only wider inputs, are needed): "
                          + "; ".join(problems[:8]) + (f"; ... {len(problems) - 8} more" if len(problems) > 8 else ""))
    with torch.no_grad():
        for name, target in own.items():
            src = saved[name].to(target.dtype)
            if name in widened:
                target.zero_()
                target[:, :src.shape[1]].copy_(src)
            else:
                target.copy_(src)
    return widened
