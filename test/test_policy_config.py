import json

import pytest

from dp_ros.policy.config import PolicyConfig


def test_defaults_match_the_paper():
    cfg = PolicyConfig(lowdim_obs={"robot_pose": 2})
    assert (cfg.obs_horizon, cfg.pred_horizon, cfg.action_horizon) == (2, 16, 8)
    assert cfg.down_dims == [256, 512, 1024] and cfg.kernel_size == 5 and cfg.n_groups == 8
    assert cfg.num_train_timesteps == 100 and cfg.num_inference_steps == 10
    assert cfg.beta_schedule == "squaredcos_cap_v2"
    assert cfg.dt == pytest.approx(0.1)


def test_round_trip_through_json():
    cfg = PolicyConfig(action_dim=3, lowdim_obs={"robot_pose": 2},
                       cameras={"wrist": (96, 96), "front": [120, 160]}, crop=(84, 84),
                       backbone="transformer", control_frequency_hz=15.0)
    back = PolicyConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    assert list(back.cameras) == ["wrist", "front"]  # order fixes the feature layout
    assert back.cameras["wrist"] == [96, 96] and back.crop == [84, 84]


def test_unknown_keys_rejected_by_name():
    d = PolicyConfig(lowdim_obs={"p": 2}).to_dict()
    d["down_dim"] = [1]
    with pytest.raises(ValueError, match="unknown keys \\['down_dim'\\]"):
        PolicyConfig.from_dict(d)


def test_missing_keys_only_rejected_when_required():
    d = {"lowdim_obs": {"p": 2}}
    assert PolicyConfig.from_dict(d).action_dim == 2
    with pytest.raises(ValueError, match="missing keys"):
        PolicyConfig.from_dict(d, require_all=True)


@pytest.mark.parametrize("kw, msg", [
    (dict(action_horizon=16), "action_horizon"),
    (dict(pred_horizon=10), "divisible"),
    (dict(cameras={"c": [64, 64]}, crop=[70, 60]), "larger than camera"),
    (dict(lowdim_obs={}), "at least one"),
    (dict(cameras={"c": [64, 64]}, crop=[32, 40]), "1-cell"),
    (dict(pooling="max"), "pooling"),
    (dict(num_inference_steps=101), "num_inference_steps"),
    (dict(lowdim_obs={"a.b": 2}), "identifier"),
    (dict(backbone="transformer", n_emb=30, n_head=4), "n_head"),
    (dict(control_frequency_hz=0.0), "control_frequency_hz"),
])
def test_validation(kw, msg):
    base = dict(lowdim_obs={"p": 2})
    base.update(kw)
    with pytest.raises(ValueError, match=msg):
        PolicyConfig(**base)


def test_largest_valid_action_horizon():
    PolicyConfig(lowdim_obs={"p": 2}, obs_horizon=2, pred_horizon=16, action_horizon=15)
