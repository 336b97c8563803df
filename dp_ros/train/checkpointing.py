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
