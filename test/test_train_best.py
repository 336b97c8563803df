"""Which checkpoint best/ holds: the step with the best logged figure, by validation MSE (lower)
or by lockstep rollout score in the sim task (higher), and the rollout curve in TensorBoard."""

import json

import pytest

from dp_ros.policy.checkpoint import read_checkpoint_meta
from dp_ros.train.config import ConfigError
from dp_ros.train.trainer import Trainer
from test_train_common import make_store, tiny_config


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("best") / "reach.zarr")


def records(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_best_holds_the_step_with_the_lowest_validation_mse(store, tmp_path):
    run = tmp_path / "run"
    tr = Trainer(tiny_config(store, "training.max_steps=8", "training.eval_every=1"), run, progress=False)
    tr.fit()
    tr.close()
    mse = {r["step"]: r["val/action_mse"] for r in records(run) if "val/action_mse" in r}
    assert sorted(mse) == list(range(1, 9))
    want = min(mse, key=lambda s: (mse[s], s))          # the first of equal values
    _, extra = read_checkpoint_meta(run / "checkpoints" / "best")
    assert extra["steps"] == want and extra["best"]["step"] == want
    assert extra["best"]["value"] == pytest.approx(mse[want])
    # the curve is not flat at the start, so keeping the first or the last would be caught
    assert len(set(mse.values())) > 1


def test_best_by_lockstep_rollout_score(store, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(store, "training.max_steps=6", "training.eval_every=2", "training.rollout_every=2",
                      "training.rollout_episodes=1", "training.rollout_timeout_s=2.0", "training.rollout_stitch=none",
                      "training.rollout_delay_s=0.1", "checkpoint.best_metric=rollout_mean_max_coverage")
    tr = Trainer(cfg, run, progress=False)
    summary = tr.fit()
    tr.close()
    score = {r["step"]: r["rollout/mean_max_coverage"] for r in records(run) if "rollout/mean_max_coverage" in r}
    assert sorted(score) == [2, 4, 6]
    assert all(0.0 <= v <= 1.0 for v in score.values())
    want = max(score, key=lambda s: (score[s], -s))     # the first of equal values
    _, extra = read_checkpoint_meta(run / "checkpoints" / "best")
    assert extra["steps"] == want and summary["best"]["step"] == want
    assert "rollout_score.png" in " ".join(summary["figures"])
    assert list((run / "tb").iterdir())


def test_rollout_settings_are_checked(store):
    with pytest.raises(ConfigError, match="needs rollouts"):
        tiny_config(store, "checkpoint.best_metric=rollout_success_rate")
    with pytest.raises(ConfigError, match="multiple of training.eval_every"):
        tiny_config(store, "training.eval_every=3", "training.rollout_every=4")
    with pytest.raises(ConfigError, match="rollout_stitch must be one of"):
        tiny_config(store, "training.rollout_stitch=smooth")
    with pytest.raises(ConfigError, match="rollout_delay_s must be >= 0"):
        tiny_config(store, "training.rollout_delay_s=-0.1")
