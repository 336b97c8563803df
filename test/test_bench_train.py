"""`dp-ros bench train`: runs a tiny config on synthetic data and prints one JSON with the
machine, each precision's speed and auto's choice; --compare-loss prints both loss curves.
Measurements only: nothing here asserts a timing."""

import json
import math

from dp_ros.cli import bench
from dp_ros.cli.bench_train import synthetic_shapes, write_synthetic_store
from dp_ros.data.replay_buffer import ReplayBuffer
from dp_ros.train.config import load_config

CONFIG = "config/train/reach_image.yaml"
TINY = ["data.image_size=[32,32]", "data.crop=[28,28]", "policy.down_dims=[8,16]",
        "policy.kernel_size=3", "policy.diffusion_step_embed_dim=8", "policy.n_groups=4",
        "policy.image_feature_dim=8", "policy.num_keypoints=4", "policy.resnet_stages=3",
        "policy.num_train_timesteps=20", "policy.pred_horizon=8", "policy.action_horizon=4",
        "training.batch_size=2", "training.num_threads=1", "training.warmup_steps=1",
        "training.num_workers=0"]


def test_bench_train_prints_json(capsys):
    rc = bench.main(["train", "--config", CONFIG, "--steps", "2", "--warmup", "0",
                     "--synthetic", "--precisions", "fp32,bf16,auto", *TINY])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["data"] == "synthetic" and out["batch_size"] == 2 and out["steps"] == 2
    m = out["machine"]
    assert {"cpu", "cores", "amx", "avx512_bf16", "gpu", "torch_threads"} <= set(m)
    assert isinstance(m["amx"], bool)
    assert out["auto"]["picks"] in ("fp32", "bf16", "fp16") and out["auto"]["reason"]
    assert {"fp32", "bf16"} <= set(out["results"])
    for name, r in out["results"].items():
        assert r["s_per_step"] > 0 and math.isfinite(r["samples_per_s"])
    assert out["results"]["fp32"]["mixed_precision"] == "fp32"
    assert out["results"]["bf16"]["mixed_precision"] == "bf16"
    assert out["speedup_vs_fp32"]["fp32"] == 1.0
    # auto is timed only when it runs something not already listed
    assert ("auto" in out["results"]) == (
        (out["auto"]["picks"], out["auto"]["channels_last"]) not in
        {(r["mixed_precision"], r["channels_last"]) for r in out["results"].values()})


def test_synthetic_store_has_the_configs_shapes(tmp_path):
    cfg = load_config(CONFIG, ["policy.lowdim_obs={robot_pose: 3}", "policy.action_dim=3",
                               "data.image_size=[24,20]", "data.crop=null"])
    shapes = synthetic_shapes(cfg)
    assert shapes == {"cameras": {"top": [24, 20]}, "lowdim": {"robot_pose": 3},
                      "action_dim": 3, "frequency": 10.0}
    buf = ReplayBuffer.open(write_synthetic_store(tmp_path / "s.zarr", shapes, n_windows=40))
    assert buf["top"].shape[1:] == (24, 20, 3) and buf["action"].shape[1] == 3
    assert buf["robot_pose"].shape[1] == 3 and buf.n_steps >= 40


def test_compare_loss_prints_curves(capsys):
    rc = bench.main(["train", "--config", CONFIG, "--synthetic", "--compare-loss", "20",
                     "--window", "10", *TINY])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["runs"]) == {"fp32", "bf16", "fp32_seed+1"}
    assert out["runs"]["bf16"]["ran"] == "bf16" and out["runs"]["fp32"]["ran"] == "no"
    last = out["moving_average"]["20"]
    assert all(math.isfinite(v) for v in last.values())
    assert set(out["max_rel_diff"]) == {"bf16_vs_fp32", "fp32_other_seed_vs_fp32"}


def test_bench_data_times_lazy_and_held_images(capsys):
    """`dp-ros bench data`: both ways of reading the images, from the same training set, in one
    run; the held one really is held (and the lazy one is not)."""
    rc = bench.main(["data", "--config", "config/train/pusht_image_cpu.yaml", "--synthetic",
                     "--batches", "2", "training.batch_size=4"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["data"] == "synthetic" and out["batch_size"] == 4
    assert out["lazy"]["images_in_memory"] is False and out["in_memory"]["images_in_memory"] is True
    for mode in ("lazy", "in_memory"):
        assert out[mode]["batches"] == 2 and out[mode]["batch_ms_median"] > 0
    assert out["speedup"] == round(out["lazy"]["batch_ms_median"] / out["in_memory"]["batch_ms_median"], 2)
