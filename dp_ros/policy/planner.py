"""Observation -> action chunk with absolute times: the policy's side of the timing model.

Action k of a chunk is meant for the k-th step of the control grid that starts at the first
observation time, so index To-1 is the newest observation's time. ROS-free; the policy node
runs it in an inference process of its own (dp_ros.policy.worker).
"""

from dataclasses import dataclass

import numpy as np
import torch

from dp_ros.core import timing
from dp_ros.core.action_space import ActionSpace
from dp_ros.core.interpolator import PoseTrajectory
from dp_ros.policy.demo_motion import DemoMotion


@dataclass
class Commitment:
    """What the executing plan has committed when a chunk is requested (real-time chunking): its
    path (the plan and the rest of its chunk's prediction, absolute times), the time until which
    it will certainly execute (the request time + the expected latency), and through how many
    steps after the chunk's observation the new chunk is still pulled toward it where not frozen
    (0: only the certain part is frozen; ChunkPlanner.prefix_on_grid)."""
    times_ns: np.ndarray
    poses: np.ndarray
    until_ns: int
    soft_steps: int = 0
    warm_start: float = 0.0      # > 0: sampling starts from the path, noised (predict_action's warm_start)
    guidance: float = 0.0        # > 0: the soft steps are guided through the network (predict_action's guidance)
    candidates: int = 1          # > 1: that many chunks are sampled, the one joining the path most smoothly runs
    demo_motion: bool = True     # the free steps are held to the checkpoint's DemoMotion, where it has one

    @classmethod
    def from_params(cls, times_ns, poses, until_ns: int, p: dict) -> "Commitment":
        """With the inpainting settings of policy_node's parameters p (the node and the lockstep
        evaluator both build it so)."""
        return cls(times_ns, poses, until_ns, p["inpaint_soft_steps"], p["inpaint_warm_start"],
                   p["inpaint_guidance"], p["inpaint_candidates"], p["inpaint_demo_motion"])


def smoothest_junction(chunks: np.ndarray, first_free: int, position_dims: int) -> int:
    """Index of the chunk (N, Tp, Da) whose positions turn least sharply where its free steps take
    over from the frozen prefix: the largest second difference over the steps first_free - 1 ..
    first_free + 1 (the prefix is the same in every chunk, so this compares how each sample leaves
    it). Every candidate is a sample of the policy as it is, so the chosen one is too; nothing is
    mixed (bidirectional decoding's backward coherence, Liu et al. 2024, scored at the junction).
    A chunk with a non-finite value anywhere is never chosen over a finite one."""
    chunks = np.asarray(chunks, dtype=np.float64)
    pos = chunks[:, :, :position_dims]
    lo, hi = max(first_free - 2, 0), min(first_free + 3, pos.shape[1])
    window = pos[:, lo:hi]
    score = np.zeros(len(chunks))
    if window.shape[1] >= 3:
        score = np.linalg.norm(np.diff(window, n=2, axis=1), axis=2).max(axis=1)
    score[~np.isfinite(chunks).all(axis=(1, 2)) | ~np.isfinite(score)] = np.inf
    return int(np.argmin(score))


