"""Receding-horizon action scheduling: which timestamped waypoints go to the servo, and when to
ask for the next chunk.

A chunk is Tp timestamped poses (action k meant for t_obs + k*dt). When it arrives, inference
latency has already made its first waypoints past; the scheduler keeps the first Ta waypoints
with time > now + exec_latency (late ones are dropped and counted, never replayed) and streams
only waypoints still beyond now + exec_latency. The new plan starts with any old-plan waypoints
that lie between now + exec_latency and the new chunk's first kept one (at most about one: the
grids are offset), so consecutive streamed waypoints are never more than ~dt apart. With nothing
left the stream is empty and the servo holds where it is; nothing ever jumps back to an old
waypoint.

Note for the servo: the stream starts at the first waypoint beyond now + exec_latency, so
interpolate from the servo's current command at now to that waypoint (a PoseTrajectory built from
the message alone holds its first pose before its start, i.e. the target steps ahead at once).

needs_inference(now) is true once the remaining executing horizon (last kept waypoint time - now
- exec_latency) is at most the expected inference latency, so the next chunk is planned while the
current one executes. Expected latency = EWMA of report_latency samples + latency_dev_k * EWMA of
their absolute deviation (a late chunk starves the servo, an early one costs nothing) + margin_s.
Pass margin_s = the period at which needs_inference is polled: the request goes out up to one
poll late. It stays false while a request is outstanding (mark_requested), until a chunk arrives
(any on_chunk call) or request_timeout_s passes.

Stitching where a new chunk meets the executing plan (the policy's new prediction generally
disagrees with the old one by some offset, and switching outright makes the command jump):
  "none"      take the new chunk as is.
  "blend"     (default) over the first blend_steps kept waypoints of the new chunk, weight
              w_k = k / blend_steps (0, 1/n, ..., then 1):
                  pose_k = (1 - w_k) * old(t_k) + w_k * new(t_k)   (slerp for rotation)
              where old(t) is the executing plan evaluated at t_k, continued past its last
              waypoint by the rest of the old chunk's own prediction (Tp > Ta) while the plan
              is still executing; once the plan has run out the servo holds at its end, and
              old(t) holds there too. w_0 = 0, so the first new waypoint lies on the old path:
              no jump; the disagreement is spread over blend_steps steps, so a step grows by
              at most about offset/blend_steps.
  "ensemble"  temporal ensembling as in ACT (Zhao et al. 2023): each kept waypoint time t is
              the weighted mean of every stored chunk's prediction for t (chunks covering t,
              evaluated by interpolation since chunk grids are jittered), weights exp(-k*i)
              with i = 0 for the oldest prediction, normalised (positions averaged, rotations
              by scipy's weighted quaternion mean). Smooths, but does not guarantee zero jump.
  "inpaint"   real-time chunking (Black, Galliker, Levine 2025): each request carries
              committed_path(), and the policy samples the new chunk with the part that executes
              before it can arrive frozen to that path (dp_ros.policy.planner.Commitment), so the
              chunk already continues the plan; what offset is left where it takes over is
              blended in as with "blend" (a far smaller one: the new chunk no longer starts from
              another sample of the distribution).

Rejected chunks (NaN/inf, malformed, non-increasing times, not newer than the current chunk,
or entirely late) leave the executing plan untouched; last_reject_reason says why.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

from dp_ros.core.interpolator import PoseTrajectory
from dp_ros.core.transforms import continuous_quats, quat_slerp

STITCH_MODES = ("blend", "ensemble", "none", "inpaint")
# `stitch: auto` (the deploy config's): the mode the checkpoint recommends (`dp-ros export --stitch`:
# a policy may need its own), else DEFAULT_STITCH.
STITCH_AUTO = "auto"
DEFAULT_STITCH = "inpaint"


def _flag(value) -> bool:
    """A stitch field that is on or off: '1' / '0' in a mode's text, a bool where one was stored."""
    if isinstance(value, bool):
        return value
    if str(value).strip() not in ("0", "1"):
        raise ValueError(f"expected 0 or 1, got {value!r}")
    return str(value).strip() == "1"


