import pytest
import torch
from torch import nn

from dp_ros.policy.ema import EMAModel


def test_decay_schedule():
    ema = EMAModel(nn.Linear(2, 2))
    assert ema.get_decay(0) == 0.0 and ema.get_decay(1) == 0.0
    assert ema.get_decay(2) == pytest.approx(1 - 2 ** -0.75)
    assert ema.get_decay(10 ** 9) == 0.9999
    vals = [ema.get_decay(s) for s in range(1, 1000, 50)]
    assert vals == sorted(vals)


def test_step_and_state_round_trip():
    torch.manual_seed(0)
    model = nn.Linear(3, 3)
    ema = EMAModel(model)
    ema.step(model)  # the first two updates have decay 0: copies
    ema.step(model)
    assert torch.equal(ema.averaged_model.weight, model.weight)
    old = ema.averaged_model.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.step(model)
    d = ema.decay
    assert 0 < d < 1
    w = ema.averaged_model.weight
    assert (w > old).all() and (w < model.weight).all()
    assert not ema.averaged_model.weight.requires_grad
    other = EMAModel(nn.Linear(3, 3))
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.averaged_model.weight, w) and other.optimization_step == 3
