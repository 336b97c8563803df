"""Multimodality sanity check.

A 2-D point goes from a start region below a disc obstacle to a goal above it, passing on the left
or on the right with equal probability. The observation (current position) does not say which side,
so from any state in front of the obstacle the action-chunk distribution is bimodal. Diffusion
Policy must sample both modes (each 35-65 %) and commit to one per chunk (at most 2 % of chunks
switch sides or cut through the obstacle). The same network trained as a direct MSE regressor is
reported beside it: it predicts the mean of the two modes, i.e. straight through the obstacle.
"""

import time

import numpy as np

from dp_ros.sanity import common

OBSTACLE_CENTER = np.array([0.0, 0.0])
OBSTACLE_RADIUS = 0.25
START_Y, GOAL_Y = -1.0, 1.0
N_STEPS = 20            # waypoints per demo after the start; a chunk of 8 spans 40 % of the path
BUMP_START, BUMP_END = 0.2, 0.8   # path progress over which the detour happens
PRED_HORIZON = 8
SIDE_TOL = 0.1          # lateral deviation that counts as "having gone to a side"
MODE_MIN, MODE_MAX = 0.35, 0.65
MAX_BAD_RATE = 0.02
# Observations in front of the obstacle, on the centre line, where the demos have not yet diverged
# (bump starts at y = -0.6): both modes are equally valid here.
EVAL_OBS = np.array([[0.0, -0.9], [0.0, -0.8], [0.0, -0.7]])


def path(progress, x0, side, width):
    """Waypoints at path progress in [0, 1]. Straight approach, smooth sin^2 detour of the given
    width around the disc, back to the centre line at the goal; the start offset x0 fades out."""
    p = np.asarray(progress)
    u = np.clip((p - BUMP_START) / (BUMP_END - BUMP_START), 0.0, 1.0)
    bump = np.sin(np.pi * u) ** 2
    x = x0 * (1.0 - p) + side * width * bump
    y = START_Y + (GOAL_Y - START_Y) * p
    return np.stack([x, y], axis=-1)


def make_demos(rng, n_demos):
    """Returns positions (n, N_STEPS+1, 2) and the side (+1 right / -1 left) of each demo."""
    # Exactly balanced sides, so any bias in the sampled modes is the model's, not the data's.
    side = rng.permutation(np.where(np.arange(n_demos) % 2 == 0, -1.0, 1.0))
    x0 = rng.uniform(-0.05, 0.05, n_demos)
    width = rng.uniform(0.55, 0.65, n_demos)
    prog = np.linspace(0.0, 1.0, N_STEPS + 1)
    pos = np.stack([path(prog, x0[i], side[i], width[i]) for i in range(n_demos)])
    return pos, side


def chunk_dataset(pos, horizon=PRED_HORIZON):
    """(obs = p_t, action chunk = next `horizon` waypoints p_{t+1..t+horizon}); past the goal the
    chunk holds the goal, as a recorded episode's padding would."""
    n, T1, _ = pos.shape
    padded = np.concatenate([pos, np.repeat(pos[:, -1:], horizon, axis=1)], axis=1)
    obs, act = [], []
    for t in range(T1 - 1):
        obs.append(pos[:, t])
        act.append(padded[:, t + 1:t + 1 + horizon])
    return np.concatenate(obs)[:, None], np.concatenate(act)


