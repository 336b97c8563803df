"""The training loop (Trainer): builds the policy, optimiser, EMA and data from a TrainConfig,
trains, logs, evaluates and checkpoints; the pieces live beside it in dp_ros.train (seeding,
loss, data, evaluation, distributed, checkpointing).

Reproducibility and data parallelism rest on one rule: every random number a training sample
needs (diffusion timestep, noise, crop window) is drawn from a generator seeded by
(seed, step, the sample's index in the *global* batch), and the data order comes from a
permutation seeded by (seed, epoch). So
  * N processes with batch B see the same global batch and the same per-sample randomness as
    one process with batch N*B; DDP averages the N per-process mean losses' gradients, which is
    the gradient of the mean over N*B (equal counts per rank), and GroupNorm has no batch
    statistics, so the updates agree up to float summation order;
  * resuming at step k replays exactly what an uninterrupted run does from step k, whatever the
    DataLoader's workers or prefetching did.
The one exception is dropout (transformer backbone only), which uses the process's torch RNG:
it is restored on resume but differs between 1 and N processes."""

from __future__ import annotations

import json
import math
import shlex
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from dp_ros.data.dataset import train_val_split
from dp_ros.policy.checkpoint import save_checkpoint
from dp_ros.policy.diffusion import DiffusionPolicy
from dp_ros.policy.ema import EMAModel
from dp_ros.train.checkpointing import (CHECKPOINT_DIR, CONFIG_FILE, METRICS_FILE,
                                        TRAINING_STATE_VERSION, checkpoint_dir, default_run_dir,
                                        deploy_model, git_info, holds_run, init_weights_from,
                                        load_resume_state, truncate_metrics)
from dp_ros.train.config import ROLLOUT_METRICS, ConfigError, TrainConfig, resolve_policy_config
from dp_ros.train.data import (SeededBatchSampler, fit_normalizer, inspect_data,
                               make_train_loader, make_train_val_sets)
from dp_ros.train.distributed import info, init_distributed
from dp_ros.train.evaluation import evaluate_policy, write_eval_images
from dp_ros.train.loss import LossModule
from dp_ros.train.precision import resolve_precision
from dp_ros.train.seeding import (draw_randomness, rng_state, sample_seed, seed_everything,
                                  set_rng_state)
from dp_ros.viz.progress import progress_bar

# training.time_budget_s: the first steps (allocator, cuDNN autotuning, loader workers) are not
# timed; the next ones set the rate; steps get this share of what is left (evals and saves the rest).
BUDGET_UNTIMED_STEPS = 10
BUDGET_TIMED_STEPS = 40
BUDGET_STEP_SHARE = 0.9


