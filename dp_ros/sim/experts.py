"""Scripted demonstration experts: they drive the teleop node's SpaceMouse input in simulation.

An expert sees what the teleop node sees (the sim task state, the measured TCP pose and the
teleop target) and returns a SpaceMouseEvent, exactly what a human's SpaceMouse would give. The
teleop node turns it into target motion: per-axis deadzone (rescaled outside it, as
dp_ros.core.teleop.TeleopMapper does), target += translation * max_speed * dt, clipped to the
workspace. Experts close the loop on the teleop target, so a different deadzone law, clipping or
a dropped event only delays them.

- ReachExpert: a human-like reach (reaction time, minimum-jerk speed, curved path, wobble,
  occasional hesitation), then hold still on the target.
- PushTExpert: push-primitive planning over a private copy of the Push-T physics
  (dp_ros.sim.push_planner). Each plan samples contact points on the T's faces, push directions
  and lengths, simulates each push from the current block pose, and picks (with some randomness)
  one that brings the T's outline closest to the goal; the pusher then travels around the block
  (visibility graph around the inflated T) to the contact and pushes. It re-plans after each
  push or when the block moved unexpectedly.
Task coordinates are the task plane's units (0..512, x right, y down), see TaskPlaneMapping.
"""

import abc
import collections
import time

import numpy as np

from dp_ros.hardware.base import SpaceMouseEvent

from .push_planner import PushPlanner, _Router
from .world import TaskPlaneMapping


def _as_rng(rng):
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


class _Commander:
    """Desired teleop-target motion (task units) -> SpaceMouse translation in [-1, 1]."""

    def __init__(self, mapping, max_speed_m_s, dt_s, deadzone=0.05, n_buttons=2):
        self.mapping = mapping
        self.max_speed = float(max_speed_m_s)
        self.dt = float(dt_s)
        self.deadzone = float(deadzone)
        self.n_buttons = int(n_buttons)
        # Fastest target speed along each task axis (units/s); the slower one bounds path speeds.
        self.max_speed_units = float(self.max_speed * np.min(mapping.units_per_m))

    def event(self, target_task, desired_task):
        d_m = self.mapping.to_robot(desired_task) - self.mapping.to_robot(target_task)
        frac = d_m / (self.max_speed * self.dt)
        peak = np.max(np.abs(frac))
        if peak > 1.0:
            frac = frac / peak  # keep the direction when saturating
        # Moves under ~0.2 task units are not worth a command (the hand rests).
        small = np.abs(frac) * self.max_speed * self.dt * self.mapping.units_per_m < 0.2
        # Undo the teleop's rescaled deadzone so the target moves by what was asked.
        cmd = np.sign(frac) * (self.deadzone + np.abs(frac) * (1.0 - self.deadzone))
        cmd[small] = 0.0
        return self.make(np.clip(cmd, -1.0, 1.0))

    def hold(self):
        return self.make(np.zeros(2))

    def make(self, xy):
        return SpaceMouseEvent(translation=np.array([xy[0], xy[1], 0.0]), rotation=np.zeros(3),
                               buttons=(False,) * self.n_buttons, time_s=time.monotonic())


class _Move:
    """A polyline followed at a trapezoidal speed profile (accelerate, cruise, brake to v_end)."""

    def __init__(self, points, v_cruise, accel, v_start=0.0, v_end=0.0):
        self.points = np.asarray(points, dtype=float).reshape(-1, 2)
        seg = np.linalg.norm(np.diff(self.points, axis=0), axis=1)
        self.cum = np.concatenate([[0.0], np.cumsum(seg)])
        self.length = float(self.cum[-1])
        self.v_cruise, self.accel = float(v_cruise), float(accel)
        self.v_start, self.v_end = float(v_start), float(v_end)
        self.s = 0.0
        self.v = self.v_start

    @property
    def finished(self):
        return self.s >= self.length - 1e-9

    def point(self, s):
        if self.length <= 0:
            return self.points[-1].copy()
        i = int(np.clip(np.searchsorted(self.cum, s, side="right") - 1, 0, len(self.points) - 2))
        seg = self.cum[i + 1] - self.cum[i]
        a = 0.0 if seg <= 0 else (s - self.cum[i]) / seg
        return self.points[i] + np.clip(a, 0.0, 1.0) * (self.points[i + 1] - self.points[i])

    def advance(self, dt):
        remaining = self.length - self.s
        brake = np.sqrt(self.v_end ** 2 + 2.0 * self.accel * remaining)
        self.v = min(self.v_cruise, self.v + self.accel * dt, brake)
        # Never creep: the last bit is covered at the braking speed's floor.
        self.s = min(self.length, self.s + max(self.v, 0.25 * self.accel * dt) * dt)
        return self.point(self.s)


