"""Multimodality sanity check.

A 2-D point goes from a start region below a disc obstacle to a goal above it, passing on the left
or on the right with equal probability. The observation (current position) does not say which side,
so from any state in front of the obstacle the action-chunk distribution is bimodal. Diffusion
Policy must sample both modes (each 35-65 %) and commit to one per chunk (at most 2 % of chunks
switch sides or cut through the obstacle). The same network trained as a direct MSE regressor is
reported beside it: it predicts the mean of the two modes, i.e. straight through the obstacle.

Real-time chunking: the first PREFIX_STEPS waypoints of a chunk from one mode are frozen
(inpainting, as `stitch: inpaint` does with the committed plan) and 200 chunks resampled; the
figures say how many leave that mode. Sampled from pure noise (reported, not judged), with this
check's network: from a 5-step prefix at y = -0.9 (0.13 to one side at its end) 40-55 % of the
resampled chunks switch side, 2-18 % at y = -0.7; the same with gradient guidance
(pseudo-inverse, weight up to 5), RePaint-style resampling, or the network trained with a clean
prefix (train_prefix_steps = 6). With epsilon prediction the mode is settled at the noisiest
steps, where a prefix changes the optimal prediction by only ~sqrt(alpha_bar) of its size.
Judged: started from the committed chunk noised, skipping WARM_START of the denoising steps (the
deploy graph's `inpaint_warm_start`), at most MAX_BAD_RATE of the chunks leave the mode. Share
of chunks leaving the mode at y = -0.9 by warm start (seed 0): 0.2: 35 %, 0.4: 19 %, 0.5: 10 %,
0.6: 3.5 %, 0.7: 0.5 %, 0.8: 0. The frozen steps come out exactly as given in every variant.
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
# Training/eval settings tuned on CPU (seeds 0-2): with 10 DDIM steps 1-3 % of samples still end
# between the modes after this short training; 20 steps (same trained net) brings that to <= 1 %.
DIFFUSION_STEPS = 1500
LR = 2e-3
EVAL_INFERENCE_STEPS = 20
# Observations in front of the obstacle, on the centre line, where the demos have not yet diverged
# (bump starts at y = -0.6): both modes are equally valid here.
EVAL_OBS = np.array([[0.0, -0.9], [0.0, -0.8], [0.0, -0.7]])
# Frozen waypoints for the real-time chunking check: from y = -0.9 the 5th is already ~0.15 to
# one side (more than SIDE_TOL), so the prefix decides the mode and the free rest must follow it.
PREFIX_STEPS = 5
WARM_START = 0.7


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


def _diffusion_figures(policy, seed, n_samples, num_inference_steps):
    per_obs = []
    for i, o in enumerate(EVAL_OBS):
        chunks = common.sample_chunks(policy, {"pos": o[None, None]}, n_samples, seed=seed + 1 + i,
                                      num_inference_steps=num_inference_steps)[0]
        s = summarize(o, chunks)
        s["modes_ok"] = bool(MODE_MIN <= s["left_fraction"] <= MODE_MAX
                             and MODE_MIN <= s["right_fraction"] <= MODE_MAX)
        s["consistency_ok"] = bool(s["bad_rate"] <= MAX_BAD_RATE)
        per_obs.append(s)
    return {
        "num_inference_steps": num_inference_steps,
        "per_obs": per_obs,
        "modes_passed": all(s["modes_ok"] for s in per_obs),
        "consistency_passed": all(s["consistency_ok"] for s in per_obs),
        "bad_rate_max": max(s["bad_rate"] for s in per_obs),
    }


def _prefix_figures(policy, seed, n_samples, num_inference_steps, warm_start=0.0):
    """Per eval observation and side: freeze the first PREFIX_STEPS waypoints of a chunk sampled
    in that mode, resample (from that chunk noised when warm_start > 0), and count chunks that
    leave the mode."""
    weight = np.zeros(PRED_HORIZON, dtype=np.float32)
    weight[:PREFIX_STEPS] = 1.0
    out = []
    for i, o in enumerate(EVAL_OBS):
        free = common.sample_chunks(policy, {"pos": o[None, None]}, 64, seed=seed + 100 + i,
                                    num_inference_steps=num_inference_steps)[0]
        side, switched, collided = classify(o, free)
        for want in (-1.0, 1.0):
            clean = np.nonzero((side == want) & ~switched & ~collided)[0]
            if not len(clean):
                out.append({"obs": o.tolist(), "side": want, "error": "no clean chunk of this mode to freeze"})
                continue
            prefix = free[clean[0]][None]
            chunks = common.sample_chunks(policy, {"pos": o[None, None]}, n_samples, seed=seed + 200 + i,
                                          num_inference_steps=num_inference_steps, prefix=prefix,
                                          prefix_weight=weight, warm_start=warm_start)[0]
            s_side, s_sw, s_col = classify(o, chunks)
            out.append({"obs": o.tolist(), "side": want,
                        "same_side_fraction": float((s_side == want).mean()),
                        "other_side_fraction": float((s_side == -want).mean()),
                        "bad_rate": float((s_sw | s_col).mean()),
                        "prefix_max_error": float(np.abs(chunks[:, :PREFIX_STEPS] - prefix[:, :PREFIX_STEPS]).max())})
    return {"prefix_steps": PREFIX_STEPS, "warm_start": warm_start, "per_case": out,
            "mode_kept": all("error" not in c and c["other_side_fraction"] <= MAX_BAD_RATE
                             and c["bad_rate"] <= MAX_BAD_RATE for c in out)}


def run(seed=0, steps=None, n_samples=200, n_demos=1000):
    t0 = time.time()
    common.seed_everything(seed)
    rng = np.random.default_rng(seed)
    pos, side = make_demos(rng, n_demos)
    obs, act = chunk_dataset(pos)
    steps = steps or DIFFUSION_STEPS
    data_info = {
        "n_demos": n_demos,
        "demo_right_fraction": float((side > 0).mean()),
        "demo_min_clearance": float(segment_min_dist(pos).min() - OBSTACLE_RADIUS),
        "n_train_windows": int(len(obs)),
        "obstacle_radius": OBSTACLE_RADIUS,
        "pred_horizon": PRED_HORIZON,
        "eval_obs": EVAL_OBS.tolist(),
    }

    policy, dp_train = common.train_diffusion(
        obs={"pos": obs}, action=act, obs_horizon=1, pred_horizon=PRED_HORIZON,
        action_horizon=PRED_HORIZON // 2, seed=seed, steps=steps, lr=LR)
    diffusion = _diffusion_figures(policy, seed, n_samples, EVAL_INFERENCE_STEPS)
    diffusion["passed"] = bool(diffusion["modes_passed"] and diffusion["consistency_passed"])
    # Reported, not judged: the paper's 10 DDIM steps on this briefly trained net leave a few more
    # samples stranded between the modes.
    at10 = _diffusion_figures(policy, seed, n_samples, 10)
    diffusion["at_10_inference_steps"] = {
        "bad_rate_per_obs": [s["bad_rate"] for s in at10["per_obs"]],
        "left_fraction_per_obs": [s["left_fraction"] for s in at10["per_obs"]],
        "would_pass": bool(at10["modes_passed"] and at10["consistency_passed"]),
    }
    diffusion.update(dp_train)
    diffusion["with_frozen_prefix"] = _prefix_figures(policy, seed, n_samples, EVAL_INFERENCE_STEPS)
    diffusion["with_frozen_prefix_warm"] = _prefix_figures(policy, seed, n_samples, EVAL_INFERENCE_STEPS, WARM_START)
    diffusion["passed"] = bool(diffusion["passed"] and diffusion["with_frozen_prefix_warm"]["mode_kept"])

    # Contrast: same U-Net, no noise input, trained to output the chunk directly with MSE. It
    # converges to the conditional mean within a few hundred steps, so it gets a quarter of them.
    reg, reg_train = common.train_regression(
        obs={"pos": obs}, action=act, obs_horizon=1, pred_horizon=PRED_HORIZON,
        action_horizon=PRED_HORIZON // 2, seed=seed, steps=max(1, steps // 4), lr=LR)
    # Deterministic, so one chunk per observation: use many observations in front of the obstacle.
    grid_rng = np.random.default_rng(seed + 20_000)
    front = np.stack([grid_rng.uniform(-0.03, 0.03, 200), grid_rng.uniform(-0.9, -0.7, 200)], -1)
    reg_chunks = common.predict_chunks(reg, {"pos": front[:, None]})
    sides, sw, col = (np.concatenate(x) for x in zip(*[classify(o, c[None]) for o, c in zip(front, reg_chunks)]))
    regression = {
        "n_obs": len(front),
        "through_obstacle_rate": float(col.mean()),
        "switch_rate": float(sw.mean()),
        "undecided_fraction": float((sides == 0).mean()),
        "left_fraction": float((sides < 0).mean()),
        "right_fraction": float((sides > 0).mean()),
        "max_abs_lateral_at_eval_obs": [
            float(np.abs(common.predict_chunks(reg, {"pos": o[None, None]})[0, :, 0] - o[0]).max())
            for o in EVAL_OBS],
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