class ChunkPlanner:
    def __init__(self, policy, robot: dict, device, denoising_steps: int = 0, demo_motion: DemoMotion | None = None):
        """denoising_steps: DDIM steps per chunk, 0 = the checkpoint's num_inference_steps;
        demo_motion: the training data's motion, which a chunk's free steps are held to where they
        join a committed path (None: they are not)."""
        self.policy = policy
        self.cfg = policy.config
        if not 0 <= int(denoising_steps) <= self.cfg.num_train_timesteps:
            raise ValueError(f"denoising_steps must be in [0, {self.cfg.num_train_timesteps}] (the checkpoint's "
                             f"num_train_timesteps), got {denoising_steps}")
        self.denoising_steps = int(denoising_steps) or self.cfg.num_inference_steps
        self.device = device
        self.robot = robot
        self.action_space = ActionSpace(robot["action_space"], np.asarray(robot["fixed_pose"]))
        self.dt_ns = int(round(1e9 / self.cfg.control_frequency_hz))
        if demo_motion is not None and demo_motion.position_dims != self.action_space.position_dims:
            raise ValueError(f"checkpoint demo_motion is over {demo_motion.position_dims} position dims, its "
                             f"action space {robot['action_space']!r} has {self.action_space.position_dims}")
        self.demo_motion = demo_motion
        self.held_m = 0.0     # the last chunk: how far following demo_motion moved it from the sample (m)

    @classmethod
    def from_checkpoint(cls, checkpoint, device, denoising_steps: int = 0) -> "ChunkPlanner":
        """The checkpoint's policy with its robot spec (observation sources, action space): what the
        inference process serves and the lockstep evaluator runs."""
        from dp_ros.core.robot_features import robot_spec
        from dp_ros.policy.checkpoint import load_checkpoint

        policy = load_checkpoint(checkpoint, device=device)
        cfg = policy.config
        extra = getattr(policy, "checkpoint_extra", None) or {}
        robot = robot_spec(extra, cfg.lowdim_obs, cfg.action_dim)
        motion = DemoMotion.from_dict(extra["demo_motion"]) if extra.get("demo_motion") else None
        return cls(policy, robot, device, denoising_steps, motion)

    def to_tensors(self, obs) -> dict:
        batch = {}
        for cam, frames in obs.images.items():
            x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
            # Contiguous NCHW: the encoder runs ~20 % slower on the permuted (channels-last) view.
            batch[cam] = x.permute(0, 3, 1, 2).contiguous().float().div_(255.0).unsqueeze(0)
        for key, values in obs.lowdim.items():
            batch[key] = torch.as_tensor(values, dtype=torch.float32, device=self.device).unsqueeze(0)
        return batch

    def plan(self, obs, generator=None, committed=None):
        """-> (times_ns (Tp,) int64, poses (Tp, 7)). ValueError on a non-finite prediction.
        committed: a Commitment (real-time chunking): the chunk is sampled with it inpainted."""
        times = timing.step_times(obs.stamps_ns[0], self.cfg.pred_horizon, self.dt_ns)
        prefix = weight = initial = None
        warm = guidance = 0.0
        samples = 1
        if committed is not None and len(committed.times_ns):
            # the whole committed path on this chunk's grid (held past its ends), as actions
            on_grid = self.action_space.from_pose(PoseTrajectory(committed.times_ns, committed.poses)(times))
            on_grid = torch.from_numpy(on_grid.astype(np.float32)).to(self.device)
            prefix, weight = self.prefix_on_grid(committed, times, on_grid)
            if committed.warm_start > 0:   # sampling starts from the plan's mode
                initial, warm = on_grid, float(committed.warm_start)
            guidance = float(committed.guidance)
            samples = int(committed.candidates)
        # guidance differentiates through the network: inference mode's tensors cannot take part
        with torch.no_grad() if guidance > 0 else torch.inference_mode():
            out = self.policy.predict_action(self.to_tensors(obs), generator=generator,
                                             num_inference_steps=self.denoising_steps, prefix=prefix,
                                             prefix_weight=weight, initial=initial, warm_start=warm,
                                             guidance=guidance, num_samples=samples)
        candidates = out["action_pred"].float().cpu().numpy()
        pick = first_free = 0
        if weight is not None:
            free = np.nonzero(weight.cpu().numpy() < 1.0)[0]
            first_free = int(free[0]) if len(free) else len(times)
        if samples > 1:
            pick = smoothest_junction(candidates, first_free, self.action_space.position_dims)
        actions = candidates[pick]
        if not np.all(np.isfinite(actions)):
            raise ValueError("policy produced non-finite actions; chunk discarded")
        self.held_m = 0.0
        if weight is not None and committed.demo_motion and self.demo_motion is not None:
            # where it leaves the committed path, no faster and no sharper than any demonstration
            held = self.demo_motion.follow(actions, first_free)
            dims = self.action_space.position_dims
            self.held_m = float(np.linalg.norm(held[:, :dims] - actions[:, :dims], axis=1).max())
            actions = held
        poses = np.stack([self.action_space.to_pose(a) for a in actions])
        return times, poses

    def prefix_on_grid(self, committed, times, on_grid):
        """The committed path at this chunk's step times (on_grid: (Tp, action dim), the path held
        past its ends), masked to the steps that take part, and each step's weight: 1 up to
        committed.until_ns (those execute before the chunk can arrive: frozen); the j-th step after
        the chunk's observation, j <= committed.soft_steps, if not frozen, 1 - j / (soft_steps + 1)
        (pulled or guided); 0 beyond (free). The pulled steps are counted from the observation,
        not from the end of the frozen part: they spend on continuity only steps that latency has
        not spent already, so the chunk's correction starts soft_steps + 1 steps after its
        observation or at its first step that can still change, whichever is later (a pull on top
        of a 300 ms latency cost Push-T its corrections; README "Chunk stitching").
        Steps before the path's start (observation times already past) hold its first pose, so
        the frozen steps are always a prefix of the chunk, as a prefix-trained network saw them."""
        covered = times <= int(committed.times_ns[-1])
        weight = np.zeros(len(times))
        weight[covered & (times <= committed.until_ns)] = 1.0
        after_obs = np.arange(len(times)) - (self.cfg.obs_horizon - 1)
        soft = covered & (times > committed.until_ns) & (after_obs >= 1) & (after_obs <= committed.soft_steps)
        weight[soft] = 1.0 - after_obs[soft] / (committed.soft_steps + 1)
        weight = torch.from_numpy(weight.astype(np.float32)).to(self.device)
        return on_grid * (weight > 0).unsqueeze(-1), weight

    def warm_up(self, n=2):
        cfg = self.cfg
        To = cfg.obs_horizon
        batch = {cam: torch.zeros(1, To, 3, h, w, device=self.device) for cam, (h, w) in cfg.cameras.items()}
        for key, dim in cfg.lowdim_obs.items():
            batch[key] = torch.zeros(1, To, dim, device=self.device)
        for _ in range(n):
            with torch.inference_mode():
                self.policy.predict_action(batch, num_inference_steps=self.denoising_steps)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