class Expert(abc.ABC):
    """A scripted SpaceMouse user. act() is called once per teleop control step."""

    done = False

    @abc.abstractmethod
    def reset(self, seed=None):
        """Forget the episode; a seed re-seeds the expert's own randomness."""

    @abc.abstractmethod
    def act(self, task_state: dict, tcp_pose: np.ndarray, target_xy_m: np.ndarray) -> SpaceMouseEvent:
        """One SpaceMouse event for this control step (translation in [-1, 1], robot axes)."""


class _EpisodeTracker:
    # The teleop node keeps one expert across episodes and only sometimes calls reset(); a new
    # seed or a clock that went back means the world was reset under us.
    def __init__(self):
        self.key = None

    def new_episode(self, state):
        seed, t = state.get("seed"), float(state.get("episode_time_s", 0.0))
        fresh = self.key is None or seed != self.key[0] or t < self.key[1] - 1e-9
        self.key = (seed, t)
        return fresh

    def clear(self):
        self.key = None


class ReachExpert(Expert):
    """Move the pusher onto the target disc the way a person would, then hold still.

    Per episode: a reaction pause, a slightly curved path (quadratic Bezier) to a point near the
    target centre, a minimum-jerk speed profile at a random pace, a little hand wobble that fades
    out near the end, and sometimes a short hesitation mid-way.
    """

    def __init__(self, mapping: TaskPlaneMapping, max_speed_m_s=0.25, dt_s=0.1, rng=None, deadzone=0.05):
        self.mapping = mapping
        self.dt = float(dt_s)
        self.cmd = _Commander(mapping, max_speed_m_s, dt_s, deadzone)
        self.rng = _as_rng(rng)
        self._episode = _EpisodeTracker()
        self._plan = None
        self.done = False

    def reset(self, seed=None):
        if seed is not None:
            self.rng = _as_rng(seed)
        self._episode.clear()
        self._plan = None
        self.done = False

    def _make_plan(self, start, goal):
        rng = self.rng
        aim = goal + rng.normal(0.0, 3.0, 2).clip(-6.0, 6.0)
        d = aim - start
        dist = float(np.linalg.norm(d))
        normal = np.array([-d[1], d[0]]) / max(dist, 1e-9)
        ctrl = start + 0.5 * d + normal * rng.normal(0.0, 0.12) * dist
        vmax = self.cmd.max_speed_units
        # Minimum jerk peaks at 1.875x the mean speed; keep the peak under the device's top speed.
        v_mean = rng.uniform(0.28, 0.48) * vmax
        duration = max(0.6, dist / v_mean)
        pause_at = rng.uniform(0.3, 0.7) if rng.random() < 0.15 else None
        return {"start": start, "ctrl": ctrl, "aim": aim, "duration": duration,
                "delay": rng.uniform(0.1, 0.5), "pause_at": pause_at, "pause": rng.uniform(0.2, 0.5),
                "wobble": np.zeros(2), "wobble_amp": rng.uniform(0.5, 2.5), "t": 0.0, "paused": 0.0}

    def _reference(self, p):
        tau = np.clip((p["t"] - p["delay"]) / p["duration"], 0.0, 1.0)
        s = 10 * tau ** 3 - 15 * tau ** 4 + 6 * tau ** 5
        a, c, b = p["start"], p["ctrl"], p["aim"]
        ref = (1 - s) ** 2 * a + 2 * (1 - s) * s * c + s ** 2 * b
        return ref + p["wobble"] * np.sin(np.pi * s), tau

    def act(self, task_state, tcp_pose, target_xy_m):
        target = self.mapping.to_task(np.asarray(target_xy_m, dtype=float)[:2])
        if self._episode.new_episode(task_state):
            self._plan = self._make_plan(target, np.asarray(task_state["target_xy"], dtype=float))
            self.done = False
        if task_state.get("success"):
            self.done = True
        p = self._plan
        if self.done or p is None:
            return self.cmd.hold()
        # Hesitation: freeze the clock once, part-way along.
        tau_now = (p["t"] - p["delay"]) / p["duration"]
        if p["pause_at"] is not None and tau_now >= p["pause_at"] and p["paused"] < p["pause"]:
            p["paused"] += self.dt
            return self.cmd.hold()
        p["t"] += self.dt
        # Wobble: a slow random walk pulled back to zero (Ornstein-Uhlenbeck).
        p["wobble"] += -0.3 * p["wobble"] + self.rng.normal(0.0, p["wobble_amp"], 2)
        ref, tau = self._reference(p)
        if tau >= 1.0:
            # Arrived: correct only if the target is noticeably off the disc centre, else rest.
            ref = p["aim"] if np.linalg.norm(target - p["aim"]) > 4.0 else target
        return self.cmd.event(target, ref)


