"""`dp-ros export`: the shipped copy of a checkpoint plans as the original does."""

import json
from pathlib import Path

import pytest
import torch

from dp_ros.cli.export import main as export
from dp_ros.graph import default_checkpoint, default_config
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
    # the training run it came from; an export of an export keeps that run
    came_from = read_checkpoint_meta(default_checkpoint())[1].get("exported_from", str(default_checkpoint()))
    assert extra["exported_from"] == came_from
    original, shipped = load_checkpoint(default_checkpoint()), load_checkpoint(out)
    # bfloat16 weights from float16 ones: the same chunk to a few millimetres
    assert torch.allclose(_chunk(original), _chunk(shipped), atol=5e-3)
    # an existing checkpoint is not overwritten by accident
    assert export([str(default_checkpoint()), str(out)]) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err
    assert read_checkpoint_meta(out)[1]["exported_from"] == came_from


def test_export_of_a_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert export([str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_stitch_mode_a_checkpoint_is_shipped_with_is_what_the_graph_runs(tmp_path, capsys):
    """`dp-ros export --stitch none`: with the config's `stitch: auto` the deploy graph and the
    lockstep evaluator use it; a mode the config or the command line names wins; a checkpoint
    without one gets the default. Re-exporting keeps the run the model came from."""
    from dp_ros.core.scheduler import DEFAULT_STITCH
    from dp_ros.graph import deploy_graph, node_params
    from dp_ros.sim.lockstep import LockstepEvaluator

    def stitch_of(checkpoint, config=None, stitch=None):
        params = node_params(deploy_graph(True, checkpoint, config, stitch=stitch), config)
        return params["action_scheduler_node"]["stitch"]

    out = tmp_path / "shipped"
    assert export([str(default_checkpoint()), str(out), "--stitch", "none"]) == 0
    assert json.loads(capsys.readouterr().out)["deploy"] == {"stitch": "none"}
    assert stitch_of(out) == "none"
    assert stitch_of(default_checkpoint()) == DEFAULT_STITCH != "none"
    assert stitch_of(out, stitch="blend") == "blend"
    assert stitch_of(out, stitch="auto") == "none"
    config = tmp_path / "deploy.yaml"
    config.write_text(Path(default_config()).read_text().replace("stitch: auto", "stitch: ensemble"))
    assert stitch_of(out, config) == "ensemble"
    evaluator = LockstepEvaluator(out, episode_timeout_s=1.0)
    assert evaluator.stitch == "none"
    evaluator.configure(stitch="blend")
    assert evaluator.stitch == "blend"
    evaluator.configure(stitch="auto")
    assert evaluator.stitch == "none"
    # an export of the export: the recommendation and the origin stay
    again = tmp_path / "again"
    assert export([str(out), str(again)]) == 0
    _, extra = read_checkpoint_meta(again)
    came_from = read_checkpoint_meta(default_checkpoint())[1].get("exported_from", str(default_checkpoint()))
    assert extra["deploy"] == {"stitch": "none"} and extra["exported_from"] == came_from


def test_export_refuses_an_unknown_stitch_mode(tmp_path, capsys):
    for bad in ("sometimes", "none:3", "inpaint:x"):
        assert export([str(default_checkpoint()), str(tmp_path / "out"), "--stitch", bad]) == 2
        assert "--stitch" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_shipped_with_stitch_settings_runs_with_them_through_auto(tmp_path, capsys):
    """`--stitch inpaint:0:0:0` (the frozen prefix alone): through `auto` the policy node gets no
    pulled steps and no warm start and the scheduler no blend, in the graph and in lockstep; a mode
    named instead runs with the config's settings."""
    from dp_ros.graph import deploy_graph, load_params, node_params
    from dp_ros.sim.lockstep import LockstepEvaluator

    out = tmp_path / "shipped"
    assert export([str(default_checkpoint()), str(out), "--stitch", "inpaint:0:0:0"]) == 0
    want = {"stitch": "inpaint", "inpaint_soft_steps": 0, "inpaint_warm_start": 0.0, "blend_steps": 0}
    assert json.loads(capsys.readouterr().out)["deploy"] == want

    def settings(params):
        return {"stitch": params["action_scheduler_node"]["stitch"],
                "inpaint_soft_steps": params["policy_node"]["inpaint_soft_steps"],
                "inpaint_warm_start": params["policy_node"]["inpaint_warm_start"],
                "blend_steps": params["action_scheduler_node"]["blend_steps"]}

    assert settings(node_params(deploy_graph(True, out))) == want
    assert settings(LockstepEvaluator(out, episode_timeout_s=1.0).params) == want
    config = load_params(default_config())
    named = settings(node_params(deploy_graph(True, out, stitch="inpaint")))
    assert named == {"stitch": "inpaint", "inpaint_soft_steps": config["policy_node"]["inpaint_soft_steps"],
                     "inpaint_warm_start": config["policy_node"]["inpaint_warm_start"],
                     "blend_steps": config["action_scheduler_node"]["blend_steps"]} != want
    assert settings(LockstepEvaluator(out, stitch="inpaint", episode_timeout_s=1.0).params) == named


def test_bench_stitching_fills_a_modes_omitted_fields_from_the_config_not_the_checkpoint(tmp_path, capsys):
    """On a checkpoint shipped with the frozen prefix alone (no blend, no pulled steps, no warm
    start), `blend` must blend over the config's steps and `inpaint:0` keep the config's warm start
    and blend: a cell that silently ran the checkpoint's zeros would compare the wrong modes."""
    from dp_ros.cli.bench_stitching import main as bench_stitching
    from dp_ros.graph import load_params

    out = tmp_path / "shipped"
    assert export([str(default_checkpoint()), str(out), "--stitch", "inpaint:0:0:0"]) == 0
    capsys.readouterr()
    assert bench_stitching(["--checkpoint", str(out), "--modes", "blend,inpaint:0,inpaint:0:0:0",
                            "--delays", "0", "--episodes", "1", "--no-progress"]) == 0
    ran = json.loads(capsys.readouterr().out)["settings"]
    config = load_params(default_config())
    blend = config["action_scheduler_node"]["blend_steps"]
    warm = config["policy_node"]["inpaint_warm_start"]
    assert blend > 0 and warm > 0   # else the check below could not tell config from checkpoint
    assert ran["blend"]["stitch"] == "blend" and ran["blend"]["blend_steps"] == blend
    assert ran["inpaint:0"] == {**ran["inpaint:0"], "stitch": "inpaint", "inpaint_soft_steps": 0,
                                "inpaint_warm_start": warm, "blend_steps": blend}
    assert ran["inpaint:0:0:0"] == {**ran["inpaint:0:0:0"], "stitch": "inpaint", "inpaint_soft_steps": 0,
                                    "inpaint_warm_start": 0.0, "blend_steps": 0}


def test_the_action_horizon_a_checkpoint_is_shipped_with_is_what_the_scheduler_runs(tmp_path, capsys):
    """`dp-ros export --action-horizon 6`: where the config says `action_horizon: 0` (its default)
    the scheduler executes 6 waypoints per chunk, in the graph and in lockstep; the config's own
    value beats the checkpoint's, and --action-horizon beats both. Re-exporting with another stitch
    keeps it. A value past the chunk (Tp - To + 1) is refused by name, and nothing is written."""
    from dp_ros.graph import deploy_graph, load_params, node_params
    from dp_ros.sim.lockstep import LockstepEvaluator

    def executed(checkpoint, config=None, action_horizon=None):
        params = node_params(deploy_graph(True, checkpoint, config, action_horizon=action_horizon), config)
        return params["action_scheduler_node"]["action_horizon"]

    assert load_params(default_config())["action_scheduler_node"]["action_horizon"] == 0
    trained = json.loads((default_checkpoint() / "config.json").read_text())["policy_config"]["action_horizon"]
    assert trained == 8 and executed(default_checkpoint()) == trained
    out = tmp_path / "shipped"
    assert export([str(default_checkpoint()), str(out), "--stitch", "inpaint:0:0:0", "--action-horizon", "6"]) == 0
    assert json.loads(capsys.readouterr().out)["deploy"] == {
        "stitch": "inpaint", "inpaint_soft_steps": 0, "inpaint_warm_start": 0.0, "blend_steps": 0,
        "action_horizon": 6}
    assert executed(out) == 6
    assert executed(out, action_horizon=5) == 5
    assert executed(out, action_horizon=0) == 6
    config = tmp_path / "deploy.yaml"
    config.write_text(Path(default_config()).read_text().replace("action_horizon: 0 ", "action_horizon: 4 "))
    assert executed(out, config) == 4 and executed(out, config, action_horizon=7) == 7
    evaluator = LockstepEvaluator(out, episode_timeout_s=1.0)
    assert evaluator.params["action_scheduler_node"]["action_horizon"] == 6
    assert LockstepEvaluator(out, episode_timeout_s=1.0, action_horizon=3).params[
        "action_scheduler_node"]["action_horizon"] == 3
    # another stitch for the export: its action horizon stays
    again = tmp_path / "again"
    assert export([str(out), str(again), "--stitch", "blend"]) == 0
    assert json.loads(capsys.readouterr().out)["deploy"] == {"stitch": "blend", "action_horizon": 6}
    # past the chunk: refused before anything is written or started
    for bad in ("16", "0"):
        assert export([str(default_checkpoint()), str(tmp_path / "bad"), "--action-horizon", bad]) == 2
        assert "--action-horizon" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match=r"--action-horizon: action_horizon 16 is outside \[1, 15\]"):
        deploy_graph(True, out, action_horizon=16)
    config.write_text(Path(default_config()).read_text().replace("action_horizon: 0 ", "action_horizon: 40 "))
    with pytest.raises(ValueError, match=rf"{config}: action_horizon 40 is outside \[1, 15\]"):
        deploy_graph(True, out, config)


def test_export_records_the_demonstrations_motion_the_planner_holds_chunks_to(tmp_path, capsys):
    """`--demo-motion-from ZARR`: a checkpoint trained before dp-train recorded the demonstrations'
    top speed and sharpest turn gets them from its replay buffer; the planner loads them. A buffer
    that is not there is a clear error and writes nothing."""
    from dp_ros.data.replay_buffer import ReplayBuffer
    from dp_ros.policy.demo_motion import DemoMotion
    from dp_ros.policy.planner import ChunkPlanner
    from test_train_common import make_store

    store = make_store(tmp_path / "reach.zarr", n_episodes=2, length=8)
    out = tmp_path / "shipped"
    assert export([str(default_checkpoint()), str(out), "--demo-motion-from", str(store)]) == 0
    buf = ReplayBuffer.open(store)
    expected = DemoMotion.from_actions(buf["action"][:], buf.episode_ends, 2)
    assert json.loads(capsys.readouterr().out)["demo_motion"] == expected.to_dict()
    assert ChunkPlanner.from_checkpoint(out, torch.device("cpu")).demo_motion == expected
    missing = tmp_path / "elsewhere"
    assert export([str(default_checkpoint()), str(missing), "--demo-motion-from", str(tmp_path / "none.zarr")]) == 2
    assert "--demo-motion-from" in capsys.readouterr().err and not missing.exists()
