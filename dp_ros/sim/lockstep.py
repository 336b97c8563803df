"""Lockstep evaluation: the deploy graph's control logic in one process, on simulated time.

The world pauses while the policy infers, as in the Diffusion Policy paper's evaluation, so the
score measures the policy and not this machine's latency. `delay_s` injects a known inference
latency instead: the world then runs on for that long while the chunk is computed, executing the
current plan, exactly as the graph would with a network that slow (`dp-ros bench stitching`).

It is the graph's code, not a second copy of it: the checkpoint is loaded by
ChunkPlanner.from_checkpoint (what the inference process serves), the world is built by
SimWorld.from_params, frames go through fit_frame and the ObservationBuffer, robot features come
from robot_features.feature, chunks are requested, stitched and streamed by ActionScheduler and
commanded by ServoController, every setting from the deploy graph's own parameters
(graph.node_params). What the middleware adds is absent: the scheduler's exec_latency is 0, and
the sensors sample on the servo tick (state every tick, frames at the camera rate and at the
instant an observation is taken).

Timing, with delay d: a request goes out when the plan's remaining time is at most d (the
scheduler's own rule, its latency estimate being exactly d); the observation is taken then, and
the chunk is handed to the scheduler d later, which keeps its first Ta waypoints after that
instant (horizon_start=arrival) or those of chunk indices To..To+Ta-1 still ahead then
(horizon_start=observation: d shortens what runs instead of lengthening the open loop). With
d = 0 the executed waypoints are chunk indices To .. To+Ta-1 (index To-1 is the observation
instant itself, where the arm already is), and the next observation is taken when the last of
them is due: every Ta*dt, as in the paper.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from dp_ros.core.obs_buffer import ObservationBuffer, StaleObservation, fit_frame
from dp_ros.core.robot_features import feature, fixed_pose_problem, object_feature, split_sources
from dp_ros.core.scheduler import ActionScheduler, resolve_stitch
from dp_ros.core.servo_controller import Action, ServoController
from dp_ros.policy.planner import ChunkPlanner, Commitment
from dp_ros.sim.world import episode_scores

SETTLE_S = 0.5          # still arm before the first request, as `dp-ros eval` waits after a reset
START_NS = 10**12       # simulated clock origin: far from 0, so no time is ever negative
JUNCTION_WAYPOINTS = 3  # new-plan waypoints in a junction (plan_boundary_*: the figure since stop 10)
MAX_TRANSITION_WAYPOINTS = 12   # new-plan waypoints kept per junction for the transition figure


@dataclass
class EpisodeTrace:
    """What one lockstep episode did, tick by tick and chunk by chunk (for the boundary figures)."""
    command_xyz: list = field(default_factory=list)          # per servo tick: commanded position
    accept_ticks: list = field(default_factory=list)         # tick index at which a chunk was accepted
    junctions: list = field(default_factory=list)            # per accepted chunk after the first:
    #   (times, xyz, n_old): the old plan's last n_old <= 2 due waypoints, then the new plan's first ones
    overlap_distances: list = field(default_factory=list)    # mean |old plan - new chunk| over their overlap
    interior_acc: list = field(default_factory=list)         # per accepted plan: largest |acc| inside it


class LockstepEvaluator:
    recommended_stitch: str | None = None     # the checkpoint's (`dp-ros export --stitch`); set by __init__

    def __init__(self, checkpoint, config_file=None, device: str = "cpu", delay_s: float = 0.0,
                 stitch: str | None = None, seed: int | None = None, episode_timeout_s: float | None = None,
                 sampling_seed: int = 0, inpaint_soft_steps: int | None = None,
                 action_horizon: int | None = None, world=None):
        """world: a SimWorld to run in instead of one of its own (the takeover recorder shares its
        world, so that the expert continues from where the policy left it)."""
        import torch

        from dp_ros.graph import deploy_graph, node_params, read_checkpoint_config, recommended_stitch
        from dp_ros.sim.world import SimWorld

        self.params = node_params(deploy_graph(True, checkpoint, config_file, seed=seed, stitch=stitch,
                                               action_horizon=action_horizon), config_file)
        self.checkpoint_config = read_checkpoint_config(checkpoint)
        self.recommended_stitch = recommended_stitch(self.checkpoint_config)
        self.configure(delay_s, None, inpaint_soft_steps)   # deploy_graph has resolved `stitch` and its settings
        if episode_timeout_s is not None:
            self.params["sim_world_node"]["episode_timeout_s"] = float(episode_timeout_s)
        self.torch = torch
        self.device = torch.device(device)
        self.planner = ChunkPlanner.from_checkpoint(checkpoint, self.device,
                                                    self.params["policy_node"]["denoising_steps"])
        self.cfg = self.planner.cfg
        self.world = world if world is not None else SimWorld.from_params(self.params["sim_world_node"])
        self.tick_ns = int(round(1e9 / self.params["ur5_servo_node"]["rate_hz"]))
        self.publish_ns = int(round(1e9 / self.params["action_scheduler_node"]["publish_rate_hz"]))
        self.frame_ns = int(round(1e9 / self.params["sim_world_node"]["camera_fps"]))
        self.sampling_seed = int(sampling_seed)
        self.sources = self.planner.robot["obs_sources"]
        self.robot_sources, self.object_sources = split_sources(self.sources)   # once: sampled every tick
        missing = sorted(set(self.object_sources.values()) - set(self.world.object_poses()))
        if missing:
            raise ValueError(f"the checkpoint observes objects {missing} that the {self.world.task_name} world "
                             f"does not have (it has {sorted(self.world.object_poses())})")

    def configure(self, delay_s: float = 0.0, stitch: str | None = None, inpaint_soft_steps: int | None = None,
                  inpaint_warm_start: float | None = None, blend_steps: int | None = None,
                  horizon_start: str | None = None, inpaint_guidance: float | None = None,
                  action_horizon: int | None = None, inpaint_candidates: int | None = None,
                  inpaint_demo_motion: bool | None = None):
        """Settings that may change between runs of one evaluator (the model stays loaded);
        action_horizon 0 = the checkpoint's (graph.executed_steps)."""
        from dp_ros.core.parameters import NODE_PARAMETERS
        from dp_ros.graph import executed_steps

        if not (np.isfinite(delay_s) and delay_s >= 0):
            raise ValueError(f"delay_s must be >= 0, got {delay_s}")
        self.delay_ns = int(round(delay_s * 1e9))
        if stitch is not None:
            self.params["action_scheduler_node"]["stitch"] = resolve_stitch(
                NODE_PARAMETERS["action_scheduler_node"]["stitch"].check("stitch", stitch), self.recommended_stitch)
        for node, key, value in (("policy_node", "inpaint_soft_steps", inpaint_soft_steps),
                                 ("policy_node", "inpaint_warm_start", inpaint_warm_start),
                                 ("policy_node", "inpaint_guidance", inpaint_guidance),
                                 ("policy_node", "inpaint_candidates", inpaint_candidates),
                                 ("policy_node", "inpaint_demo_motion", inpaint_demo_motion),
                                 ("action_scheduler_node", "blend_steps", blend_steps),
                                 ("action_scheduler_node", "horizon_start", horizon_start)):
            if value is not None:
                spec = NODE_PARAMETERS[node][key]
                self.params[node][key] = spec.check(key, spec.type(value))
        if action_horizon is not None:
            self.params["action_scheduler_node"]["action_horizon"] = executed_steps(self.checkpoint_config,
                                                                                    action_horizon)

    @property
    def stitch(self) -> str:
        return self.params["action_scheduler_node"]["stitch"]

    def seed_of(self, index: int) -> int:
        """The world seed of episode `index` (0-based): the sim world node's, seed + episode number."""
        return int(self.params["sim_world_node"]["seed"]) + index + 1

    # ------------------------------------------------------------------ sensors
    def _sample_state(self, buffer, now):
        pose = self.world.tcp_pose()
        joints = self.world.joints() if "joints" in self.robot_sources.values() else None
        if self.robot_sources:
            buffer.add_state(now, {k: feature(src, pose, joints) for k, src in self.robot_sources.items()})

    def _sample_frames(self, buffer, now):
        """The camera-rate sensors: frames, and object poses (the sim world node publishes them with
        each render, as a tracker running on the camera's images would)."""
        for cam, size in self.cfg.cameras.items():
            buffer.add_frame(cam, now, fit_frame(self.world.render(cam), size))
        if self.object_sources:
            poses = self.world.object_poses()
            buffer.add_state(now, {k: object_feature(poses[name]) for k, name in self.object_sources.items()})

    def _commitment(self, scheduler, now):
        times, poses = scheduler.committed_path(now)
        if not len(times):
            return None
        return Commitment.from_params(times, poses, now + self.delay_ns, self.params["policy_node"])

    # ------------------------------------------------------------------ one episode
    def run_episode(self, index: int, trace: EpisodeTrace | None = None, stop_after_s: float | None = None) -> dict:
        """One episode from world seed seed_of(index), until success or the episode timeout; or,
        with stop_after_s, until that much episode time has passed (the world is left as it is
        then: a takeover's lead-in)."""
        cfg, world = self.cfg, self.world
        seed = self.seed_of(index)
        world.reset(seed)
        timeout_s = float(self.params["sim_world_node"]["episode_timeout_s"])
        if stop_after_s is not None:
            timeout_s = min(timeout_s, float(stop_after_s))
        buffer = ObservationBuffer(list(cfg.cameras), dict(cfg.lowdim_obs), cfg.obs_horizon,
                                   1.0 / cfg.control_frequency_hz,
                                   max_frame_age_s=self.params["policy_node"]["max_frame_age_s"])
        # The latency estimate is the injected delay, exactly: requests go out d before the plan ends.
        scheduler = ActionScheduler.from_params(self.params["action_scheduler_node"], exec_latency_s=0.0,
                                                margin_s=0.0, latency_dev_k=0.0,
                                                initial_latency_s=self.delay_ns * 1e-9)
        servo = ServoController.from_params(self.params["ur5_servo_node"])
        generator = self.torch.Generator(device="cpu").manual_seed(self.sampling_seed * 1_000_003 + seed)
        trace = trace if trace is not None else EpisodeTrace()

        now = START_NS
        next_frame = now
        # The arm stands still while the buffer fills, as the graph's episode start waits.
        settle_end = now + int(SETTLE_S * 1e9)
        while now <= settle_end:
            self._sample_state(buffer, now)
            if now >= next_frame:
                self._sample_frames(buffer, now)
                next_frame += self.frame_ns
            servo.on_measured(world.tcp_pose(), now)
            world.step(self.tick_ns * 1e-9)
            now += self.tick_ns
        world.time_s = 0.0    # the episode's clock starts with the policy, as in the graph
        world.max_coverage = world.task.coverage
        servo.on_measured(world.tcp_pose(), now)
        servo.set_enabled(True, now)

        pending = None            # (arrival_ns, times, poses) of the chunk being "computed"
        next_publish = now
        chunks = failures = 0
        infer_s = []
        tick = 0
        while True:
            self._sample_state(buffer, now)
            if now >= next_frame:
                self._sample_frames(buffer, now)
                next_frame += self.frame_ns
            accepted = False
            if pending is None and scheduler.needs_inference(now):
                if next_frame - self.frame_ns != now:
                    self._sample_frames(buffer, now)        # the camera captures at the request
                scheduler.mark_requested(now)
                try:
                    obs = buffer.build(now)
                    problem = fixed_pose_problem(self.planner.robot, world.tcp_pose(),
                                                 self.params["policy_node"]["fixed_pose_max_height_m"],
                                                 self.params["policy_node"]["fixed_pose_max_angle_rad"])
                    if problem:
                        raise ValueError(problem)
                    t0 = time.perf_counter()
                    times, poses = self.planner.plan(obs, generator=generator,
                                                     committed=self._commitment(scheduler, now))
                    infer_s.append(time.perf_counter() - t0)
                    pending = (now + self.delay_ns, times, poses)
                except (StaleObservation, ValueError):
                    failures += 1
            if pending is not None and now >= pending[0]:
                _, times, poses = pending
                pending = None
                old, old_path = scheduler.plan, scheduler.predicted_path()
                if scheduler.on_chunk(times, poses, now):
                    accepted = True
                    chunks += 1
                    self._note_junction(trace, old, old_path, scheduler, times, poses, now, tick)
                else:
                    failures += 1
            if accepted or now >= next_publish:
                w_times, w_poses = scheduler.waypoints(now)
                servo.on_waypoints(w_times, w_poses, now)
                next_publish = now + self.publish_ns
            cmd = servo.step(now)
            if cmd is not None and cmd.action is Action.SERVO:
                world.servo(cmd.pose)
            elif cmd is not None and cmd.action is Action.STOP:
                world.stop()
            trace.command_xyz.append(np.array(servo.command[:3]))
            world.step(self.tick_ns * 1e-9)
            now += self.tick_ns
            tick += 1
            servo.on_measured(world.tcp_pose(), now)
            if world.task.success or world.time_s >= timeout_s:
                break
        state = world.task_state()
        return {
            "episode": index, "seed": seed, "success": bool(state["success"]),
            "final_coverage": round(state["coverage"], 4), "max_coverage": round(float(world.max_coverage), 4),
            "duration_s": round(world.time_s, 2), "chunks": chunks, "failed_chunks": failures,
            "inference_ms_median": round(float(np.median(infer_s)) * 1e3, 1) if infer_s else None,
            "dropped_waypoints": int(scheduler.stats["waypoints_dropped_stale"]),
            "servo_clamped": int(servo.counts.clamped),
        }

    @staticmethod
    def _note_junction(trace, old, old_path, scheduler, times, poses, now, tick):
        """Where the new plan meets the old one: the old waypoints already due and the new plan's
        first ones (for the acceleration there), and how far the raw chunk is from the old plan."""
        trace.accept_ticks.append(tick)
        new = scheduler.plan
        inside = _second_differences(new.times_ns[2:], new.poses[2:, :3])   # clear of the junction's waypoints
        if inside.size:
            trace.interior_acc.append(float(inside.max()))
        if old is None:
            return
        before = old.times_ns <= now
        n_old = min(int(before.sum()), 2)
        t = np.concatenate([old.times_ns[before][-2:], new.times_ns[:MAX_TRANSITION_WAYPOINTS]])
        xyz = np.concatenate([old.poses[before][-2:, :3], new.poses[:MAX_TRANSITION_WAYPOINTS, :3]])
        trace.junctions.append((t, xyz, n_old))
        times = np.asarray(times)
        overlap = (times > now) & (times <= old_path.end_ns)
        if overlap.any():
            d = np.linalg.norm(old_path(times[overlap])[:, :3] - np.asarray(poses)[overlap, :3], axis=1)
            trace.overlap_distances.append(float(d.mean()))

    # ------------------------------------------------------------------ many episodes
    def evaluate(self, episodes: int, progress=None, transition_waypoints: int | None = None) -> dict:
        """Run `episodes` episodes; the summary has the same figures as the real-time eval's, plus
        the chunk-boundary figures of boundary_stats. transition_waypoints: new-plan waypoints in
        the transition figure (default: through the end of this run's blend, at least
        JUNCTION_WAYPOINTS); pass the same to every run that is compared."""
        if transition_waypoints is None:
            transition_waypoints = transition_window(self.params["action_scheduler_node"]["blend_steps"])
        results, traces = [], []
        for i in range(int(episodes)):
            trace = EpisodeTrace()
            results.append(self.run_episode(i, trace))
            traces.append(trace)
            if progress is not None:
                progress(results[-1])
        summary = dict(episode_scores(results), failed_chunks=int(sum(r["failed_chunks"] for r in results)))
        summary.update(boundary_stats(traces, self.tick_ns * 1e-9, 1.0 / self.cfg.control_frequency_hz,
                                      transition_waypoints))
        summary.update(mode="lockstep", delay_ms=round(self.delay_ns * 1e-6, 1), stitch=self.stitch,
                       inpaint_soft_steps=self.params["policy_node"]["inpaint_soft_steps"],
                       inpaint_warm_start=self.params["policy_node"]["inpaint_warm_start"],
                       inpaint_guidance=self.params["policy_node"]["inpaint_guidance"],
                       inpaint_candidates=self.params["policy_node"]["inpaint_candidates"],
                       inpaint_demo_motion=self.params["policy_node"]["inpaint_demo_motion"],
                       blend_steps=self.params["action_scheduler_node"]["blend_steps"],
                       horizon_start=self.params["action_scheduler_node"]["horizon_start"],
                       action_horizon=self.params["action_scheduler_node"]["action_horizon"],
                       denoising_steps=self.planner.denoising_steps, episodes=results)
        return summary


