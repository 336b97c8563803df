"""Observation -> action chunk with absolute times: the policy's side of the timing model.

Action k of a chunk is meant for the k-th step of the control grid that starts at the first
observation time, so index To-1 is the newest observation's time. ROS-free; the policy node
runs it in an inference process of its own (dp_ros.policy.worker).
"""

import numpy as np
import torch

from dp_ros.core import timing
from dp_ros.core.action_space import ActionSpace


class ChunkPlanner:
    def __init__(self, policy, robot: dict, device):
        self.policy = policy
        self.cfg = policy.config
        self.device = device
        self.action_space = ActionSpace(robot["action_space"], np.asarray(robot["fixed_pose"]))
        self.dt_ns = int(round(1e9 / self.cfg.control_frequency_hz))

    def to_tensors(self, obs) -> dict:
        batch = {}
        for cam, frames in obs.images.items():
            x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
            # Contiguous NCHW: the encoder runs ~20 % slower on the permuted (channels-last) view.
            batch[cam] = x.permute(0, 3, 1, 2).contiguous().float().div_(255.0).unsqueeze(0)
        for key, values in obs.lowdim.items():
            batch[key] = torch.as_tensor(values, dtype=torch.float32, device=self.device).unsqueeze(0)
        return batch

    def plan(self, obs, generator=None):
        """-> (times_ns (Tp,) int64, poses (Tp, 7)). ValueError on a non-finite prediction."""
        with torch.inference_mode():
            out = self.policy.predict_action(self.to_tensors(obs), generator=generator)
        actions = out["action_pred"][0].float().cpu().numpy()
        if not np.all(np.isfinite(actions)):
            raise ValueError("policy produced non-finite actions; chunk discarded")
        times = timing.step_times(obs.stamps_ns[0], len(actions), self.dt_ns)
        poses = np.stack([self.action_space.to_pose(a) for a in actions])
        return times, poses

    def warm_up(self, n=2):
        cfg = self.cfg
        To = cfg.obs_horizon
        batch = {cam: torch.zeros(1, To, 3, h, w, device=self.device) for cam, (h, w) in cfg.cameras.items()}
        for key, dim in cfg.lowdim_obs.items():
            batch[key] = torch.zeros(1, To, dim, device=self.device)
        for _ in range(n):
            with torch.inference_mode():
                self.policy.predict_action(batch)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
