import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from dp_ros.policy.checkpoint import (CheckpointError, load_checkpoint, load_training_state,
                                      read_checkpoint_meta, save_checkpoint)
from dp_ros.policy.config import PolicyConfig
from dp_ros.policy.diffusion import DiffusionPolicy
from dp_ros.policy.ema import EMAModel
from dp_ros.policy.normalizer import LinearNormalizer


def make(**kw):
    base = dict(action_dim=2, lowdim_obs={"pose": 2}, cameras={"cam": [44, 44]}, crop=[40, 40],
                down_dims=[16, 32], kernel_size=3, diffusion_step_embed_dim=16,
                image_feature_dim=8, num_keypoints=4, num_inference_steps=3)
    base.update(kw)
    policy = DiffusionPolicy(PolicyConfig(**base))
    rng = np.random.default_rng(0)
    policy.set_normalizer(LinearNormalizer().fit({
        "action": rng.uniform(-1, 3, size=(20, 2)), "pose": rng.uniform(0, 1, size=(20, 2))}))
    return policy


OBS = {"cam": torch.rand(2, 2, 3, 44, 44), "pose": torch.rand(2, 2, 2)}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    policy = make()
    ema = EMAModel(policy)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.01)
    ema.step(policy)
    ema.step(policy)
    path = tmp_path_factory.mktemp("ckpt") / "step_10"
    save_checkpoint(path, ema.averaged_model, extra={"epoch": 3, "dataset": "pusht"},
                    training_state={"optimizer": {"lr": 1e-4}, "ema": ema.state_dict()})
    return path, ema.averaged_model


def test_round_trip_same_predictions(saved):
    path, policy = saved
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json", "model.safetensors", "normalizer.safetensors", "training_state.pt"]
    loaded = load_checkpoint(path)
    assert not loaded.training and loaded.config == policy.config
    a = policy.eval().predict_action(OBS, generator=torch.Generator().manual_seed(0))
    b = loaded.predict_action(OBS, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a["action"], b["action"])
    cfg, extra = read_checkpoint_meta(path / "config.json")
    assert extra == {"epoch": 3, "dataset": "pusht"} and cfg.dt == pytest.approx(0.1)
    assert load_training_state(path)["optimizer"] == {"lr": 1e-4}


def test_half_precision_weights_halve_the_file_and_predict_the_same(saved, tmp_path):
    path, policy = saved
    half = save_checkpoint(tmp_path / "half", policy, weights_dtype="float16")
    full_size = (path / "model.safetensors").stat().st_size
    assert (half / "model.safetensors").stat().st_size < 0.55 * full_size
    loaded = load_checkpoint(half)
    assert next(loaded.parameters()).dtype == torch.float32
    a = policy.eval().predict_action(OBS, generator=torch.Generator().manual_seed(0))["action_pred"]
    b = loaded.predict_action(OBS, generator=torch.Generator().manual_seed(0))["action_pred"]
    span = (a.max() - a.min()).item()
    assert (a - b).abs().max().item() < 0.02 * span
    with pytest.raises(ValueError, match="weights_dtype"):
        save_checkpoint(tmp_path / "bad", policy, weights_dtype="int8")


def _copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _edit_config(path, **changes):
    meta = json.loads((path / "config.json").read_text())
    meta["policy_config"].update(changes)
    for k, v in list(changes.items()):
        if v is None:
            del meta["policy_config"][k]
    (path / "config.json").write_text(json.dumps(meta))


def test_changed_config_names_the_shapes(saved, tmp_path):
    path = _copy(saved[0], tmp_path / "c")
    _edit_config(path, down_dims=[16, 48])
    with pytest.raises(CheckpointError,
                       match=r"model\.safetensors: noise_net\.\S+ has shape \(\d+.*but config "
                             r"gives \(\d+"):
        load_checkpoint(path)


def test_changed_lowdim_dim_reports_normalizer(saved, tmp_path):
    path = _copy(saved[0], tmp_path / "c")
    _edit_config(path, lowdim_obs={"pose": 3})
    with pytest.raises(CheckpointError, match=r"normalizer\.safetensors: pose\.scale has shape "
                                              r"\(2,\) but config gives \(3,\)"):
        load_checkpoint(path)


def test_unknown_and_missing_config_keys(saved, tmp_path):
    path = _copy(saved[0], tmp_path / "u")
    _edit_config(path, dropout=0.1, kernel_size=None)
    with pytest.raises(CheckpointError,
                       match=r"unknown keys \['dropout'\] and missing keys \['kernel_size'\]"):
        load_checkpoint(path)


def test_corrupted_weight_shape(saved, tmp_path):
    path = _copy(saved[0], tmp_path / "w")
    w = load_file(str(path / "model.safetensors"))
    key = "noise_net.final.1.weight"
    w[key] = torch.zeros(3, *w[key].shape[1:])
    del w["noise_net.final.1.bias"]
    save_file(w, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert "noise_net.final.1.weight has shape (3, 16, 1) but config gives (2, 16, 1)" in msg
    assert "noise_net.final.1.bias is missing" in msg


def test_missing_and_unreadable_files(saved, tmp_path):
    for name in ("model.safetensors", "normalizer.safetensors", "config.json"):
        path = _copy(saved[0], tmp_path / name.split(".")[0])
        (path / name).unlink()
        with pytest.raises(CheckpointError, match=f"missing {name}"):
            load_checkpoint(path)
    path = _copy(saved[0], tmp_path / "garbage")
    (path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="model.safetensors: cannot be read"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")


def test_training_state_optional_and_unfitted_policy_refused(tmp_path):
    policy = make(backbone="transformer", n_layer=1, n_head=2, n_emb=16)
    save_checkpoint(tmp_path / "t", policy, training_state={"x": 1})
    save_checkpoint(tmp_path / "t", policy)  # overwrite without: stale state removed
    assert load_training_state(tmp_path / "t") is None
    assert load_checkpoint(tmp_path / "t").config.backbone == "transformer"
    with pytest.raises(ValueError, match="normalizer has no statistics"):
        save_checkpoint(tmp_path / "u", DiffusionPolicy(policy.config))


def test_checkpoint_from_before_resnet_stages_loads_as_the_full_trunk(saved, tmp_path):
    # Checkpoints written before the resnet_stages key existed (the first shipped reach model)
    # used the full 4-stage trunk; they must keep loading and predicting exactly as before.
    path = _copy(saved[0], tmp_path / "old")
    _edit_config(path, resnet_stages=None)
    assert "resnet_stages" not in json.loads((path / "config.json").read_text())["policy_config"]
    policy = load_checkpoint(path)
    assert policy.config.resnet_stages == 4
    a = policy.predict_action(OBS, generator=torch.Generator().manual_seed(1))
    b = saved[1].eval().predict_action(OBS, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a["action"], b["action"])


def test_three_stage_trunk_round_trips(tmp_path):
    torch.manual_seed(0)
    policy = make(resnet_stages=3)
    n3 = sum(p.numel() for p in policy.parameters())
    n4 = sum(p.numel() for p in make().parameters())
    assert n3 < n4 / 2  # layer4 holds most of ResNet-18's weights
    save_checkpoint(tmp_path / "s3", policy)
    loaded = load_checkpoint(tmp_path / "s3")
    assert loaded.config.resnet_stages == 3
    a = policy.eval().predict_action(OBS, generator=torch.Generator().manual_seed(2))
    b = loaded.predict_action(OBS, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a["action"], b["action"])