def _second_differences(t_ns, xyz) -> np.ndarray:
    """|acceleration| between consecutive segments of a piecewise-linear path (m/s^2)."""
    t = np.asarray(t_ns, dtype=np.float64) * 1e-9
    dt = np.diff(t)
    ok = dt > 0
    v = np.diff(xyz, axis=0)[ok] / dt[ok, None]
    tm = (t[1:] + t[:-1])[ok] / 2
    if len(v) < 2:
        return np.zeros(0)
    return np.linalg.norm(np.diff(v, axis=0), axis=1) / np.diff(tm)


def transition_window(blend_steps: int) -> int:
    """New-plan waypoints that hold the whole of a junction's turn when the new chunk is blended
    in over blend_steps: the blended ones (weights 0 .. (B-1)/B), the first of the chunk's own
    and one more, so that the second difference at that first one is counted; at least
    JUNCTION_WAYPOINTS, capped at MAX_TRANSITION_WAYPOINTS."""
    return min(max(JUNCTION_WAYPOINTS, int(blend_steps) + 2), MAX_TRANSITION_WAYPOINTS)


def boundary_stats(traces: list[EpisodeTrace], tick_s: float, dt_s: float,
                   transition_waypoints: int = JUNCTION_WAYPOINTS) -> dict:
    """Chunk-boundary smoothness over all episodes:
      plan_boundary_acc_max: largest |acceleration| of the waypoint path where a new chunk joins
        (the old plan's last two due waypoints and the new plan's first three);
      plan_boundary_acc_p99: its 99th percentile over the junctions (the max is one junction of
        hundreds);
      plan_transition_acc_max / _p99: the same over the new plan's first transition_waypoints
        (transition_window: a blend's turn runs past the third waypoint, where the junction
        figure stops; compare modes at one window);
      transition_waypoints: that window;
      plan_interior_acc_p99: the same figure inside the plans, clear of their junctions (the
        policy's own motion: a junction no sharper than this is seamless);
      command_boundary_acc_max / command_boundary_jerk_max: largest |acceleration| / |jerk| of the
        servo's commanded position within one control step after each junction (the servo's
        acceleration limit caps the first, not the second);
      overlap_distance_mean: mean position distance between the old plan and the new chunk over
        the times both cover (how much the new chunk disagrees with what is executing)."""
    plan_acc, transition_acc, cmd_acc, cmd_jerk, dist, interior = [], [], [], [], [], []
    for tr in traces:
        dist.extend(tr.overlap_distances)
        interior.extend(tr.interior_acc)
        for t, xyz, n_old in tr.junctions:
            for n_new, out in ((JUNCTION_WAYPOINTS, plan_acc), (int(transition_waypoints), transition_acc)):
                a = _second_differences(t[:n_old + n_new], xyz[:n_old + n_new])
                if a.size:
                    out.append(float(a.max()))
        cmd = np.asarray(tr.command_xyz)
        for k in tr.accept_ticks[1:]:
            seg = cmd[max(0, k - 3):k + int(round(dt_s / tick_s)) + 3]
            if len(seg) >= 4:
                cmd_acc.append(float(np.linalg.norm(np.diff(seg, 2, axis=0), axis=1).max() / tick_s**2))
                cmd_jerk.append(float(np.linalg.norm(np.diff(seg, 3, axis=0), axis=1).max() / tick_s**3))

    def top(x):
        return round(max(x), 3) if x else None

    def p99(x):
        return round(float(np.percentile(x, 99)), 3) if x else None

    return {"plan_boundary_acc_max": top(plan_acc), "plan_boundary_acc_p99": p99(plan_acc),
            "plan_transition_acc_max": top(transition_acc), "plan_transition_acc_p99": p99(transition_acc),
            "transition_waypoints": int(transition_waypoints), "plan_interior_acc_p99": p99(interior),
            "command_boundary_acc_max": top(cmd_acc),
            "command_boundary_jerk_max": top(cmd_jerk),
            "overlap_distance_mean": round(float(np.mean(dist)), 5) if dist else None}
