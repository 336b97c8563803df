"""Trainer on a synthetic zarr store: overfitting, checkpoints (deployable, right extra), exact
resume, seeded crops and data order, offline eval, the CLI."""

import json

import numpy as np
import pytest
import torch

from dp_ros.data.replay_buffer import ReplayBuffer
from dp_ros.policy.checkpoint import load_checkpoint, load_training_state, read_checkpoint_meta
from dp_ros.policy.demo_motion import DemoMotion
from dp_ros.policy.config import PolicyConfig
from dp_ros.train import cli
from dp_ros.train.config import ConfigError
from dp_ros.train.data import SeededBatchSampler, make_dataset
from dp_ros.train.evaluation import offline_eval
from dp_ros.train.loss import place_crop_at_centre
from dp_ros.train.seeding import draw_randomness, sample_seed
from dp_ros.train.trainer import Trainer
from test_train_common import (FIXED_POSE, make_store,  # noqa: F401
                               tiny_config)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("train") / "reach.zarr")


def losses(run_dir):
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "train/loss" in rec:
            out[rec["step"]] = rec["train/loss"]
    return out


def test_seeded_sampler_shards_the_global_batch():
    one = SeededBatchSampler(50, 8, seed=4)
    ranks = [SeededBatchSampler(50, 4, rank=r, world=2, seed=4) for r in range(2)]
    for s in [one, *ranks]:
        s.set_epoch(3)
    glob = list(one)
    shards = [list(s) for s in ranks]
    assert len(glob) == 50 // 8 == len(shards[0])
    for b, batch in enumerate(glob):
        assert batch == shards[0][b] + shards[1][b]
    one.set_epoch(3, start=2)
    assert list(one) == glob[2:]
    one.set_epoch(4)
    assert list(one) != glob                        # a new permutation each epoch


def test_seeded_crop_goes_through_the_encoders_centre_crop():
    img = torch.rand(3, 2, 3, 20, 24)
    offs = torch.stack([torch.randint(0, 5, (3, 2)), torch.randint(0, 9, (3, 2))], -1)
    placed = place_crop_at_centre(img, offs, (16, 16))
    for b in range(3):
        for t in range(2):
            top, left = offs[b, t].tolist()
            want = img[b, t, :, top:top + 16, left:left + 16]
            assert torch.equal(placed[b, t, :, 2:18, 4:20], want)    # centre window
    cfg = PolicyConfig(cameras={"top": [20, 24]}, crop=[16, 16], down_dims=[16, 32],
                       pooling="avg")
    n1, t1, c1 = draw_randomness([sample_seed(1, 2, j) for j in range(4)], cfg)
    n2, t2, c2 = draw_randomness([sample_seed(1, 2, j) for j in range(2, 4)], cfg)
    assert torch.equal(n1[2:], n2) and torch.equal(t1[2:], t2)
    assert torch.equal(c1["top"][2:], c2["top"])
    assert int(c1["top"][..., 0].max()) <= 4 and int(c1["top"][..., 1].max()) <= 8


