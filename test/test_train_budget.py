"""Training for a time budget (training.time_budget_s: a short GPU loan) and keeping the model every
N steps (checkpoint.keep_every: a learning curve). The trainer's clock is replaced by one that
advances a fixed time per reading, so the step counts are exact on any machine."""

import json
import time
import types

import pytest
import yaml

from dp_ros.policy.checkpoint import load_checkpoint, read_checkpoint_meta
from dp_ros.train import trainer as trainer_module
from dp_ros.train.config import ConfigError
from dp_ros.train.trainer import BUDGET_TIMED_STEPS, BUDGET_UNTIMED_STEPS, Trainer
from test_train_common import make_store, tiny_config

QUIET = ["training.log_every=100000", "training.eval_every=100000",
         "training.checkpoint_every=100000", "training.max_steps=1000000", "training.warmup_steps=5"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("budget") / "reach.zarr")


@pytest.fixture
def clock(monkeypatch):
    """The trainer reads perf_counter once per step (and twice at the start): each reading is
    `seconds_per_reading` later than the one before."""
    state = {"now": 0.0, "dt": 0.1}

    def perf_counter():
        state["now"] += state["dt"]
        return state["now"]
    monkeypatch.setattr(trainer_module, "time",
                        types.SimpleNamespace(perf_counter=perf_counter, time=time.time))
    return state


def records(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_the_lr_schedule_is_fitted_to_the_budget(store, tmp_path, clock):
    run = tmp_path / "run"
    tr = Trainer(tiny_config(store, *QUIET, "training.time_budget_s=10"), run, progress=False)
    summary = tr.fit()
    tr.close()
    probe_end = BUDGET_UNTIMED_STEPS + BUDGET_TIMED_STEPS
    # 10 steps/s measured; ~5 s of the 10 s spent by the end of the probe; 90 % of the rest
    assert probe_end < summary["step"] < 1000000
    assert summary["step"] == pytest.approx(probe_end + 10 * 5 * 0.9, abs=2)
    # the schedule ran to its end inside the budget: the last LR is the cosine's floor
    last = [r for r in records(run) if "train/lr" in r][-1]
    assert last["step"] == summary["step"] and last["train/lr"] == pytest.approx(0.0, abs=1e-9)
    # the run dir and last/ carry the fitted length, so a resumed run keeps this schedule
    cfg = yaml.safe_load((run / "config.yaml").read_text())["training"]
    assert cfg["max_steps"] == summary["step"] and cfg["time_budget_s"] == 0
    _, extra = read_checkpoint_meta(run / "checkpoints" / "last")
    assert extra["steps"] == summary["step"]
    assert extra["train_config"]["training"]["max_steps"] == summary["step"]
    # and the last step was evaluated, although it is no multiple of eval_every
    assert any("val/action_mse" in r and r["step"] == summary["step"] for r in records(run))


def test_a_spent_budget_stops_the_run_and_keeps_it(store, tmp_path, clock):
    clock["dt"] = 1.0          # slower than the budget allows even the rate probe
    run = tmp_path / "run"
    tr = Trainer(tiny_config(store, *QUIET, "training.time_budget_s=20"), run, progress=False)
    summary = tr.fit()
    tr.close()
    assert summary["step"] < BUDGET_UNTIMED_STEPS + BUDGET_TIMED_STEPS
    assert summary["step"] == pytest.approx(20, abs=2)
    _, extra = read_checkpoint_meta(run / "checkpoints" / "last")
    assert extra["steps"] == summary["step"]
    assert any("val/action_mse" in r and r["step"] == summary["step"] for r in records(run))


def test_kept_models_make_a_learning_curve(store, tmp_path):
    run = tmp_path / "run"
    tr = Trainer(tiny_config(store, "training.max_steps=6", "checkpoint.keep_every=2"), run, progress=False)
    tr.fit()
    tr.close()
    kept = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
    assert kept == ["step_2", "step_4", "step_6"]
    for name in kept:
        _, extra = read_checkpoint_meta(run / "checkpoints" / name)
        assert extra["steps"] == int(name[5:])
        load_checkpoint(run / "checkpoints" / name)      # each one deploys


@pytest.mark.parametrize("override", ["training.time_budget_s=-1", "checkpoint.keep_every=-2"])
def test_budget_and_keep_settings_are_checked(store, override):
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        tiny_config(store, override)