# The settings a stitch mode reads, and the node that holds each (a checkpoint may recommend them
# with its mode: `dp-ros export --stitch inpaint:0:0:0`).
STITCH_SETTINGS = {"inpaint_soft_steps": ("policy_node", int), "inpaint_warm_start": ("policy_node", float),
                   "inpaint_guidance": ("policy_node", float), "inpaint_candidates": ("policy_node", int),
                   "inpaint_demo_motion": ("policy_node", _flag), "blend_steps": ("action_scheduler_node", int)}
# an inpaint mode's fields, in order: inpaint:K:W:B:G:N:M
INPAINT_FIELDS = ["inpaint_soft_steps", "inpaint_warm_start", "blend_steps", "inpaint_guidance", "inpaint_candidates",
                  "inpaint_demo_motion"]


def parse_stitch(text: str) -> dict:
    """'none' | 'ensemble' | 'blend[:B]' | 'inpaint[:K[:W[:B[:G[:N[:M]]]]]]' -> {"stitch": mode}
    plus the settings given: B blend steps, K pulled overlap steps, W warm start, G guidance (the
    pulled steps guided through the network, its weight capped at G; 0 = replacement), N candidate
    chunks (the one leaving the frozen prefix most smoothly runs), M 1/0: the free steps held to the
    demonstrations' motion or not. An empty field is not given (the config's value applies):
    'inpaint::0.5' sets only the warm start."""
    name, *fields = text.strip().split(":")
    if name not in STITCH_MODES:
        raise ValueError(f"unknown stitch mode {name!r} (one of {', '.join(STITCH_MODES)})")
    if name == "blend" and len(fields) <= 1:
        keys = ["blend_steps"]
    elif name == "inpaint" and len(fields) <= len(INPAINT_FIELDS):
        keys = INPAINT_FIELDS
    elif fields:
        raise ValueError(f"expected blend[:B] or inpaint[:K[:W[:B[:G[:N[:M]]]]]] (others take no fields), "
                         f"got {text!r}")
    else:
        keys = []
    spec = {"stitch": name}
    for key, field in zip(keys, fields):
        if field.strip():
            kind = STITCH_SETTINGS[key][1]
            try:
                spec[key] = kind(field)
            except ValueError:
                raise ValueError(f"{key} must be {'0 or 1' if kind is _flag else 'a number'}, "
                                 f"got {field!r} in {text!r}") from None
    return spec


HORIZON_STARTS = ("arrival", "observation")   # where a chunk's Ta executed steps are counted from


def resolve_stitch(configured: str, recommended: str | None = None) -> str:
    """The stitch mode that runs: a configured mode as it is; `auto` -> the checkpoint's
    recommendation when it names a mode, else DEFAULT_STITCH."""
    if configured != STITCH_AUTO:
        return configured
    return recommended if recommended in STITCH_MODES else DEFAULT_STITCH