def test_training_writes_deployable_checkpoints(store, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(store, "checkpoint.weights_dtype=float16", crop=[40, 40])
    tr = Trainer(cfg, run, progress=False, command_line="dp-train test")
    summary = tr.fit()
    tr.close()
    assert summary["step"] == 6 and np.isfinite(summary["loss"])
    for which in ("last", "best"):
        policy = load_checkpoint(run / "checkpoints" / which)
        pc, extra = read_checkpoint_meta(run / "checkpoints" / which)
        assert pc.crop == [40, 40] and pc.cameras == {"top": [48, 48]}
        assert pc.lowdim_obs == {"robot_pose": 2} and pc.control_frequency_hz == 10.0
        assert extra["robot"] == {"obs_sources": {"robot_pose": "tcp_xy"}, "action_space": "xy",
                                  "fixed_pose": FIXED_POSE}
        assert extra["task"] == "reach" and extra["trained"] is True
        assert extra["n_episodes"] == 6 and extra["data_path"] == str(store.resolve())
        assert extra["command_line"] == "dp-train test" and extra["wall_time_s"] > 0
        assert "git_commit" in extra and extra["train_config"]["training"]["max_steps"] == 6
        # the demonstrations' top speed and sharpest turn, which stitch inpaint holds chunks to
        buf = ReplayBuffer.open(store)
        assert extra["demo_motion"] == DemoMotion.from_actions(buf["action"][:], buf.episode_ends, 2).to_dict()
        out = policy.predict_action({"top": torch.rand(1, 2, 3, 48, 48),
                                     "robot_pose": torch.full((1, 2, 2), 0.5)})
        assert out["action"].shape == (1, 4, 2) and torch.isfinite(out["action"]).all()
    _, extra = read_checkpoint_meta(run / "checkpoints" / "last")
    assert extra["steps"] == 6
    assert load_training_state(run / "checkpoints" / "best") is None   # deploy-only
    ts = load_training_state(run / "checkpoints" / "last")
    assert ts["step"] == 6 and {"model", "ema", "optimizer", "lr_scheduler", "scaler", "rng",
                                "best_value", "config"} <= set(ts)
    # fp16 on disk, loaded into fp32 and close to the EMA weights it came from
    from safetensors.torch import load_file
    saved = load_file(str(run / "checkpoints" / "last" / "model.safetensors"))
    assert {v.dtype for v in saved.values() if v.is_floating_point()} == {torch.float16}
    policy = load_checkpoint(run / "checkpoints" / "last")
    ema = ts["ema"]["averaged_model"]
    for k, v in policy.state_dict().items():
        assert v.dtype == ema[k].dtype
        torch.testing.assert_close(v, ema[k], rtol=2e-3, atol=1e-4)
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in recs if "val/action_mse" in r]
    assert [r["step"] for r in evals] == [3, 6]
    assert list((run / "tb").iterdir())
    # a second run into the same directory must not clobber it
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(tiny_config(store), run, progress=False)


def test_resume_continues_exactly(store, tmp_path):
    cfg = lambda: tiny_config(store, crop=[40, 40])      # noqa: E731
    full = Trainer(cfg(), tmp_path / "full", progress=False)
    full.fit()
    full.close()
    part = Trainer(cfg(), tmp_path / "part", progress=False)
    part.fit(stop_at=4)
    part.close()
    assert max(losses(tmp_path / "part")) == 4
    resumed = Trainer(cfg(), tmp_path / "part", resume=True, progress=False)
    assert resumed.step == 4
    resumed.fit()
    resumed.close()
    a, b = losses(tmp_path / "full"), losses(tmp_path / "part")
    assert sorted(a) == sorted(b) == list(range(1, 7))
    np.testing.assert_allclose([b[s] for s in a], [a[s] for s in a], rtol=1e-5, atol=1e-6)
    wa = load_training_state(tmp_path / "full" / "checkpoints" / "last")
    wb = load_training_state(tmp_path / "part" / "checkpoints" / "last")
    for k, v in wa["model"].items():
        torch.testing.assert_close(wb["model"][k], v, rtol=1e-5, atol=1e-6)
    for k, v in wa["ema"]["averaged_model"].items():
        torch.testing.assert_close(wb["ema"]["averaged_model"][k], v, rtol=1e-5, atol=1e-6)


def test_loss_drops_when_overfitting(store, tmp_path):
    # Low-dim only (no ResNet) so 150 steps take seconds; the camera path is covered above.
    cfg = tiny_config(store, "data.cameras=[]", "policy.down_dims=[32,64]",
                      "training.max_steps=150", "training.batch_size=16",
                      "training.warmup_steps=10", "training.lr=3e-3", "training.log_every=10",
                      "training.eval_every=1000", "training.checkpoint_every=1000")
    tr = Trainer(cfg, tmp_path / "fit", progress=False)
    tr.fit()
    tr.close()
    ls = losses(tmp_path / "fit")
    assert sorted(ls) == list(range(10, 151, 10))
    assert ls[150] < 0.3 * ls[10], ls


