"""Training config: YAML + dotted overrides, unknown keys, coercion, data-derived policy fields,
the shipped configs."""

from pathlib import Path

import pytest
import torch

from dp_ros.train.config import (ConfigError, apply_overrides, load_config, parse_override,
                                 resolve_policy_config)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["reach_image", "pusht_image", "pusht_image_cpu", "ur5_real"]
DATA = {"frequency": 10.0, "cameras": {"top": [96, 96]}, "lowdim": {"robot_pose": 2},
        "action_dim": 2}


def test_parse_override_values():
    assert parse_override("training.max_steps=200") == (["training", "max_steps"], 200)
    assert parse_override("policy.down_dims=[64,128]") == (["policy", "down_dims"], [64, 128])
    assert parse_override("data.crop=null") == (["data", "crop"], None)
    assert parse_override("name=a=b") == (["name"], "a=b")
    for bad in ["training.max_steps", "=3", "training..lr=1", "training.lr=[1,"]:
        with pytest.raises(ConfigError):
            parse_override(bad)


def test_overrides_are_typed_and_checked():
    cfg = load_config(None, ["training.lr=1e-4", "training.betas=[0.9, 0.99]",
                             "training.max_steps=2e3", "policy.down_dims=[64,128]",
                             "policy.lowdim_obs.robot_pose=2", "checkpoint.save_best=false",
                             "data.image_size=[64, 80]"])
    assert cfg.training.lr == pytest.approx(1e-4) and isinstance(cfg.training.lr, float)
    assert cfg.training.max_steps == 2000 and cfg.training.betas == [0.9, 0.99]
    assert cfg.policy == {"down_dims": [64, 128], "lowdim_obs": {"robot_pose": 2}}
    assert cfg.checkpoint.save_best is False and cfg.data.image_size == [64, 80]


@pytest.mark.parametrize("override, words", [
    ("training.bogus=1", ["unknown", "training.bogus", "batch_size"]),
    ("policy.down_dim=[1]", ["unknown", "policy.down_dim", "down_dims"]),
    ("optim.lr=1", ["unknown section", "optim"]),
    ("training=3", ["give a key inside"]),
    ("training.max_steps=abc", ["training.max_steps", "integer"]),
    ("training.lr=fast", ["training.lr", "number"]),
    ("training.betas=0.9", ["training.betas", "list"]),
    ("training.mixed_precision=fp8", ["mixed_precision"]),
    ("checkpoint.best_metric=accuracy", ["best_metric"]),
    ("data.val_ratio=1.5", ["val_ratio"]),
    ("training.lr_scheduler=nope", ["lr_scheduler"]),
])
def test_override_errors(override, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    for w in words:
        assert w in str(e.value)


def test_unknown_keys_in_yaml(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  path: x.zarr\n  colour: red\n")
    with pytest.raises(ConfigError, match="data.colour"):
        load_config(f)
    f.write_text("optimizer:\n  lr: 1\n")
    with pytest.raises(ConfigError, match="optimizer"):
        load_config(f)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    # nested override into a fresh mapping-valued field of a YAML-given section
    f.write_text("policy:\n  obs_horizon: 2\n")
    cfg = load_config(f, ["policy.cameras.top=[96,96]"])
    assert cfg.name == "c" and cfg.policy == {"obs_horizon": 2, "cameras": {"top": [96, 96]}}
    raw = apply_overrides({"training": {"lr": 1}}, ["training.seed=5"])
    assert raw == {"training": {"lr": 1, "seed": 5}}


def test_policy_fields_come_from_the_data():
    cfg = load_config(None, ["data.crop=[84,84]", "policy.down_dims=[32,64]"])
    pc = resolve_policy_config(cfg, DATA)
    assert pc.action_dim == 2 and pc.lowdim_obs == {"robot_pose": 2}
    assert pc.cameras == {"top": [96, 96]} and pc.crop == [84, 84]
    assert pc.control_frequency_hz == 10.0 and pc.down_dims == [32, 64]
    # given and equal: fine
    cfg = load_config(None, ["policy.control_frequency_hz=10", "policy.action_dim=2",
                             "policy.cameras={top: [96, 96]}"])
    resolve_policy_config(cfg, DATA)


@pytest.mark.parametrize("override, words", [
    ("policy.control_frequency_hz=20", ["control_frequency_hz", "20", "10.0", "frequency"]),
    ("policy.action_dim=6", ["action_dim"]),
    ("policy.crop=[84,84]", ["policy.crop", "data.crop"]),
    ("policy.lowdim_obs={robot_pose: 7}", ["lowdim_obs"]),
    ("policy.cameras={top: [84, 84]}", ["cameras"]),
])
def test_policy_disagreeing_with_data_fails_clearly(override, words):
    cfg = load_config(None, [override])
    with pytest.raises(ConfigError) as e:
        resolve_policy_config(cfg, DATA)
    for w in words:
        assert w in str(e.value)


def test_invalid_policy_config_is_a_config_error():
    cfg = load_config(None, ["policy.pred_horizon=10", "policy.down_dims=[16,32,64]"])
    with pytest.raises(ConfigError, match="divisible"):
        resolve_policy_config(cfg, DATA)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "config" / "train" / f"{name}.yaml")
    t = cfg.training
    assert cfg.name == name
    assert (t.lr, t.weight_decay, t.betas, t.warmup_steps, t.grad_clip) == \
        (1e-4, 1e-6, [0.95, 0.999], 500, 1.0)
    assert (t.ema_power, t.ema_max_decay, t.lr_scheduler) == (0.75, 0.9999, "cosine")
    p = cfg.policy
    assert (p["obs_horizon"], p["pred_horizon"], p["action_horizon"]) == (2, 16, 8)
    data = {"frequency": p["control_frequency_hz"], "action_dim": 2,
            "lowdim": {k: 2 for k in cfg.data.lowdim},
            "cameras": {c: cfg.data.image_size for c in cfg.data.cameras}}
    resolve_policy_config(cfg, data)


def _checkpoint_bytes(name):
    from dp_ros.policy.diffusion import DiffusionPolicy
    cfg = load_config(ROOT / "config" / "train" / f"{name}.yaml")
    assert cfg.data.image_size == [96, 96] and cfg.data.crop == [84, 84]
    assert cfg.policy["down_dims"] == [64, 128, 256]
    pc = resolve_policy_config(cfg, {"frequency": 10.0, "action_dim": 2,
                                     "lowdim": {"robot_pose": 2}, "cameras": {"top": [96, 96]}})
    torch.manual_seed(0)
    n = sum(p.numel() for p in DiffusionPolicy(pc).parameters())
    return n, n * {"float32": 4, "float16": 2}[cfg.checkpoint.weights_dtype]


def test_shipped_sim_checkpoints_fit_50mb_together():
    n_reach, reach = _checkpoint_bytes("reach_image")
    n_pusht, pusht = _checkpoint_bytes("pusht_image_cpu")
    assert n_reach * 4 > 50e6                # why the shipped configs save fp16 weights
    assert n_pusht < n_reach / 2             # the 3-stage trunk
    assert reach + pusht < 50e6