class PushTExpert(Expert):
    """Solves Push-T through the SpaceMouse interface by planned pushes (see PushPlanner).

    Cycle: plan -> travel around the T to the contact (fast, slowing for the run-in) -> push
    straight at a random human-like speed -> let the arm settle -> plan again. Travel is
    aborted and re-planned if the block moved (brushed on the way). Randomness: the sampled
    candidates, a softmax choice among the best, travel clearance, speeds, short pauses.
    Compute is bounded by the sample counts: a plan is at most n_samples + n_refine + n_continue
    rollouts of <= ~56 physics substeps each (~15 ms typical, ~50 ms worst case on a 2-core box);
    the steps in between cost ~0.1 ms. Measured through the deploy config's teleop (0.25 m/s,
    10 Hz): 200/200 seeds solved, mean 10 s, max 20 s of sim time.
    """

    def __init__(self, mapping: TaskPlaneMapping, max_speed_m_s=0.25, dt_s=0.1, rng=None, deadzone=0.05,
                 n_samples=40, n_refine=20, n_continue=10, temperature=1.0, bounds=(14.0, 498.0),
                 physics_dt=0.01, finish_coverage=0.0):
        self.mapping = mapping
        # 0: stop pushing at the task's success. Above it: keep refining to this coverage (or until no
        # push improves the pose), so demonstrations show the last fine alignment past the threshold.
        self.finish_coverage = float(finish_coverage)
        self.dt = float(dt_s)
        self.cmd = _Commander(mapping, max_speed_m_s, dt_s, deadzone)
        self.rng = _as_rng(rng)
        self.temperature = float(temperature)
        self.planner = PushPlanner(self.rng, n_samples, n_refine, n_continue, physics_dt, bounds=bounds)
        self.router = _Router(bounds)
        self._episode = _EpisodeTracker()
        self.stats = {"plans": 0, "replans": 0}
        self._clear()

    def _clear(self):
        self.done = False
        self.mode = "plan"
        self._move = None
        self._settle = 0
        self._push = None
        self._plan_pose = None
        self.predicted = None  # block pose the current push is expected to leave

    def reset(self, seed=None):
        if seed is not None:
            self.rng = _as_rng(seed)
            self.planner.rng = self.rng
        self._episode.clear()
        self._clear()

    # -- internals ---------------------------------------------------------------------------
    def _plan(self, block_pose, pusher, goal_pose):
        self.stats["plans"] += 1
        ranked = self.planner.plan(block_pose, pusher, goal_pose, self.temperature)
        if not ranked:
            return False
        rng = self.rng
        vmax = self.cmd.max_speed_units
        for cand in ranked:
            if cand["kind"] == "continue":
                path = [pusher, pusher]
            else:
                path = self.router.route(pusher, cand["start"], cand["u"], block_pose, rng.uniform(7.0, 14.0))
                if path is None:
                    continue
            end = cand["start"] + cand["u"] * cand["push"]
            near = cand["error_before"] < 20.0
            v_push = vmax * (rng.uniform(0.15, 0.3) if near else rng.uniform(0.3, 0.6))
            accel = rng.uniform(1500.0, 2500.0)
            travel = np.asarray(path[:-1] + [cand["start"]])
            self._move = _Move(travel, v_cruise=vmax * rng.uniform(0.6, 0.9), accel=accel,
                               v_end=min(v_push, 60.0))
            self._push = _Move([cand["start"], end], v_cruise=v_push, accel=accel, v_start=min(v_push, 60.0))
            self._plan_pose = np.asarray(block_pose, dtype=float).copy()
            self._pause = rng.uniform(0.1, 0.4) if rng.random() < 0.1 else 0.0
            self.mode = "travel" if self._move.length > 1e-6 else "push"
            self.predicted = cand["pose"]
            return True
        return False

    def _moved(self, block_pose):
        d = np.asarray(block_pose) - self._plan_pose
        ang = abs((d[2] + np.pi) % (2 * np.pi) - np.pi)
        return np.linalg.norm(d[:2]) > 2.0 or ang > np.deg2rad(2.0)

    def act(self, task_state, tcp_pose, target_xy_m):
        target = self.mapping.to_task(np.asarray(target_xy_m, dtype=float)[:2])
        if self._episode.new_episode(task_state):
            self._clear()
        if task_state.get("success") and float(task_state.get("coverage", 1.0)) >= self.finish_coverage:
            self.done = True
        if self.done:
            return self.cmd.hold()
        block = np.asarray(task_state["block_pose"], dtype=float)
        goal = np.asarray(task_state["goal_pose"], dtype=float)
        pusher = np.asarray(task_state["pusher_xy"], dtype=float)

        if self.mode == "travel" and self._moved(block):
            self.stats["replans"] += 1
            self.mode = "plan"
        if self.mode == "settle":
            # The arm lags the target: wait until the pusher caught up before judging the push.
            self._settle += 1
            if np.linalg.norm(pusher - target) > 1.0 and self._settle < 5:
                return self.cmd.hold()
            self.mode = "plan"
        if self.mode == "plan":
            # Plan from where the pusher will be (the target), not where it lags behind.
            if not self._plan(block, target, goal):
                # past the threshold and nothing improves: the refinement is over
                self.done = bool(task_state.get("success"))
                return self.cmd.hold()
        if self.mode == "travel":
            ref = self._move.advance(self.dt)
            if self._move.finished:
                self.mode = "pause" if self._pause > 0 else "push"
            return self.cmd.event(target, ref)
        if self.mode == "pause":
            self._pause -= self.dt
            if self._pause <= 0:
                self.mode = "push"
            return self.cmd.event(target, self._move.points[-1])
        if self.mode == "push":
            ref = self._push.advance(self.dt)
            if self._push.finished:
                self.mode, self._settle = "settle", 0
            return self.cmd.event(target, ref)
        return self.cmd.hold()


