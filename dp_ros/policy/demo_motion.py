"""The demonstrations' own motion, as limits a sampled chunk is held to where it joins the plan.

A diffusion policy's chunk lies inside the demonstrations' motion where the sampler had its way,
but where part of the chunk is fixed (real-time chunking's frozen prefix, dp_ros.policy.planner)
the first free steps can leave it: on Push-T at 300 ms of latency the network's first free step
was 6.2 cm where no demonstration ever moved more than 2.25 cm per step, a 7 m/s^2 turn at the
junction. DemoMotion records two numbers from the training data, per control step:

  step_max: the largest distance the position moved in one step (the demonstrations' top speed);
  turn_max: the largest change of that step from one step to the next (their sharpest turn).

`follow` runs a sampled path through them from where the committed part ends: each free
waypoint moves toward the sample's as far as the two limits allow, so a path inside them comes
out unchanged, bit for bit, and one outside catches up with the sample at the demonstrations'
top speed. ROS-free; plain numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DemoMotion:
    step_max: float      # largest position step between consecutive actions (action units, e.g. m)
    turn_max: float      # largest change between consecutive steps (same units)
    position_dims: int   # the leading action dims that are a position (the limits' norm is over them)

    def __post_init__(self):
        for name in ("step_max", "turn_max"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"demo motion {name} must be finite and > 0, got {value}")
        if int(self.position_dims) < 1:
            raise ValueError(f"demo motion position_dims must be >= 1, got {self.position_dims}")

    @classmethod
    def from_actions(cls, actions, episode_ends, position_dims: int) -> "DemoMotion":
        """From a dataset's actions (N, Da) and its cumulative episode ends (steps never span two
        episodes)."""
        actions = np.asarray(actions, dtype=np.float64)[:, :position_dims]
        steps, turns = [], []
        start = 0
        for end in np.asarray(episode_ends, dtype=np.int64):
            d = np.diff(actions[start:end], axis=0)
            steps.append(np.linalg.norm(d, axis=1))
            turns.append(np.linalg.norm(np.diff(d, axis=0), axis=1))
            start = int(end)
        steps, turns = np.concatenate(steps or [[]]), np.concatenate(turns or [[]])
        if not steps.size or not turns.size:
            raise ValueError("demo motion needs episodes of at least 3 steps")
        return cls(float(steps.max()), float(turns.max()), int(position_dims))

    @classmethod
    def from_dict(cls, d: dict) -> "DemoMotion":
        try:
            return cls(float(d["step_max"]), float(d["turn_max"]), int(d["position_dims"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"checkpoint demo_motion {d!r} is malformed: {exc}") from None

    def to_dict(self) -> dict:
        return {"step_max": self.step_max, "turn_max": self.turn_max, "position_dims": self.position_dims}

    def follow(self, actions, first: int) -> np.ndarray:
        """actions (T, Da) -> a copy whose positions from index `first` on follow the sample within
        step_max and turn_max; the steps before `first` (committed) and the other dims are kept.
        Each waypoint's step is the one that would land on the sample's waypoint, turned from the
        previous step by at most turn_max and then shortened to step_max (the order matters:
        shortening last keeps every step within the top speed)."""
        out = np.array(actions, dtype=np.float64, copy=True)
        pos = out[:, :self.position_dims]
        target = np.asarray(actions, dtype=np.float64)[:, :self.position_dims]
        for k in range(max(int(first), 2), len(out)):
            previous, wanted = pos[k - 1] - pos[k - 2], target[k] - pos[k - 1]
            if np.linalg.norm(wanted - previous) <= self.turn_max and np.linalg.norm(wanted) <= self.step_max:
                pos[k] = target[k]      # inside: the sample's own waypoint, exactly
                continue
            turn = _shortened(wanted - previous, self.turn_max)
            pos[k] = pos[k - 1] + _shortened(previous + turn, self.step_max)
        return out


def _shortened(v: np.ndarray, limit: float) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v if n <= limit else v * (limit / n)