class Trainer:
    """Build everything from a TrainConfig; fit() trains (or continues, with resume=True) and
    writes RUN_DIR/{config.yaml, metrics.jsonl, tb/, checkpoints/{last,best}/}."""

    def __init__(self, cfg: TrainConfig, run_dir=None, resume: bool = False,
                 progress: bool = True, command_line: str | None = None):
        t = cfg.training
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        self.cfg = cfg
        self.progress = progress
        self.command_line = command_line or " ".join(shlex.quote(a) for a in sys.argv)
        self.dist, self.device = init_distributed(t.device)
        self.is_main = self.dist.is_main
        self.run_dir = self._agree_on_run_dir(run_dir)
        if not resume and holds_run(self.run_dir):
            raise ConfigError(f"{self.run_dir} already holds a run; pass --resume {self.run_dir} "
                              f"to continue it or --out another directory")

        self.data_info = inspect_data(cfg)
        self.policy_cfg = resolve_policy_config(cfg, self.data_info)
        cfg.policy = self.policy_cfg.to_dict()     # the run dir's config is complete
        n_eps = self.data_info["n_episodes"]
        self.train_episodes, self.val_episodes = train_val_split(n_eps, cfg.data.val_ratio,
                                                                 cfg.data.split_seed)
        self.train_set, self.val_set = make_train_val_sets(cfg.data, self.policy_cfg,
                                                           self.train_episodes, self.val_episodes)
        global_batch = t.batch_size * self.dist.world
        if len(self.train_set) < global_batch:
            raise ConfigError(f"the training episodes give {len(self.train_set)} windows, fewer "
                              f"than one global batch ({t.batch_size} x {self.dist.world} "
                              f"processes); lower training.batch_size or add data")

        # Same init on every rank (DDP also broadcasts rank 0's weights, this keeps EMA equal).
        seed_everything(t.seed)
        self.policy = DiffusionPolicy(self.policy_cfg)
        self.policy.set_normalizer(fit_normalizer(self.train_set,
                                                  ["action", *self.policy_cfg.lowdim_obs]))
        if t.init_from and not resume:   # a resumed run has its own weights in last/
            widened = init_weights_from(self.policy, t.init_from)
            info(f"weights from {t.init_from}" + (f" (widened, new inputs at zero: {', '.join(widened)})"
                                                  if widened else ""))
        self.policy.to(self.device).train()
        self.ema = EMAModel(self.policy, power=t.ema_power, max_value=t.ema_max_decay,
                            inv_gamma=t.ema_inv_gamma)
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=t.lr,
                                           betas=tuple(t.betas), eps=t.eps,
                                           weight_decay=t.weight_decay)
        self.lr_scheduler = self._make_lr_scheduler()
        self.precision = self._resolve_precision()
        self.amp_dtype = self.precision.dtype
        if self.precision.channels_last:
            # NHWC conv weights make the encoder's convolutions (and their outputs) NHWC;
            # params keep their identity, so the optimiser built above is unaffected.
            self.policy.obs_encoder.to(memory_format=torch.channels_last)
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.amp_dtype == torch.float16)
        self.loss_module = LossModule(self.policy)
        self.model = self.dist.wrap(self.loss_module, self.device)
        seed_everything(t.seed + self.dist.rank)   # dropout differs per rank, as it should

        self.sampler = SeededBatchSampler(len(self.train_set), t.batch_size, self.dist.rank,
                                          self.dist.world, t.seed)
        self.loader = make_train_loader(self.train_set, self.sampler, t.num_workers,
                                        pin_memory=self.device.type == "cuda", seed=t.seed)

        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_value = None
        self.best_step = None
        self.last_metrics: dict = {}
        self.wall_time_before = 0.0
        self._t0 = time.time()
        # The code that trains is the code at start: later commits must not relabel a run.
        self.git = git_info()
        self._writer = None
        if resume:
            self._load_resume()
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / CONFIG_FILE).write_text(cfg.to_yaml())
            if resume:
                truncate_metrics(self.run_dir, self.step)
        n_params = sum(p.numel() for p in self.policy.parameters())
        info(f"run dir {self.run_dir}; {n_eps} episodes ({len(self.train_episodes)} train, "
             f"{len(self.val_episodes)} val), {len(self.train_set)} train windows; "
             f"{n_params / 1e6:.2f}M parameters; device {self.device}"
             f"{f' x {self.dist.world} processes' if self.dist.enabled else ''}; "
             f"amp {self.amp_dtype}; step {self.step}/{t.max_steps}")

    # --- setup helpers ----------------------------------------------------------------------
    def _agree_on_run_dir(self, run_dir) -> Path:
        path = (str(run_dir) if run_dir is not None else
                (str(default_run_dir(self.cfg)) if self.is_main else None))
        return Path(self.dist.broadcast_from_main(path))   # ranks would disagree on a timestamp

    def _resolve_precision(self):
        try:
            p = resolve_precision(self.cfg.training.mixed_precision, self.device.type,
                                  has_cameras=bool(self.policy_cfg.cameras))
        except ValueError as e:
            raise ConfigError(f"training.mixed_precision: {e}") from None
        info(p.describe())
        return p

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    # --- state ------------------------------------------------------------------------------
    def training_state(self, rng: list) -> dict:
        return {"version": TRAINING_STATE_VERSION,
                "model": self.policy.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "lr_scheduler": self.lr_scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "step": self.step, "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch, "rng": rng, "world_size": self.dist.world,
                "best_value": self.best_value, "best_step": self.best_step,
                "wall_time_s": self.wall_time(), "config": self.cfg.to_dict()}

    def _load_resume(self) -> None:
        ts = load_resume_state(self.run_dir, self.cfg, self.dist.world)
        self.policy.load_state_dict(ts["model"])
        self.ema.load_state_dict(ts["ema"])
        self.optimizer.load_state_dict(ts["optimizer"])
        self.lr_scheduler.load_state_dict(ts["lr_scheduler"])
        self.scaler.load_state_dict(ts["scaler"])
        self.step, self.epoch = int(ts["step"]), int(ts["epoch"])
        self.batch_in_epoch = int(ts["batch_in_epoch"])
        self.best_value, self.best_step = ts.get("best_value"), ts.get("best_step")
        self.wall_time_before = float(ts.get("wall_time_s", 0.0))
        rng = ts.get("rng") or []
        if len(rng) == self.dist.world:
            set_rng_state(rng[self.dist.rank], self.device)
        else:
            seed_everything(sample_seed(self.cfg.training.seed, self.step, self.dist.rank))
        info(f"resumed {self.run_dir} at step {self.step} (epoch {self.epoch})")

    def wall_time(self) -> float:
        return self.wall_time_before + (time.time() - self._t0)

    # --- logging ----------------------------------------------------------------------------
    @property
    def writer(self):
        if self._writer is None and self.is_main:
            from torch.utils.tensorboard import SummaryWriter
            # On resume drop events a crashed run logged after the checkpoint we continue from.
            self._writer = SummaryWriter(str(self.run_dir / "tb"),
                                         purge_step=self.step + 1 if self.step else None)
        return self._writer

    def _log(self, record: dict) -> None:
        if not self.is_main:
            return
        with open(self.run_dir / METRICS_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")
        for k, v in record.items():
            if "/" in k and isinstance(v, (int, float)) and math.isfinite(v):
                self.writer.add_scalar(k, v, record["step"])

    # --- checkpoints ------------------------------------------------------------------------
    def checkpoint_extra(self) -> dict:
        cfg, di = self.cfg, self.data_info
        return {
            "task": di["task"], "robot": di["robot"], "trained": True,
            "weights": "ema", "weights_dtype": cfg.checkpoint.weights_dtype,
            "data_path": di["path"], "n_episodes": di["n_episodes"],
            "train_episodes": self.train_episodes, "val_episodes": self.val_episodes,
            "data_frequency_hz": di["frequency"], "demo_motion": di["demo_motion"],
            "steps": self.step, "epoch": self.epoch, "max_steps": cfg.training.max_steps,
            "global_batch_size": cfg.training.batch_size * self.dist.world,
            "world_size": self.dist.world, "device": str(self.device),
            "mixed_precision": self.precision.to_dict(),
            "wall_time_s": round(self.wall_time(), 3), **self.git,
            "command_line": self.command_line, "metrics": self.last_metrics,
            "best": {"metric": cfg.checkpoint.best_metric, "value": self.best_value,
                     "step": self.best_step},
            "train_config": cfg.to_dict(),
        }

    def save(self, which: str) -> Path | None:
        """Collective under DDP (RNG states are gathered); rank 0 writes."""
        rng = self.dist.all_gather(rng_state(self.device))
        if not self.is_main:
            return None
        c = self.cfg.checkpoint
        with_state = which == "last" or c.best_training_state
        model = deploy_model(self.ema.averaged_model, self.policy.normalizer, c.weights_dtype)
        return save_checkpoint(checkpoint_dir(self.run_dir, which), model,
                               extra=self.checkpoint_extra(),
                               training_state=self.training_state(rng) if with_state else None)

    # --- eval -------------------------------------------------------------------------------
    def rollout_due(self) -> bool:
        t = self.cfg.training
        return t.rollout_every > 0 and (self.step % t.rollout_every == 0 or self.step == t.max_steps)

    def rollout(self) -> dict | None:
        """Lockstep rollouts of the EMA model in the sim task, through the deployed loading path:
        it is saved as checkpoints/rollout/ and evaluated from there (collective save; rank 0 runs)."""
        from dp_ros.sim.lockstep import LockstepEvaluator

        t = self.cfg.training
        path = self.save("rollout")
        if not self.is_main:
            return None
        start = time.perf_counter()
        evaluator = LockstepEvaluator(path, device=str(self.device), seed=t.rollout_seed,
                                      episode_timeout_s=t.rollout_timeout_s, stitch=t.rollout_stitch,
                                      delay_s=t.rollout_delay_s)
        s = evaluator.evaluate(t.rollout_episodes)
        info(f"step {self.step}: lockstep rollouts {s['success_rate']:.0%} success, mean max coverage "
             f"{s['mean_max_coverage']:.3f} ({t.rollout_episodes} episodes, stitch {evaluator.stitch}, "
             f"delay {t.rollout_delay_s * 1e3:.0f} ms, "
             f"{time.perf_counter() - start:.0f} s)")
        return {"rollout/success_rate": s["success_rate"], "rollout/mean_max_coverage": s["mean_max_coverage"],
                "rollout/mean_final_coverage": s["mean_final_coverage"]}

    def evaluate(self) -> dict | None:
        """Offline eval of the EMA model on rank 0 (and lockstep rollouts when due); saves best/
        when the chosen metric improved: lower action MSE / loss, or higher rollout score."""
        t, c = self.cfg.training, self.cfg.checkpoint
        improved = False
        metrics = None
        rollout = self.rollout() if self.rollout_due() else None
        if self.is_main:
            split, ds = ("val", self.val_set) if self.val_set is not None else \
                ("train", self.train_set)
            bs = t.eval_batch_size or t.batch_size
            res = evaluate_policy(self.ema.averaged_model, ds, t.eval_batches, bs, seed=t.seed,
                                  n_samples=t.plot_samples)
            metrics = {f"{split}/{k}": res[k] for k in ("action_mse", "action_mse_executed",
                                                        "loss")}
            metrics.update(rollout or {})
            self.last_metrics = {"step": self.step, "split": split, **metrics,
                                 "n_windows": res["n_windows"]}
            if c.best_metric in ROLLOUT_METRICS:   # higher is better, known at rollout steps only
                value = None if rollout is None else rollout[c.best_metric.replace("rollout_", "rollout/", 1)]
                better = value is not None and (self.best_value is None or value > self.best_value)
            else:
                value = res[c.best_metric]
                better = self.best_value is None or value < self.best_value
            if better:
                self.best_value, self.best_step = value, self.step
                improved = True
            best_key = c.best_metric.replace("rollout_", "rollout/best_", 1) if c.best_metric in ROLLOUT_METRICS \
                else f"{split}/best_{c.best_metric}"
            self._log({"step": self.step, "epoch": self.epoch, **metrics, best_key: self.best_value})
            if res.get("samples") is not None:
                write_eval_images(self.writer, res["samples"], self.policy_cfg, self.step)
        if self.dist.broadcast_from_main(improved) and c.save_best:
            self.save("best")
        return metrics

    # --- training ---------------------------------------------------------------------------
    def _batches(self):
        """Endless batches; (epoch, batch_in_epoch) always says where the next one comes from."""
        while True:
            self.sampler.set_epoch(self.epoch, start=self.batch_in_epoch)
            for batch in self.loader:
                self.batch_in_epoch += 1
                yield batch
            self.epoch += 1
            self.batch_in_epoch = 0

    def train_step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.cfg.training
        B = batch["action"].shape[0]
        base = self.dist.rank * t.batch_size     # this rank's slice of the global batch
        seeds = [sample_seed(t.seed, self.step, base + j) for j in range(B)]
        noise, timesteps, crops = draw_randomness(seeds, self.policy_cfg)
        obs = {k: v.to(self.device, non_blocking=True) for k, v in batch["obs"].items()}
        action = batch["action"].to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self.model(obs, action, noise, timesteps, crops)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        max_norm = t.grad_clip if t.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.lr_scheduler.step()
        self.ema.step(self.policy)
        return loss.detach(), grad_norm.detach()

    def _make_lr_scheduler(self):
        from diffusers.optimization import get_scheduler
        t = self.cfg.training
        return get_scheduler(t.lr_scheduler, self.optimizer, num_warmup_steps=t.warmup_steps,
                             num_training_steps=t.max_steps)

    def _fit_schedule_to_budget(self, steps_per_s: float, spent_s: float) -> int:
        """Set max_steps so the rest of the LR schedule fits the time budget (at the rate just
        measured); the budget is then spent: the run dir's config and the checkpoints carry the
        new max_steps, so a resumed run keeps this schedule."""
        t = self.cfg.training
        left = max(t.time_budget_s - spent_s, 0.0)
        new_max = self.dist.broadcast_from_main(self.step + max(1, int(steps_per_s * left * BUDGET_STEP_SHARE)))
        state = self.lr_scheduler.state_dict()      # where the schedule is; its shape comes anew
        t.max_steps, t.time_budget_s = new_max, 0.0
        self.lr_scheduler = self._make_lr_scheduler()
        self.lr_scheduler.load_state_dict(state)
        info(f"time budget: {steps_per_s:.2f} steps/s measured, {left:.0f} s left -> "
             f"training.max_steps = {new_max}")
        if self.is_main:
            (self.run_dir / CONFIG_FILE).write_text(self.cfg.to_yaml())
        return new_max

    def fit(self, stop_at: int | None = None) -> dict:
        """Train to training.max_steps (or stop after step `stop_at`, saving last/, without
        changing the LR schedule: for splitting a run). Returns a summary."""
        t = self.cfg.training
        end = t.max_steps if stop_at is None else min(int(stop_at), t.max_steps)
        budget_s = t.time_budget_s              # 0 = train to max_steps
        fit_start = time.perf_counter()
        timed_from = self.step + BUDGET_UNTIMED_STEPS
        t_timed = None
        batches = self._batches()
        bar = progress_bar(total=t.max_steps, initial=self.step, desc="train", unit="step",
                           enabled=self.progress and self.is_main)
        loss_sum = torch.zeros((), device=self.device)
        gn_sum = torch.zeros((), device=self.device)
        n_acc = 0
        t_log, step_log = time.perf_counter(), self.step
        last_loss = None
        try:
            while self.step < end:
                batch = next(batches)
                loss, grad_norm = self.train_step(batch)
                self.step += 1
                loss_sum += loss.float()
                gn_sum += grad_norm.float()
                n_acc += 1
                bar.update(1)
                if self.step % t.log_every == 0 or self.step == end:
                    last_loss = self.dist.mean(loss_sum / n_acc)
                    now = time.perf_counter()
                    rate = (self.step - step_log) / max(now - t_log, 1e-9)
                    lr = self.lr_scheduler.get_last_lr()[0]
                    self._log({"step": self.step, "epoch": self.epoch, "train/loss": last_loss,
                               "train/lr": lr, "train/grad_norm": float(gn_sum) / n_acc,
                               "train/ema_decay": self.ema.decay, "train/steps_per_s": rate})
                    bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}", refresh=False)
                    loss_sum.zero_()
                    gn_sum.zero_()
                    n_acc = 0
                    t_log, step_log = now, self.step
                if budget_s:
                    now = time.perf_counter()
                    if self.step == timed_from:
                        t_timed = now
                    elif t_timed is not None and self.step == timed_from + BUDGET_TIMED_STEPS \
                            and t.time_budget_s:
                        new_max = self._fit_schedule_to_budget(BUDGET_TIMED_STEPS / (now - t_timed),
                                                               now - fit_start)
                        end = new_max if stop_at is None else min(int(stop_at), new_max)
                        bar.total = new_max
                    if self.dist.broadcast_from_main(now - fit_start > budget_s) and self.step < end:
                        info(f"time budget of {budget_s:.0f} s spent at step {self.step}: stopping")
                        end = self.step     # the evals, saves and summary below see the last step
                final = self.step == end
                if self.step % t.eval_every == 0 or self.step == t.max_steps or (final and budget_s):
                    self.evaluate()
                if self.cfg.checkpoint.keep_every and self.step % self.cfg.checkpoint.keep_every == 0:
                    self.save(f"step_{self.step}")
                if self.step % t.checkpoint_every == 0 or final:
                    self.save("last")
        finally:
            bar.close()
            if self._writer is not None:
                self._writer.flush()
        figures = self.write_figures() if self.is_main else []
        return {"run_dir": str(self.run_dir), "step": self.step, "epoch": self.epoch, "figures": figures,
                "loss": last_loss, "wall_time_s": round(self.wall_time(), 3),
                "best": {"metric": self.cfg.checkpoint.best_metric, "value": self.best_value,
                         "step": self.best_step},
                "metrics": self.last_metrics}

    def write_figures(self) -> list[str]:
        """The run's curves as PNGs beside the checkpoints (RUN_DIR/checkpoints/*.png), so a model
        card can show them without a TensorBoard server. Never fails the run."""
        from dp_ros.train.plots import training_figures
        try:
            if self._writer is not None:
                self._writer.flush()        # the figures also read scalars logged only to TensorBoard
            return training_figures(self.run_dir / METRICS_FILE, self.run_dir / CHECKPOINT_DIR)
        except Exception as exc:  # noqa: BLE001 - a missing figure must not lose a trained model
            info(f"no training figures: {type(exc).__name__}: {exc}")
            return []

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
