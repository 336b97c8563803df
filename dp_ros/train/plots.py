"""Training pictures: eval images for TensorBoard, drawn with numpy + cv2 (cheap enough to make
at every evaluation), and the end-of-training PNG figures from metrics.jsonl and the TensorBoard
events beside it (matplotlib).

action_chunks_image / obs_strip_image return RGB uint8 arrays (H, W, 3), for
SummaryWriter.add_image(dataformats="HWC")."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

DEMO_RGB = (0, 150, 0)
PRED_RGB = (220, 30, 30)
OBS_SHADE = (225, 225, 225)
EXEC_SHADE = (255, 240, 200)
AXIS_RGB = (120, 120, 120)
TEXT_RGB = (0, 0, 0)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _to_np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def action_chunks_image(demo, pred, obs_horizon: int, action_horizon: int,
                        panel_hw=(120, 200), dim_names=None) -> np.ndarray:
    """Grid: one row per sample, one column per action dimension; each panel plots the
    demonstrated (green) and predicted (red) chunk over the Tp steps. Grey: the observation
    steps; yellow: the Ta steps that would be executed. Per-dimension y range is shared by the
    samples of that column so panels can be compared."""
    demo, pred = _to_np(demo), _to_np(pred)
    if demo.ndim != 3 or demo.shape != pred.shape:
        raise ValueError(f"demo and pred must both be (S, Tp, Da), got {demo.shape}, {pred.shape}")
    S, Tp, Da = demo.shape
    ph, pw = panel_hw
    margin, header = 6, 22
    img = np.full((header + S * ph, Da * pw, 3), 255, np.uint8)
    cv2.putText(img, "demo", (6, 15), FONT, 0.45, DEMO_RGB, 1, cv2.LINE_AA)
    cv2.putText(img, "pred", (60, 15), FONT, 0.45, PRED_RGB, 1, cv2.LINE_AA)
    cv2.putText(img, f"To={obs_horizon} Ta={action_horizon}", (116, 15), FONT, 0.4, TEXT_RGB, 1,
                cv2.LINE_AA)
    both = np.concatenate([demo, pred], axis=0)
    both = np.where(np.isfinite(both), both, np.nan)
    for d in range(Da):
        lo, hi = np.nanmin(both[:, :, d]), np.nanmax(both[:, :, d])
        if not np.isfinite(lo) or not np.isfinite(hi):
            lo, hi = -1.0, 1.0
        pad = max(0.08 * (hi - lo), 1e-6)
        lo, hi = lo - pad, hi + pad

        def xy(series, x0, y0):
            xs = x0 + margin + np.arange(Tp) * (pw - 2 * margin) / max(Tp - 1, 1)
            v = np.clip(np.nan_to_num(series, nan=lo), lo, hi)
            ys = y0 + ph - margin - (v - lo) / (hi - lo) * (ph - 2 * margin)
            return np.stack([xs, ys], 1).round().astype(np.int32)

        for s in range(S):
            x0, y0 = d * pw, header + s * ph
            step = (pw - 2 * margin) / max(Tp - 1, 1)

            def sx(k):
                return int(round(x0 + margin + (k - 0.5) * step))
            ex0, ex1 = obs_horizon - 1, obs_horizon - 1 + action_horizon
            cv2.rectangle(img, (max(sx(0), x0), y0 + 1), (sx(obs_horizon), y0 + ph - 2),
                          OBS_SHADE, -1)
            cv2.rectangle(img, (sx(ex0) + 1, y0 + 1), (min(sx(ex1), x0 + pw - 2), y0 + ph - 2),
                          EXEC_SHADE, -1)
            cv2.rectangle(img, (x0, y0), (x0 + pw - 1, y0 + ph - 1), AXIS_RGB, 1)
            cv2.polylines(img, [xy(demo[s, :, d], x0, y0)], False, DEMO_RGB, 2, cv2.LINE_AA)
            cv2.polylines(img, [xy(pred[s, :, d], x0, y0)], False, PRED_RGB, 1, cv2.LINE_8)
            if s == 0:
                name = dim_names[d] if dim_names and d < len(dim_names) else f"a[{d}]"
                cv2.putText(img, f"{name} [{lo:.3g}, {hi:.3g}]", (x0 + 4, y0 + 12), FONT, 0.35,
                            TEXT_RGB, 1, cv2.LINE_AA)
    return img


def obs_strip_image(frames: dict, max_height: int = 96) -> np.ndarray:
    """frames: {camera: (S, To, 3, H, W) in [0, 1] (or uint8)} -> one row per sample, the To
    frames of every camera side by side, scaled to max_height."""
    rows = []
    for cam, x in frames.items():
        x = x.detach().float().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
        if x.dtype != np.uint8:
            x = (np.clip(x, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        if x.ndim != 5 or x.shape[2] != 3:
            raise ValueError(f"camera {cam!r}: frames must be (S, To, 3, H, W), got {x.shape}")
        rows.append(x.transpose(0, 1, 3, 4, 2))     # S, To, H, W, 3
    if not rows:
        return np.zeros((1, 1, 3), np.uint8)
    S = min(r.shape[0] for r in rows)
    sep = 2
    lines = []
    for s in range(S):
        tiles = []
        for r in rows:
            for t in range(r.shape[1]):
                im = r[s, t]
                if im.shape[0] != max_height:
                    w = max(1, int(round(im.shape[1] * max_height / im.shape[0])))
                    im = cv2.resize(im, (w, max_height), interpolation=cv2.INTER_AREA)
                tiles.append(im)
                tiles.append(np.full((max_height, sep, 3), 255, np.uint8))
        line = np.concatenate(tiles[:-1], axis=1)
        lines.append(line)
    width = max(line.shape[1] for line in lines)
    out = []
    for line in lines:
        if line.shape[1] < width:
            line = np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0)), constant_values=255)
        out += [line, np.full((sep, width, 3), 255, np.uint8)]
    return np.ascontiguousarray(np.concatenate(out[:-1], axis=0))


# --- end-of-training figures ----------------------------------------------------------------
FIGURE_SIZE_IN, FIGURE_DPI = (8.0, 4.5), 100      # 800 x 450 px


def read_metrics(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_tensorboard_scalars(tb_dir) -> list[dict]:
    """Every scalar event in a TensorBoard log directory as {"step", "tag", "value"}; empty when
    there is none."""
    tb_dir = Path(tb_dir)
    if not tb_dir.is_dir() or not any(tb_dir.glob("events.out.tfevents.*")):
        return []
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})     # 0: keep every event
    acc.Reload()
    return [{"step": int(e.step), "tag": tag, "value": float(e.value)}
            for tag in acc.Tags().get("scalars", []) for e in acc.Scalars(tag)]


def read_run_scalars(metrics_file, tb_dir=None) -> list[dict]:
    """metrics.jsonl's rows plus the TensorBoard scalars it lacks (a (tag, step) in both counts
    once): a score logged only to TensorBoard, e.g. the closed-loop rollout/ tags, is drawn too.
    tb_dir defaults to the run directory's tb/ (the layout in dp_ros/train/checkpointing.py)."""
    records = read_metrics(metrics_file)
    tb_dir = Path(metrics_file).parent / "tb" if tb_dir is None else tb_dir
    seen = {(k, r["step"]) for r in records for k in r}
    return records + [{"step": e["step"], e["tag"]: e["value"]} for e in read_tensorboard_scalars(tb_dir)
                      if (e["tag"], e["step"]) not in seen]


