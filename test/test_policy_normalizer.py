import numpy as np
import pytest
import torch

from dp_ros.policy.normalizer import LinearNormalizer


def _data():
    rng = np.random.default_rng(0)
    return {"action": rng.uniform([-3, 10], [5, 12], size=(40, 16, 2)),
            "robot_pose": rng.normal(size=(200, 3)) * [1, 100, 0.01]}


def test_range_and_round_trip():
    data = _data()
    norm = LinearNormalizer().fit(data)
    for k, v in data.items():
        x = torch.as_tensor(v, dtype=torch.float32)
        n = norm.normalize(x, k)
        flat = n.reshape(-1, n.shape[-1])
        assert torch.allclose(flat.min(0).values, torch.full((x.shape[-1],), -1.0), atol=1e-5)
        assert torch.allclose(flat.max(0).values, torch.full((x.shape[-1],), 1.0), atol=1e-5)
        back = norm.unnormalize(n, k)
        assert torch.allclose(back, x, rtol=1e-5, atol=1e-4)


def test_constant_dimension_is_guarded():
    data = np.stack([np.linspace(0, 1, 10), np.full(10, 3.0)], axis=-1)
    norm = LinearNormalizer().fit({"a": data})
    n = norm.normalize(torch.as_tensor(data, dtype=torch.float32), "a")
    assert torch.isfinite(n).all()
    assert torch.allclose(n[:, 1], torch.zeros(10))
    assert torch.allclose(norm.unnormalize(n, "a")[:, 1], torch.full((10,), 3.0))


def test_dict_passes_unknown_keys_through():
    norm = LinearNormalizer().fit(_data())
    img = torch.rand(1, 2, 3, 8, 8)
    out = norm.normalize({"robot_pose": torch.zeros(1, 2, 3), "cam": img})
    assert out["cam"] is img and out["robot_pose"].shape == (1, 2, 3)


def test_state_dict_into_unfitted_normalizer():
    norm = LinearNormalizer().fit(_data())
    other = LinearNormalizer()
    other.load_state_dict(norm.state_dict())
    flat = LinearNormalizer.from_flat_state(norm.flat_state())
    x = torch.randn(5, 2)
    for n in (other, flat):
        assert n.keys() == ["action", "robot_pose"]
        assert torch.equal(n.normalize(x, "action"), norm.normalize(x, "action"))
    lo, hi = flat.limits("action")
    assert lo.shape == (2,) and np.all(hi > lo)


def test_errors():
    norm = LinearNormalizer().fit(_data())
    with pytest.raises(KeyError, match="no statistics for 'gripper'"):
        norm.normalize(torch.zeros(2), "gripper")
    with pytest.raises(ValueError, match="has 2 dims"):
        norm.normalize(torch.zeros(4, 3), "action")
    with pytest.raises(ValueError, match="NaN"):
        LinearNormalizer().fit({"a": np.array([[np.nan]])})
