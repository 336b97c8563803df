"""Data parallel: 2 gloo processes (torchrun) with batch B train like 1 process with batch 2B.

Why they agree: the sampler cuts the same (seed, epoch) permutation into global batches of 2B
and gives rank r the r-th half; every per-sample random number (timestep, noise, crop window) is
seeded by (seed, step, index in the global batch); DDP averages the two ranks' gradients of
their mean losses, i.e. the gradient of the mean over 2B; GroupNorm has no batch statistics and
the U-Net has no dropout. What is left is float summation order."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dp_ros.policy.checkpoint import load_training_state
from dp_ros.train.trainer import Trainer
from test_train_common import make_store, tiny_config  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["training.max_steps=4", "training.eval_every=2", "training.checkpoint_every=2",
         "training.eval_batch_size=4"]


def train_losses(run):
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return ({r["step"]: r["train/loss"] for r in recs if "train/loss" in r},
            {r["step"]: r["val/action_mse"] for r in recs if "val/action_mse" in r})


def test_two_gloo_processes_match_one_with_the_combined_batch(tmp_path):
    store = make_store(tmp_path / "reach.zarr")
    yml = tmp_path / "tiny.yaml"
    yml.write_text(tiny_config(store, crop=[40, 40]).to_yaml())

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "dp_ros" / "train" / "cli.py"), "--config", str(yml), "--no-progress",
           "--out", str(tmp_path / "ddp"), "training.batch_size=2", *STEPS]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count('"run_dir"') == 1          # only rank 0 reports

    cfg = tiny_config(store, "training.batch_size=4", *STEPS, crop=[40, 40])
    single = Trainer(cfg, tmp_path / "single", progress=False)
    init = {k: v.clone() for k, v in single.policy.state_dict().items()}
    single.fit()
    single.close()

    (ddp_loss, ddp_mse), (one_loss, one_mse) = train_losses(tmp_path / "ddp"), \
        train_losses(tmp_path / "single")
    assert sorted(ddp_loss) == sorted(one_loss) == [1, 2, 3, 4]
    for s in one_loss:
        assert ddp_loss[s] == pytest.approx(one_loss[s], rel=1e-4, abs=1e-5)
    for s in one_mse:
        assert ddp_mse[s] == pytest.approx(one_mse[s], rel=1e-3, abs=1e-6)

    a = load_training_state(tmp_path / "ddp" / "checkpoints" / "last")
    b = load_training_state(tmp_path / "single" / "checkpoints" / "last")
    assert a["world_size"] == 2 and b["world_size"] == 1 and a["step"] == b["step"] == 4
    assert len(a["rng"]) == 2
    # Adam divides by sqrt(v): for a weight whose gradient is ~0 a rounding-level difference in
    # the gradient can move it by up to ~lr per step, so compare each tensor's difference with
    # how far training moved it, and bound the worst single weight by a fraction of one step.
    lr = cfg.training.lr
    worst = rel_worst = 0.0
    for key in ("model", "ema"):
        wa = a["model"] if key == "model" else a["ema"]["averaged_model"]
        wb = b["model"] if key == "model" else b["ema"]["averaged_model"]
        for k, v in wb.items():
            if not v.is_floating_point() or k.startswith("normalizer."):
                continue
            diff = (wa[k] - v).float()
            update = (v - init[k]).float().norm()
            worst = max(worst, float(diff.abs().max()))
            if update > 0:
                rel_worst = max(rel_worst, float(diff.norm() / update))
            assert float(diff.abs().max()) < 0.5 * lr, k
    assert rel_worst < 1e-2, rel_worst
    moved = max(float((b["model"][k] - v).abs().max()) for k, v in init.items()
                if v.is_floating_point())
    assert moved > 0.5 * lr          # training did move the weights: agreeing is not trivial
    for k, v in b["model"].items():
        if k.startswith("normalizer."):
            assert torch.equal(a["model"][k], v)
    print(f"max |w_ddp - w_single| = {worst:.2e}, max |dw| / |update| = {rel_worst:.2e}, "
          f"max |update| = {moved:.2e}")