def metric_curves(records: list[dict], select) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{metric: (steps, values)} of every finite numeric metric whose name `select` accepts."""
    curves: dict[str, list] = {}
    for r in records:
        for k, v in r.items():
            if "/" in k and select(k) and isinstance(v, (int, float)) and np.isfinite(v):
                curves.setdefault(k, []).append((r["step"], v))
    return {k: (np.array([s for s, _ in kv]), np.array([v for _, v in kv])) for k, kv in curves.items()}


def training_figures(metrics_file, out_dir, tb_dir=None) -> list[str]:
    """PNGs of a run's curves in out_dir: training_loss.png (loss and learning rate),
    validation.png (the evaluation metrics), rollout_score.png (every rollout/* scalar: closed-loop
    success rate, coverage, ..., when the run logged any, in metrics.jsonl or only in TensorBoard).
    A figure without data is not written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_run_scalars(metrics_file, tb_dir)
    figures = {
        "training_loss.png": (metric_curves(records, lambda k: k in ("train/loss", "train/lr")), "log"),
        # evaluation on the validation episodes (on the training split when there are none)
        "validation.png": (metric_curves(records, lambda k: k.endswith(("/action_mse", "/action_mse_executed"))
                                         or k == "val/loss"), "log"),
        "rollout_score.png": (metric_curves(records, lambda k: k.startswith("rollout/")), "linear"),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (curves, yscale) in figures.items():
        if not curves:
            continue
        fig, ax = plt.subplots(figsize=FIGURE_SIZE_IN, dpi=FIGURE_DPI)
        lr = curves.pop("train/lr", None)
        for k, (steps, values) in sorted(curves.items()):
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, ms=3, label=k)
        ax.set_yscale(yscale if all((v > 0).all() for _, v in curves.values()) else "linear")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if lr is not None:
            ax2 = ax.twinx()
            ax2.plot(*lr, color="0.6", lw=1, ls="--", label="train/lr")
            ax2.set_ylabel("learning rate")
            ax2.legend(loc="upper center", fontsize=8)
        ax.legend(loc="upper right", fontsize=8)
        ax.set_title(name[:-4].replace("_", " "))
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=FIGURE_DPI)
        plt.close(fig)
        written.append(str(out_dir / name))
    return written
