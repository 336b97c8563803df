"""The policy's inference as the deployed policy node runs it, for the benches to load or time:
the same inference process and a stand-in observation of the checkpoint's shape."""

import numpy as np


def deployed_inference(checkpoint):
    """(InferenceProcess, policy config): the process set up as the policy node starts it (device,
    threads, priority from the shipped config), not yet started."""
    from dp_ros.graph import default_config, load_params, read_checkpoint_config
    from dp_ros.policy.worker import InferenceProcess
    cfg = read_checkpoint_config(checkpoint)["policy_config"]
    return InferenceProcess.from_params(load_params(default_config())["policy_node"], checkpoint), cfg


def dummy_observation(policy_cfg: dict):
    from dp_ros.core.obs_buffer import Observation
    To = int(policy_cfg["obs_horizon"])
    rng = np.random.default_rng(0)
    images = {cam: rng.integers(0, 255, (To, h, w, 3), dtype=np.uint8)
              for cam, (h, w) in policy_cfg.get("cameras", {}).items()}
    lowdim = {k: np.zeros((To, d)) for k, d in policy_cfg.get("lowdim_obs", {}).items()}
    stamps = np.arange(To, dtype=np.int64) * int(1e8)
    return Observation(stamps, images, lowdim, int(stamps[-1]))
