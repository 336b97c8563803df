"""The timing model, in one place (ROS-free): the step grid, chunk times, how a camera frame and
a robot state sample are matched to a step, and how far apart they may be.

Used both where observations are built at deploy time (core/obs_buffer.py, policy/planner.py)
and where recorded bags become training data (data/convert.py), so training data is never
aligned more loosely than what the policy sees when it runs.

  - control step dt = 1 / control_frequency_hz; all times are int nanoseconds;
  - observation k of To: t_last - (To-1-k)*dt, t_last = the newest frame of the first camera;
  - action k of a chunk: t_first_obs + k*dt (index To-1 is the newest observation's time);
  - a camera frame matches a step when it is the nearest in capture time and at most
    dt/2 + FRAME_MATCH_SLACK_S away (a dropped frame is replaced by its neighbour, no more);
  - a robot state at a step is interpolated between the samples around it when they are at most
    STATE_GAP_STEPS*dt apart: a smooth servoed arm crosses a short dropout linearly without an
    error that matters, a longer one is missing data.
"""

from __future__ import annotations

import numpy as np

FRAME_MATCH_SLACK_S = 0.01   # capture jitter allowed on top of dt/2
STATE_GAP_STEPS = 2          # largest gap between the state samples around a step, in steps


def step_ns(dt_s: float) -> int:
    return int(round(float(dt_s) * 1e9))


def observation_times(t_last_ns: int, obs_horizon: int, dt_ns: int) -> np.ndarray:
    """(To,) int64: the observation steps ending at t_last_ns."""
    return int(t_last_ns) - int(dt_ns) * np.arange(int(obs_horizon) - 1, -1, -1, dtype=np.int64)


def step_times(t0_ns: int, n: int, dt_ns: int) -> np.ndarray:
    """(n,) int64: t0, t0 + dt, ...: the converter's step grid; a chunk's action times from its first
    observation's."""
    return int(t0_ns) + int(dt_ns) * np.arange(int(n), dtype=np.int64)


def frame_match_limit_ns(dt_ns: int) -> int:
    """Farthest a camera frame may be from the step it is used for."""
    return int(dt_ns) // 2 + step_ns(FRAME_MATCH_SLACK_S)


def state_gap_limit_ns(dt_ns: int) -> int:
    """Largest gap between the robot state samples around a step."""
    return STATE_GAP_STEPS * int(dt_ns)


def nearest(times: np.ndarray, grid: np.ndarray):
    """For each grid time, the index of the nearest of the sorted sample `times` (the earlier one
    on a tie) and its distance in ns."""
    times, grid = np.asarray(times, dtype=np.int64), np.asarray(grid, dtype=np.int64)
    right = np.clip(np.searchsorted(times, grid), 0, len(times) - 1)
    left = np.maximum(right - 1, 0)
    idx = np.where(np.abs(grid - times[left]) <= np.abs(times[right] - grid), left, right)
    return idx, np.abs(times[idx] - grid)


def bracket(times: np.ndarray, grid: np.ndarray):
    """For each grid time, the sorted samples around it: (lo, hi, w, span_ns) with
    value = v[lo] + w * (v[hi] - v[lo]). Before the first or after the last sample lo == hi (that
    sample, held); the callers decide how far that is allowed (see state_gap_limit_ns)."""
    times, grid = np.asarray(times, dtype=np.int64), np.asarray(grid, dtype=np.int64)
    after = np.searchsorted(times, grid, side="right")        # times[after-1] <= t < times[after]
    lo = np.clip(after - 1, 0, len(times) - 1)
    hi = np.clip(after, 0, len(times) - 1)
    span = times[hi] - times[lo]
    w = np.where(span > 0, (grid - times[lo]) / np.maximum(span, 1), 0.0)
    return lo, hi, np.clip(w, 0.0, 1.0), span