def test_offline_eval_and_cli(store, tmp_path, capsys):
    run = tmp_path / "cli"
    yml = tmp_path / "tiny.yaml"
    yml.write_text(tiny_config(store).to_yaml())
    assert cli.main(["--config", str(yml), "--no-progress", "--out", str(run), "--stop-at", "3",
                     "training.eval_every=2"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 3
    # resume through the CLI: the config comes from the run dir, overrides still apply
    assert cli.main(["--no-progress", "--resume", str(run), "training.eval_every=2"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 6
    ckpt = run / "checkpoints" / "last"
    assert cli.main(["--eval-only", "--checkpoint", str(ckpt), "--split", "all",
                     "--n-batches", "2", "--batch-size", "3"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_windows"] == 6 and res["episodes"] == list(range(6))
    assert res["action_mse"] > 0 and res["action_mse_executed"] > 0 and res["loss"] > 0
    # offline_eval is deterministic: same windows, same sampling noise
    policy = load_checkpoint(ckpt)
    ds = make_dataset(store, policy.config, list(range(6)))
    assert offline_eval(policy, ds, 2, 3, seed=3) == pytest.approx(res["action_mse"], rel=1e-6)
    # errors are one clear line and exit code 2
    assert cli.main(["--config", str(tmp_path / "none.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["--config", str(yml), "training.nope=1"]) == 2
    assert "training.nope" in capsys.readouterr().err
    assert cli.main(["--eval-only"]) == 2
    assert cli.main(["--config", str(yml), "--out", str(tmp_path / "x"),
                     "policy.control_frequency_hz=30"]) == 2
    assert "control_frequency_hz" in capsys.readouterr().err
    assert cli.main(["--resume", str(run), "policy.down_dims=[16,64]"]) == 2
    assert "different data/policy" in capsys.readouterr().err


def test_resume_ignores_how_images_are_read_but_not_what_is_trained(store, tmp_path):
    """data.image_cache_gb changes how windows are read, never which: a run resumes across it
    (runs saved before the key existed have none); a data setting that changes the windows is
    still refused."""
    part = Trainer(tiny_config(store, "data.image_cache_gb=0"), tmp_path / "run", progress=False)
    part.fit(stop_at=2)
    part.close()
    resumed = Trainer(tiny_config(store, "data.image_cache_gb=8"), tmp_path / "run", resume=True,
                      progress=False)
    assert resumed.step == 2
    resumed.close()
    with pytest.raises(ConfigError, match="data.val_ratio"):
        Trainer(tiny_config(store, "data.val_ratio=0.5"), tmp_path / "run", resume=True, progress=False)


def test_fine_tuning_starts_from_the_checkpoint_and_may_add_the_prefix_input(store, tmp_path):
    """training.init_from: the new run's network (and its EMA) starts as the checkpoint's; a run
    that adds train_prefix_steps widens the first layer by the mask channel, which starts at zero,
    so the widened network predicts exactly what the checkpoint does before any step."""
    base = Trainer(tiny_config(store, crop=[40, 40]), tmp_path / "base", progress=False)
    base.fit()
    base.close()
    ckpt = tmp_path / "base" / "checkpoints" / "last"
    trained = load_checkpoint(ckpt)

    tuned = Trainer(tiny_config(store, f"training.init_from={ckpt}", "policy.train_prefix_steps=2", crop=[40, 40]),
                    tmp_path / "tuned", progress=False)
    assert tuned.policy.config.train_prefix_steps == 2
    obs = {"top": torch.rand(3, 2, 3, 48, 48), "robot_pose": torch.rand(3, 2, 2)}
    noisy, t = torch.randn(3, 8, 2), torch.tensor([3, 40, 90])
    for net in (tuned.policy.eval(), tuned.ema.averaged_model.eval()):
        with torch.no_grad():
            cond = net.encode_obs(obs, latest=True)
            torch.testing.assert_close(net._denoise(noisy, t, cond), trained._denoise(noisy, t, cond),
                                       rtol=1e-5, atol=1e-5)
    tuned.fit()                                   # and it trains on from there
    tuned.close()
    assert read_checkpoint_meta(tmp_path / "tuned" / "checkpoints" / "last")[0].train_prefix_steps == 2

    with pytest.raises(ConfigError, match="does not fit this policy"):    # another network: refused, named
        Trainer(tiny_config(store, f"training.init_from={ckpt}", "policy.down_dims=[8,16]", crop=[40, 40]),
                tmp_path / "other", progress=False)
    with pytest.raises(ConfigError, match="init_from"):
        Trainer(tiny_config(store, f"training.init_from={tmp_path / 'nowhere'}"), tmp_path / "none", progress=False)
