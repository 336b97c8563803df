"""Process RNG capture / restore (what an exact resume relies on), on its own."""

import random

import numpy as np
import torch

from dp_ros.train.seeding import rng_state, seed_everything, set_rng_state


def draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_restored_rng_state_replays_the_same_draws():
    seed_everything(123)
    draws()
    saved = rng_state(torch.device("cpu"))
    first = draws()
    seed_everything(7)     # anything in between
    draws()
    set_rng_state(saved, torch.device("cpu"))
    assert draws() == first
