"""The episode figure of `dp-ros show`: a strip of camera frames over the TCP position and the
action against time, with the conversion's control-step grid marked on both plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dp_ros.viz.episode_view import EpisodeView

FIGSIZE_IN = (12.0, 8.0)
DPI = 100                    # 1200 x 800 px: fixed, so a README image or a test knows its size
STRIP_FRAMES = 8
DENSE_GRID = 60               # steps above which the grid is drawn as ticks, the steps as small dots
COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink"]


def strip_indices(n: int, k: int = STRIP_FRAMES) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(int)) if n else np.zeros(0, int)


def episode_figure(view: EpisodeView, out) -> dict:
    """Write the PNG; returns {"path", "width", "height"}."""
    import matplotlib
    matplotlib.use("Agg")          # files only: no display needed, none looked for
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=FIGSIZE_IN, dpi=DPI)
    grid = fig.add_gridspec(3, STRIP_FRAMES, height_ratios=[0.62, 1.0, 1.0], hspace=0.3, wspace=0.04,
                            left=0.07, right=0.83, top=0.93, bottom=0.07)
    title = f"{view.kind} {view.name}"
    if view.grid is not None:
        title += f": {len(view.grid)} steps of {view.dt:g} s"
    elif view.note:
        title += f" - {view.note}"
    fig.suptitle(title, fontsize=11)

    if view.frames:
        cam, (ft, images) = next(iter(view.frames.items()))
        for col, i in enumerate(strip_indices(len(images))):
            ax = fig.add_subplot(grid[0, col])
            ax.imshow(images[i], interpolation="nearest")
            ax.set_title(f"{cam} t={ft[i]:.1f}s", fontsize=8)
            ax.axis("off")

    t_end = max([s.t[-1] for s in (*view.state.values(), *view.action.values()) if len(s.t)] or [1.0])
    for row, (series, ylabel) in enumerate(((view.state, "TCP position (m)"), (view.action, "action (m)")), 1):
        ax = fig.add_subplot(grid[row, :])
        _mark_grid(ax, view.grid)
        _plot_series(ax, series)
        ax.set_ylabel(ylabel)
        ax.set_xlim(0.0, t_end)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.set_xlabel("time from episode start (s)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)      # no bbox_inches="tight": it would change the size
    plt.close(fig)
    return {"path": str(out), "width": int(FIGSIZE_IN[0] * DPI), "height": int(FIGSIZE_IN[1] * DPI)}


def _plot_series(ax, series: dict):
    """Recorded streams as lines over the per-step values as dots, one colour per axis."""
    for name, s in series.items():
        ms = 3.0 if len(s.t) <= DENSE_GRID else 1.5
        for d, label in enumerate(s.labels[:len(COLORS)]):
            if label.startswith("q") and len(s.labels) == 7:
                continue   # quaternion components: another scale, not what this plot is for
            kw = dict(color=COLORS[d], label=f"{name} {label}")
            if "(recorded)" in name:
                ax.plot(s.t, s.values[:, d], lw=1.0, zorder=3, **kw)
            elif "(step)" in name:
                ax.plot(s.t, s.values[:, d], ls="none", marker="o", ms=ms, alpha=0.6, zorder=2, **kw)
            else:        # a store: the steps are all there is
                ax.plot(s.t, s.values[:, d], marker="o", ms=ms, lw=1.0, **kw)


def _mark_grid(ax, grid):
    """A light line at each conversion step; for a long episode a tick along the bottom instead
    (hundreds of full-height lines would grey the plot out)."""
    if grid is None or not len(grid):
        return
    y1 = 1.0 if len(grid) <= DENSE_GRID else 0.05
    ax.vlines(grid, 0.0, y1, transform=ax.get_xaxis_transform(), color="0.6" if y1 < 1 else "0.8",
              lw=0.6, zorder=0, label="conversion step")
