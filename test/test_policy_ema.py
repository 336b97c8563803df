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


def test_fused_update_is_the_average_of_every_weight():
    """decay*avg + (1-decay)*live for each trainable tensor of a many-tensor model (one fused
    call), frozen weights copied, and a first update that copies exactly."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 8), nn.GroupNorm(2, 8), nn.Linear(8, 3))
    model[1].weight.requires_grad_(False)
    ema = EMAModel(model, power=0.75)
    ema.step(model)
    for a, p in zip(ema.averaged_model.parameters(), model.parameters()):
        assert torch.equal(a, p)
    for _ in range(3):
        before = [a.clone() for a in ema.averaged_model.parameters()]
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.step(model)
        d = ema.decay
        for (name, p), a, old in zip(model.named_parameters(), ema.averaged_model.parameters(), before):
            want = p if not p.requires_grad else d * old + (1 - d) * p
            torch.testing.assert_close(a, want, rtol=1e-6, atol=1e-6, msg=name)