class ActionScheduler:
    def __init__(self, action_horizon: int, dt_s: float, exec_latency_s: float, stitch: str = "blend",
                 blend_steps: int = 3, ensemble_k: float = 0.01, initial_latency_s: float = 0.1,
                 latency_alpha: float = 0.3, request_timeout_s: float = 1.0, margin_s: float = 0.0,
                 latency_dev_k: float = 2.0, horizon_start: str = "arrival", obs_horizon: int = 1):
        if int(action_horizon) < 1:
            raise ValueError(f"action_horizon must be >= 1, got {action_horizon} (the config's 0 = the "
                             f"checkpoint's is resolved by the graph: launch/deploy.launch.py, dp-ros deploy)")
        if horizon_start not in HORIZON_STARTS:
            raise ValueError(f"horizon_start must be one of {HORIZON_STARTS}, got {horizon_start!r}")
        if int(obs_horizon) < 1:
            raise ValueError(f"obs_horizon must be >= 1, got {obs_horizon}")
        if stitch not in STITCH_MODES:
            raise ValueError(f"stitch must be one of {STITCH_MODES}, got {stitch!r}")
        if int(blend_steps) < 0:
            raise ValueError(f"blend_steps must be >= 0, got {blend_steps}")
        for name, v, lo in (("dt_s", dt_s, 0.0), ("request_timeout_s", request_timeout_s, 0.0)):
            if not (math.isfinite(v) and v > lo):
                raise ValueError(f"{name} must be positive, got {v}")
        for name, v in (("exec_latency_s", exec_latency_s), ("initial_latency_s", initial_latency_s),
                        ("margin_s", margin_s), ("ensemble_k", ensemble_k),
                        ("latency_dev_k", latency_dev_k)):
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be >= 0, got {v}")
        if not (0 < latency_alpha <= 1):
            raise ValueError(f"latency_alpha must be in (0, 1], got {latency_alpha}")
        self.action_horizon = int(action_horizon)
        self.horizon_start = horizon_start
        self.obs_horizon = int(obs_horizon)
        self.dt_s = float(dt_s)
        self.exec_latency_s = float(exec_latency_s)
        self.exec_latency_ns = int(round(exec_latency_s * 1e9))
        self.stitch = stitch
        self.blend_steps = int(blend_steps)
        self.ensemble_k = float(ensemble_k)
        self.latency_alpha = float(latency_alpha)
        self.request_timeout_ns = int(round(request_timeout_s * 1e9))
        self.margin_s = float(margin_s)
        self.latency_s = float(initial_latency_s)   # EWMA; the first sample replaces this prior
        self.latency_dev_s = 0.0                     # EWMA of |sample - mean| (jitter)
        self.latency_dev_k = float(latency_dev_k)
        self._latency_samples = 0
        self.last_reject_reason: str | None = None
        self.stats = {"chunks_accepted": 0, "chunks_rejected": 0, "waypoints_dropped_stale": 0,
                      "waypoints_superseded": 0, "stream_empty": 0, "requests": 0,
                      "request_timeouts": 0, "latency_s": self.latency_s, "latency_dev_s": 0.0}
        self.reset()

    @classmethod
    def from_params(cls, p: dict, **overrides) -> "ActionScheduler":
        """As action_scheduler_node builds it from its parameters: a request can go out up to one
        publish tick late, hence that margin. overrides: settings the caller fixes itself."""
        kwargs = dict(stitch=resolve_stitch(p["stitch"]), blend_steps=p["blend_steps"], request_timeout_s=p["request_timeout_s"],
                      margin_s=1.0 / p["publish_rate_hz"], horizon_start=p["horizon_start"],
                      obs_horizon=p["obs_horizon"])
        kwargs.update(overrides)
        exec_latency_s = kwargs.pop("exec_latency_s", p["exec_latency_s"])
        return cls(p["action_horizon"], p["dt_s"], exec_latency_s, **kwargs)

    def reset(self):
        """Forget the plan, stored chunks and any outstanding request (counters are kept)."""
        self._plan: PoseTrajectory | None = None
        self._plan_chunk: PoseTrajectory | None = None   # the full prediction the plan came from
        self._accounted = np.zeros(0, dtype=bool)   # per plan waypoint: streamed or counted as dropped
        self._chunk_t0: int | None = None
        self._chunks: list[tuple[int, PoseTrajectory]] = []   # (sequence number, chunk) for ensembling
        self._seq = 0
        self._requested_ns: int | None = None

    # ------------------------------------------------------------------ state
    @property
    def plan(self) -> PoseTrajectory | None:
        """The executing waypoints (already stitched), including ones now in the past."""
        return self._plan

    @property
    def request_outstanding(self) -> bool:
        return self._requested_ns is not None

    # ------------------------------------------------------------------ chunks
    def _reject(self, reason: str) -> bool:
        self.last_reject_reason = reason
        self.stats["chunks_rejected"] += 1
        return False

    def on_chunk(self, times_ns, poses, now_ns: int) -> bool:
        """Offer a new chunk; True if it replaced the plan, else see last_reject_reason."""
        now = int(now_ns)
        if self._requested_ns is not None:  # a reply arrived, good or bad: the request is over
            self.report_latency((now - self._requested_ns) * 1e-9)
            self._requested_ns = None
        try:
            chunk = PoseTrajectory(times_ns, poses)
        except (ValueError, TypeError) as exc:
            return self._reject(f"invalid chunk: {exc}")
        if self._chunk_t0 is not None and chunk.start_ns <= self._chunk_t0:
            return self._reject(f"chunk starts {(self._chunk_t0 - chunk.start_ns) * 1e-6:.1f} ms before "
                                "or at the current chunk's start (out of order or duplicate)")
        horizon = now + self.exec_latency_ns
        future = np.nonzero(chunk.times_ns > horizon)[0]
        n_late = int(len(chunk) - len(future))
        if len(future) == 0:
            self.stats["waypoints_dropped_stale"] += len(chunk)
            return self._reject(f"all {len(chunk)} waypoints are late: the last is "
                                f"{(horizon - chunk.end_ns) * 1e-6:.1f} ms before now + exec latency")
        keep = self._executed(chunk, future)
        self.stats["waypoints_dropped_stale"] += n_late
        times = np.asarray(chunk.times_ns[keep])
        new = np.array(chunk.poses[keep])

        if self.stitch in ("blend", "inpaint") and self._plan is not None and self.blend_steps > 0:
            poses = self._blend(times, new, horizon)
        elif self.stitch == "ensemble":
            self._seq += 1
            self._chunks.append((self._seq, chunk))
            # Only chunks that still predict something ahead can take part.
            self._chunks = [(s, c) for s, c in self._chunks if c.end_ns > horizon][-32:]
            poses = self._ensemble(times)
        else:
            poses = new

        if self._plan is not None:
            # Old waypoints still ahead but before the new chunk's first one stay: the new grid
            # is offset from the old one, and dropping them would leave a gap of up to 2*dt.
            old_t = self._plan.times_ns
            bridge = (old_t > horizon) & (old_t < times[0])
            if bridge.any():
                times = np.concatenate([old_t[bridge], times])
                poses = np.concatenate([self._plan.poses[bridge], poses])
            old_t = old_t[~bridge]
            self.stats["waypoints_superseded"] += int(np.count_nonzero(old_t > horizon))
            unsent = (self._plan.times_ns <= horizon) & ~self._accounted
            self.stats["waypoints_dropped_stale"] += int(np.count_nonzero(unsent))
        self._plan = PoseTrajectory(times, poses)
        self._plan_chunk = chunk
        self._accounted = np.zeros(len(times), dtype=bool)
        self._chunk_t0 = chunk.start_ns
        self.last_reject_reason = None
        self.stats["chunks_accepted"] += 1
        return True

    def _executed(self, chunk, future):
        """Indices of the chunk's waypoints to execute, from its still-future ones.
        arrival: the first Ta of them, so latency lengthens the time the chunk runs open loop.
        observation: those up to Ta steps after the observation it was planned from (index To-1),
        as the paper's evaluation executes them: the late ones are lost instead, the next request
        goes out sooner, and the open-loop time stays Ta*dt (at least one waypoint is kept, so a
        latency beyond Ta*dt still moves the arm, one step per chunk)."""
        if self.horizon_start == "arrival":
            return future[:self.action_horizon]
        end_ns = chunk.times_ns[min(self.obs_horizon - 1 + self.action_horizon, len(chunk) - 1)]
        window = future[chunk.times_ns[future] <= end_ns]
        return window if len(window) else future[:1]

    def _blend(self, times, new, horizon):
        old = self._old_path(horizon)(times)
        w = np.minimum(np.arange(len(times)) / self.blend_steps, 1.0)
        out = np.empty_like(new)
        out[:, :3] = (1.0 - w)[:, None] * old[:, :3] + w[:, None] * new[:, :3]
        out[:, 3:] = quat_slerp(old[:, 3:], new[:, 3:], w)
        return out

    def _old_path(self, horizon) -> PoseTrajectory:
        """What the old chunk meant to do: the plan, continued by the rest of its prediction
        while the plan is still executing. An expired plan is held at its end, because the
        servo is holding there and the new chunk must start from where the arm is."""
        if self._plan.end_ns <= horizon:
            return self._plan
        return self.predicted_path()

    def predicted_path(self) -> PoseTrajectory | None:
        """The plan (past waypoints included) continued by the rest of its chunk's prediction
        (Tp > Ta); None without a plan."""
        plan, raw = self._plan, self._plan_chunk
        if plan is None or raw is None or raw.end_ns <= plan.end_ns:
            return plan
        tail = raw.times_ns > plan.end_ns
        return PoseTrajectory(np.concatenate([plan.times_ns, raw.times_ns[tail]]),
                              np.concatenate([plan.poses, raw.poses[tail]]))

    def committed_path(self, now_ns: int):
        """(times_ns, poses) that a request in "inpaint" mode carries: the predicted path while the
        plan reaches now + exec latency; empty otherwise (the arm holds or
        will hold before a new chunk can arrive: nothing is committed, the chunk samples freely)."""
        path = self.predicted_path() if self.stitch == "inpaint" else None
        if path is None or self._plan.end_ns < int(now_ns) + self.exec_latency_ns:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 7))
        return np.array(path.times_ns), np.array(path.poses)

    def _ensemble(self, times):
        out = np.empty((len(times), 7))
        for j, t in enumerate(times):
            members = [c for _, c in self._chunks if c.start_ns <= t <= c.end_ns]   # oldest first
            preds = np.stack([c(t) for c in members])
            w = np.exp(-self.ensemble_k * np.arange(len(members)))
            w /= w.sum()
            out[j, :3] = w @ preds[:, :3]
            q = continuous_quats(preds[:, 3:])
            out[j, 3:] = Rotation.from_quat(q).mean(weights=w).as_quat()
        return out

    # ------------------------------------------------------------------ streaming
    def waypoints(self, now_ns: int):
        """(times_ns (n,) int64, poses (n, 7)): planned waypoints with time > now + exec_latency.
        Empty when nothing is left (the servo holds)."""
        if self._plan is None:
            self.stats["stream_empty"] += 1
            return np.zeros(0, dtype=np.int64), np.zeros((0, 7))
        mask = self._plan.times_ns > int(now_ns) + self.exec_latency_ns
        # Late waypoints never streamed (e.g. the publisher stalled) count as dropped, once.
        missed = ~mask & ~self._accounted
        self.stats["waypoints_dropped_stale"] += int(np.count_nonzero(missed))
        self._accounted |= missed | mask
        if not mask.any():
            self.stats["stream_empty"] += 1
        return np.array(self._plan.times_ns[mask]), np.array(self._plan.poses[mask])

    # ------------------------------------------------------------------ inference requests
    def needs_inference(self, now_ns: int) -> bool:
        now = int(now_ns)
        if self._requested_ns is not None:
            if now - self._requested_ns < self.request_timeout_ns:
                return False
            self._requested_ns = None          # lost request: allow a new one
            self.stats["request_timeouts"] += 1
        if self._plan is None:
            return True
        remaining_ns = self._plan.end_ns - now - self.exec_latency_ns
        return remaining_ns <= int(round(self.expected_latency_s * 1e9))

    @property
    def expected_latency_s(self) -> float:
        """Lead time for requests: latency EWMA + latency_dev_k * jitter EWMA + margin_s."""
        return self.latency_s + self.latency_dev_k * self.latency_dev_s + self.margin_s

    def mark_requested(self, now_ns: int):
        """A request went out at now_ns: the next on_chunk measures the latency from it."""
        self._requested_ns = int(now_ns)
        self.stats["requests"] += 1

    def report_latency(self, latency_s: float):
        """Observed request-to-chunk latency in seconds (non-finite or negative samples ignored)."""
        x = float(latency_s)
        if not (math.isfinite(x) and x >= 0):
            return
        if self._latency_samples == 0:
            self.latency_s = x
        else:
            # RFC 6298-style: jitter from the deviation before the mean moves
            self.latency_dev_s += self.latency_alpha * (abs(x - self.latency_s) - self.latency_dev_s)
            self.latency_s += self.latency_alpha * (x - self.latency_s)
        self._latency_samples += 1
        self.stats["latency_s"] = self.latency_s
        self.stats["latency_dev_s"] = self.latency_dev_s
