"""Training configuration: a YAML file with sections data / policy / training / checkpoint, plus
dotted `key=value` overrides from the command line.

Every key is checked against a schema (unknown keys are errors, not silently ignored) and every
value is coerced to the field's type, so `training.lr=1e-4` (a string to YAML 1.1) is a float.
The policy section holds PolicyConfig fields; the ones the data fixes (action_dim, lowdim_obs,
cameras, crop, control_frequency_hz) are filled from the replay buffer by resolve_policy_config
and, when the YAML gives them anyway, must agree with it."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dp_ros.core.scheduler import STITCH_MODES
from dp_ros.policy.config import PolicyConfig

SECTIONS = ("data", "policy", "training", "checkpoint")
TOP_LEVEL = ("name",) + SECTIONS
# PolicyConfig fields the data decides; a value in the YAML is only a check.
DATA_DERIVED = ("action_dim", "lowdim_obs", "cameras", "crop", "control_frequency_hz")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
WEIGHTS_DTYPES = ("float32", "float16")
EVAL_METRICS = ("action_mse", "action_mse_executed", "loss")          # lower is better
ROLLOUT_METRICS = ("rollout_mean_max_coverage", "rollout_success_rate")   # higher is better


class ConfigError(ValueError):
    """A training config that cannot be used as it stands; the message says which key."""


@dataclass
class DataConfig:
    path: str = ""                       # the zarr replay buffer
    val_ratio: float = 0.1               # share of episodes held out for offline eval
    split_seed: int = 0
    cameras: list[str] | None = None     # None: every camera the store has
    lowdim: list[str] | None = None      # None: every low-dim observation the store has
    image_size: list[int] | None = None  # [H, W] the policy gets; None: as stored
    crop: list[int] | None = None        # [h, w] random crop in training, centre crop at eval
    task: str | None = None              # used when neither episodes nor store name the task
    # Hold the images decompressed in memory when they take at most this many GB (0 = always read
    # them from zarr per window, ~10x slower per item: fine for a CPU, starves a GPU).
    image_cache_gb: float = 4.0


@dataclass
class TrainingConfig:
    batch_size: int = 64                 # per process; the global batch is batch_size * world
    lr: float = 1e-4
    weight_decay: float = 1e-6
    betas: list[float] = field(default_factory=lambda: [0.95, 0.999])
    eps: float = 1e-8
    lr_scheduler: str = "cosine"         # any diffusers get_scheduler name
    warmup_steps: int = 500
    max_steps: int = 100_000
    # Train for about this many seconds instead (0 = off): once the step rate is measured, early
    # in the warm-up, max_steps is set so the LR schedule ends inside the budget (a short GPU loan).
    time_budget_s: float = 0.0
    grad_clip: float = 1.0               # max grad norm; <= 0 disables
    ema_power: float = 0.75
    ema_max_decay: float = 0.9999
    ema_inv_gamma: float = 1.0
    seed: int = 42
    num_workers: int = 4
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    mixed_precision: str = "auto"        # auto | no | bf16 | fp16 (auto on CUDA: bf16 if supported)
    num_threads: int | None = None       # torch CPU threads; None: torch's default
    log_every: int = 50
    eval_every: int = 1000
    checkpoint_every: int = 1000
    eval_batches: int = 4                # offline eval: eval_batches * eval_batch_size windows
    eval_batch_size: int | None = None   # None: batch_size
    plot_samples: int = 4                # action chunks drawn into TensorBoard at eval
    # Lockstep rollouts in the sim task (dp_ros.sim.lockstep) at every rollout_every-th step (a
    # multiple of eval_every; 0 = off): the score that can choose best/ (checkpoint.best_metric).
    rollout_every: int = 0
    rollout_episodes: int = 10
    rollout_seed: int = 200_000          # world seeds seed+1.. : apart from recording (0) and eval (100000)
    rollout_timeout_s: float | None = None   # episode limit; None: the deploy config's
    rollout_stitch: str | None = None        # how chunks join in the rollouts; None: the deploy config's
    rollout_delay_s: float = 0.0             # injected inference latency in the rollouts (a policy meant to
                                             # run in real time is chosen by how it copes with one)
    # Start from a trained checkpoint's weights instead of a random init (fine-tuning): exported or
    # run checkpoint directory. Input layers may be wider than the checkpoint's (a run that adds
    # train_prefix_steps adds one input channel): the new part starts at zero, so the network begins
    # as the checkpoint's. The normaliser is fitted to this run's data as usual.
    init_from: str | None = None


@dataclass
class CheckpointConfig:
    best_metric: str = "action_mse"      # one of EVAL_METRICS (lower is better) or ROLLOUT_METRICS (higher)
    save_best: bool = True
    weights_dtype: str = "float32"       # float16 halves model.safetensors (loads into fp32)
    best_training_state: bool = False    # resume state is always in last/; best/ is for deploying
    keep_every: int = 0                  # also keep the model every N steps as step_<N>/ (a learning curve); 0 = off


@dataclass
class TrainConfig:
    name: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    policy: dict = field(default_factory=dict)   # PolicyConfig fields (partial until resolved)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def to_dict(self) -> dict:
        return {"name": self.name, "data": dataclasses.asdict(self.data),
                "policy": dict(self.policy), "training": dataclasses.asdict(self.training),
                "checkpoint": dataclasses.asdict(self.checkpoint)}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


_SECTION_CLASSES = {"data": DataConfig, "training": TrainingConfig,
                    "checkpoint": CheckpointConfig}


# --- typing-driven coercion ------------------------------------------------------------------
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value, hint, where: str):
    """value (from YAML or an override) -> the type `hint` describes, or ConfigError."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        errors = []
        for a in rest:
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if hint is Any:
        return value
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if not args:
            return value
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        if not args:
            return dict(value)
        return {_coerce(k, args[0], f"{where} key"): _coerce(v, args[1], f"{where}.{k}")
                for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value)
                if f.is_integer():
                    return int(f)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)   # YAML 1.1 reads 1e-4 (no dot) as a string
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _section_keys(section: str) -> list[str]:
    if section == "policy":
        return PolicyConfig.field_names()
    return [f.name for f in dataclasses.fields(_SECTION_CLASSES[section])]