def segment_min_dist(points, center=OBSTACLE_CENTER):
    """Minimum distance from `center` to the polyline through `points` (..., T, 2)."""
    a, b = points[..., :-1, :], points[..., 1:, :]
    ab = b - a
    t = np.clip(((center - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0.0, 1.0)
    closest = a + t[..., None] * ab
    return np.linalg.norm(closest - center, axis=-1).min(-1)


def classify(obs_xy, chunks):
    """obs_xy: (2,), chunks (N, T, 2). Side = sign of the largest lateral deviation from the
    observation; a chunk switches if it also goes SIDE_TOL to the other side; it collides if the
    polyline obs -> waypoints enters the disc."""
    dx = chunks[..., 0] - obs_xy[0]
    idx = np.abs(dx).argmax(-1)
    peak = np.take_along_axis(dx, idx[:, None], axis=1)[:, 0]
    decided = np.abs(peak) >= SIDE_TOL
    side = np.sign(peak) * decided
    switched = decided & ((dx * side[:, None]) < -SIDE_TOL).any(-1)
    line = np.concatenate([np.broadcast_to(obs_xy, (len(chunks), 1, 2)), chunks], axis=1)
    collided = segment_min_dist(line) < OBSTACLE_RADIUS
    return side, switched, collided


def summarize(obs_xy, chunks):
    side, switched, collided = classify(obs_xy, chunks)
    n = len(chunks)
    left, right = float((side < 0).mean()), float((side > 0).mean())
    return {
        "obs": [float(v) for v in obs_xy],
        "n_chunks": n,
        "left_fraction": left,
        "right_fraction": right,
        "undecided_fraction": float((side == 0).mean()),
        "switch_rate": float(switched.mean()),
        "through_obstacle_rate": float(collided.mean()),
        "bad_rate": float((switched | collided).mean()),
    }


def run(seed=0, steps=None, n_samples=200, n_demos=1000):
    t0 = time.time()
    common.seed_everything(seed)
    rng = np.random.default_rng(seed)
    pos, side = make_demos(rng, n_demos)
    obs, act = chunk_dataset(pos)
    steps = steps or 3000
    data_info = {
        "n_demos": n_demos,
        "demo_right_fraction": float((side > 0).mean()),
        "demo_min_clearance": float(segment_min_dist(pos).min() - OBSTACLE_RADIUS),
        "n_train_windows": int(len(obs)),
    }

    policy, dp_train = common.train_diffusion(
        obs={"pos": obs}, action=act, obs_horizon=1, pred_horizon=PRED_HORIZON,
        action_horizon=PRED_HORIZON // 2, seed=seed, steps=steps)
    per_obs = []
    for i, o in enumerate(EVAL_OBS):
        chunks = common.sample_chunks(policy, {"pos": np.repeat(o[None, None], 1, axis=0)},
                                      n_samples, seed=seed + 1 + i)[0]
        s = summarize(o, chunks)
        s["modes_ok"] = bool(MODE_MIN <= s["left_fraction"] <= MODE_MAX
                             and MODE_MIN <= s["right_fraction"] <= MODE_MAX)
        s["consistency_ok"] = bool(s["bad_rate"] <= MAX_BAD_RATE)
        per_obs.append(s)
    all_bad = np.mean([s["bad_rate"] for s in per_obs])
    diffusion = {
        "per_obs": per_obs,
        "modes_passed": all(s["modes_ok"] for s in per_obs),
        "consistency_passed": all(s["consistency_ok"] for s in per_obs),
        "bad_rate_overall": float(all_bad),
        **dp_train,
    }
    diffusion["passed"] = bool(diffusion["modes_passed"] and diffusion["consistency_passed"])

    # Contrast: same U-Net, no noise input, trained to output the chunk directly with MSE.
    reg, reg_train = common.train_regression(
        obs={"pos": obs}, action=act, obs_horizon=1, pred_horizon=PRED_HORIZON,
        action_horizon=PRED_HORIZON // 2, seed=seed, steps=steps)
    # Deterministic, so one chunk per observation; use many front-of-obstacle observations.
    grid_rng = np.random.default_rng(seed + 20_000)
    front = np.stack([grid_rng.uniform(-0.03, 0.03, 200), grid_rng.uniform(-0.9, -0.7, 200)], -1)
    reg_chunks = common.predict_chunks(reg, {"pos": front[:, None]})
    sides, sw, col = zip(*[classify(o, c[None]) for o, c in zip(front, reg_chunks)])
    sides, sw, col = np.concatenate(sides), np.concatenate(sw), np.concatenate(col)
    regression = {
        "n_obs": len(front),
        "through_obstacle_rate": float(col.mean()),
        "undecided_fraction": float((sides == 0).mean()),
        "left_fraction": float((sides < 0).mean()),
        "right_fraction": float((sides > 0).mean()),
        "per_eval_obs": [summarize(o, common.predict_chunks(reg, {"pos": o[None, None]})) for o in EVAL_OBS],
        **reg_train,
    }
    return {
        "check": "multimodal",
        "seed": seed,
        "data": data_info,
        "diffusion_policy": diffusion,
        "regression_baseline": regression,
        "passed": diffusion["passed"],
        "wall_s": round(time.time() - t0, 2),
    }