class DelayedObservations(Expert):
    """An expert that acts on what the world was `steps` control steps earlier: the task state and
    the measured TCP it is handed are held back that long (its own teleop target stays current,
    as a person's hand knows where it is). Demonstrations of a strategy that copes with a policy's
    inference latency, and a yardstick of what latency costs a strategy (expert_bench)."""

    def __init__(self, expert: Expert, steps: int):
        if int(steps) < 0:
            raise ValueError(f"observation delay must be >= 0 steps, got {steps}")
        self.expert = expert
        self.steps = int(steps)
        self._seen = collections.deque(maxlen=self.steps + 1)
        self._episode = _EpisodeTracker()

    def __getattr__(self, name):        # stats, finish_coverage, ...: the wrapped expert's
        return getattr(self.expert, name)

    @property
    def done(self):                     # (Expert has a class attribute of that name)
        return self.expert.done

    def reset(self, seed=None):
        self._seen.clear()
        self._episode.clear()
        self.expert.reset(seed)

    def act(self, task_state, tcp_pose, target_xy_m):
        if self._episode.new_episode(task_state):
            self._seen.clear()          # until `steps` have passed, the episode's first observation
        self._seen.append((task_state, np.array(tcp_pose, dtype=float)))
        old_state, old_pose = self._seen[0]
        return self.expert.act(old_state, old_pose, target_xy_m)


def expert_options(teleop_params: dict) -> dict:
    """make_expert keyword arguments from teleop_node's parameters."""
    out = {"obs_delay_steps": int(round(float(teleop_params.get("expert_obs_delay_s", 0.0))
                                        * float(teleop_params.get("rate_hz", 10.0))))}
    if teleop_params.get("task") == "pusht":
        out["finish_coverage"] = float(teleop_params.get("expert_finish_coverage", 0.0))
    return out


def make_expert(task_name, mapping: TaskPlaneMapping, max_speed_m_s=0.25, dt_s=0.1, seed=0, obs_delay_steps=0,
                **kwargs) -> Expert:
    """The scripted expert for a sim task ('reach' or 'pusht'), with its own seeded randomness;
    obs_delay_steps > 0: acting on observations that many control steps old (DelayedObservations)."""
    rng = np.random.default_rng(seed)
    if task_name == "reach":
        expert = ReachExpert(mapping, max_speed_m_s, dt_s, rng, **kwargs)
    elif task_name == "pusht":
        expert = PushTExpert(mapping, max_speed_m_s, dt_s, rng, **kwargs)
    else:
        raise ValueError(f"no expert for task {task_name!r} (expected 'reach' or 'pusht')")
    return DelayedObservations(expert, obs_delay_steps) if obs_delay_steps else expert