def _check_keys(section: str, given: dict, source: str) -> None:
    valid = _section_keys(section)
    unknown = sorted(set(given) - set(valid))
    if unknown:
        names = ", ".join(f"{section}.{k}" for k in unknown)
        raise ConfigError(f"{source}: unknown key(s) {names}"
                          f"; valid keys in {section!r}: {', '.join(valid)}")


def _build_section(section: str, raw: dict, source: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: section {section!r} must be a mapping, got {raw!r}")
    _check_keys(section, raw, source)
    if section == "policy":
        hints = _hints(PolicyConfig)
        return {k: _coerce(v, hints[k], f"policy.{k}") for k, v in raw.items()}
    cls = _SECTION_CLASSES[section]
    hints = _hints(cls)
    return cls(**{k: _coerce(v, hints[k], f"{section}.{k}") for k, v in raw.items()})


# --- overrides -------------------------------------------------------------------------------
def parse_override(text: str) -> tuple[list[str], Any]:
    """'training.max_steps=200' -> (['training', 'max_steps'], 200). The value is YAML."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. training.max_steps=200")
    path = key.split(".")
    if any(not p for p in path):
        raise ConfigError(f"override {text!r}: malformed key {key!r}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({e})") from None
    return path, parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Set each dotted key in a copy of the raw YAML dict; unknown keys are errors."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in (raw or {}).items()}
    for text in overrides:
        path, value = parse_override(text)
        if path[0] not in TOP_LEVEL:
            raise ConfigError(f"override {text!r}: unknown section {path[0]!r}; valid: "
                              f"{', '.join(TOP_LEVEL)}")
        if path[0] == "name":
            if len(path) != 1:
                raise ConfigError(f"override {text!r}: 'name' has no sub-keys")
            raw["name"] = value
            continue
        section = path[0]
        if len(path) == 1:
            raise ConfigError(f"override {text!r}: give a key inside {section!r}, e.g. "
                              f"{section}.{_section_keys(section)[0]}=...")
        _check_keys(section, {path[1]: None}, f"override {text!r}")
        sec = raw.setdefault(section, {}) or {}
        raw[section] = sec
        if len(path) == 2:
            sec[path[1]] = value
        else:
            # Only mapping-valued fields (policy.lowdim_obs, policy.cameras) go deeper.
            node = sec.get(path[1])
            if node is None:
                node = {}
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {section}.{path[1]} is not a mapping")
            node = dict(node)
            sec[path[1]] = node
            for p in path[2:-1]:
                node[p] = dict(node.get(p) or {})
                node = node[p]
            node[path[-1]] = value
    return raw


def config_from_dict(raw: dict, source: str = "config") -> TrainConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping")
    unknown = sorted(set(raw) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {unknown}; valid: "
                          f"{', '.join(TOP_LEVEL)}")
    cfg = TrainConfig(
        name=_coerce(raw.get("name") or "", str, "name"),
        data=_build_section("data", raw.get("data"), source),
        policy=_build_section("policy", raw.get("policy"), source),
        training=_build_section("training", raw.get("training"), source),
        checkpoint=_build_section("checkpoint", raw.get("checkpoint"), source))
    validate(cfg)
    return cfg


def load_config(path=None, overrides: list[str] | None = None) -> TrainConfig:
    """Read the YAML at `path` (or start from defaults), apply the overrides, validate."""
    raw: dict = {}
    source = "config"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        source = str(p)
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: not valid YAML ({e})") from None
        if not raw.get("name"):
            raw["name"] = p.stem
    raw = apply_overrides(raw, list(overrides or []))
    return config_from_dict(raw, source)


def validate(cfg: TrainConfig) -> None:
    errors = []

    def need(cond, msg):
        if not cond:
            errors.append(msg)

    d, t, c = cfg.data, cfg.training, cfg.checkpoint
    need(0.0 <= d.val_ratio < 1.0, f"data.val_ratio must be in [0, 1), got {d.val_ratio}")
    for name, hw in (("data.image_size", d.image_size), ("data.crop", d.crop)):
        need(hw is None or (len(hw) == 2 and min(hw) >= 1),
             f"{name} must be [H, W] or null, got {hw}")
    if d.crop is not None and d.image_size is not None and len(d.crop) == 2 == len(d.image_size):
        need(d.crop[0] <= d.image_size[0] and d.crop[1] <= d.image_size[1],
             f"data.crop {d.crop} is larger than data.image_size {d.image_size}")
    need(t.seed >= 0, f"training.seed must be >= 0, got {t.seed}")
    need(t.batch_size >= 1, f"training.batch_size must be >= 1, got {t.batch_size}")
    need(t.lr > 0, f"training.lr must be > 0, got {t.lr}")
    need(t.weight_decay >= 0, "training.weight_decay must be >= 0")
    need(len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas),
         f"training.betas must be two numbers in [0, 1), got {t.betas}")
    need(t.max_steps >= 1, f"training.max_steps must be >= 1, got {t.max_steps}")
    need(t.warmup_steps >= 0, "training.warmup_steps must be >= 0")
    need(d.image_cache_gb >= 0, f"data.image_cache_gb must be >= 0 (0 = off), got {d.image_cache_gb}")
    need(t.time_budget_s >= 0, f"training.time_budget_s must be >= 0 (0 = off), got {t.time_budget_s}")
    need(c.keep_every >= 0, f"checkpoint.keep_every must be >= 0 (0 = off), got {c.keep_every}")
    need(t.num_workers >= 0, "training.num_workers must be >= 0")
    for k in ("log_every", "eval_every", "checkpoint_every", "eval_batches"):
        need(getattr(t, k) >= 1, f"training.{k} must be >= 1, got {getattr(t, k)}")
    need(t.eval_batch_size is None or t.eval_batch_size >= 1,
         "training.eval_batch_size must be >= 1")
    need(t.plot_samples >= 0, "training.plot_samples must be >= 0")
    need(t.num_threads is None or t.num_threads >= 1, "training.num_threads must be >= 1 or null")
    need(t.mixed_precision in MIXED_PRECISION,
         f"training.mixed_precision must be one of {MIXED_PRECISION}, got {t.mixed_precision!r}")
    need(t.device == "auto" or t.device == "cpu" or t.device.startswith("cuda"),
         f"training.device must be auto, cpu, cuda or cuda:N, got {t.device!r}")
    need(0 <= t.ema_max_decay < 1 and t.ema_power > 0 and t.ema_inv_gamma > 0,
         "training.ema_*: need 0 <= ema_max_decay < 1, ema_power > 0, ema_inv_gamma > 0")
    try:
        from diffusers.optimization import SchedulerType
        names = [s.value for s in SchedulerType]
        need(t.lr_scheduler in names,
             f"training.lr_scheduler must be one of {names}, got {t.lr_scheduler!r}")
    except ImportError:   # diffusers is a hard dependency of training; the trainer will say so
        pass
    need(c.best_metric in EVAL_METRICS + ROLLOUT_METRICS,
         f"checkpoint.best_metric must be one of {EVAL_METRICS + ROLLOUT_METRICS}, got {c.best_metric!r}")
    need(t.rollout_every >= 0 and t.rollout_episodes >= 1, "training.rollout_every must be >= 0, "
         "training.rollout_episodes >= 1")
    need(math.isfinite(t.rollout_delay_s) and t.rollout_delay_s >= 0,
         f"training.rollout_delay_s must be >= 0, got {t.rollout_delay_s}")
    need(t.rollout_stitch is None or t.rollout_stitch in STITCH_MODES,
         f"training.rollout_stitch must be one of {STITCH_MODES} or null, got {t.rollout_stitch!r}")
    need(t.rollout_every % t.eval_every == 0 if t.eval_every >= 1 else True,
         f"training.rollout_every ({t.rollout_every}) must be a multiple of training.eval_every ({t.eval_every})")
    need(c.best_metric not in ROLLOUT_METRICS or t.rollout_every > 0,
         f"checkpoint.best_metric={c.best_metric} needs rollouts: set training.rollout_every")
    need(c.weights_dtype in WEIGHTS_DTYPES,
         f"checkpoint.weights_dtype must be one of {WEIGHTS_DTYPES}, got {c.weights_dtype!r}")
    if errors:
        raise ConfigError("invalid training config: " + "; ".join(errors))


# --- resolving the policy against the data ---------------------------------------------------
def resolve_policy_config(cfg: TrainConfig, data_info: dict) -> PolicyConfig:
    """PolicyConfig from the policy section + what the data fixes.

    data_info: {"frequency": Hz, "cameras": {name: [H, W]} (after data.image_size),
                "lowdim": {name: dim}, "action_dim": int}"""
    derived = {
        "action_dim": int(data_info["action_dim"]),
        "lowdim_obs": {k: int(v) for k, v in data_info["lowdim"].items()},
        "cameras": {k: [int(x) for x in v] for k, v in data_info["cameras"].items()},
        "crop": None if cfg.data.crop is None else [int(x) for x in cfg.data.crop],
        "control_frequency_hz": float(data_info["frequency"]),
    }
    given = dict(cfg.policy)
    problems = []
    for key, value in derived.items():
        if key not in given:
            continue
        mine = given[key]
        if key == "control_frequency_hz":
            same = abs(float(mine) - value) <= 1e-6 * max(1.0, value)
        elif key == "crop":
            same = (None if mine is None else [int(x) for x in mine]) == value
        elif key == "lowdim_obs":
            same = {str(k): int(v) for k, v in dict(mine).items()} == value
        elif key == "cameras":
            same = {str(k): [int(x) for x in v] for k, v in dict(mine).items()} == value
        else:
            same = int(mine) == value
        if not same:
            what = {"control_frequency_hz": "the data's control frequency (store config "
                                            "'frequency')",
                    "crop": "data.crop", "action_dim": "the data's action dimension",
                    "lowdim_obs": "the selected low-dim observations",
                    "cameras": "the selected cameras at data.image_size"}[key]
            problems.append(f"policy.{key} = {mine!r} but {what} gives {value!r}")
    if problems:
        raise ConfigError("policy config disagrees with the data: " + "; ".join(problems)
                          + " (leave these keys out of the policy section to take them from "
                            "the data)")
    merged = {**given, **derived}
    try:
        return PolicyConfig.from_dict(merged)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None
