"""`dp-ros export`: the shipped copy of a checkpoint plans as the original does."""

import json

import torch

from dp_ros.cli.export import main as export
from dp_ros.graph import default_checkpoint
from dp_ros.policy.checkpoint import load_checkpoint, read_checkpoint_meta


def _chunk(policy, seed=0):
    cfg = policy.config
    g = torch.Generator().manual_seed(seed)
    batch = {cam: torch.rand(1, cfg.obs_horizon, 3, h, w, generator=g) for cam, (h, w) in cfg.cameras.items()}
    batch.update({k: torch.rand(1, cfg.obs_horizon, d, generator=g) for k, d in cfg.lowdim_obs.items()})
    with torch.inference_mode():
        return policy.predict_action(batch, generator=torch.Generator().manual_seed(seed))["action_pred"]


def test_export_keeps_the_plan_and_says_where_it_came_from(tmp_path, capsys):
    out = tmp_path / "shipped"
    assert export([str(default_checkpoint()), str(out), "--weights-dtype", "bfloat16"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["weights_dtype"] == "bfloat16" and report["bytes"] > 0
    _, extra = read_checkpoint_meta(out)
    assert extra["exported_from"] == str(default_checkpoint())
    original, shipped = load_checkpoint(default_checkpoint()), load_checkpoint(out)
    # bfloat16 weights from float16 ones: the same chunk to a few millimetres
    assert torch.allclose(_chunk(original), _chunk(shipped), atol=5e-3)
    # an existing checkpoint is not overwritten by accident
    assert export([str(default_checkpoint()), str(out)]) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err
    assert read_checkpoint_meta(out)[1]["exported_from"] == str(default_checkpoint())


def test_export_of_a_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert export([str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
