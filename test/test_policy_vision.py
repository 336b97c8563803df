import torch
from torch import nn

from dp_ros.policy.config import PolicyConfig
from dp_ros.policy.vision import ObsEncoder, SpatialSoftmax, crop_images, resnet18_trunk


def test_groupnorm_replaces_every_batchnorm():
    trunk = resnet18_trunk()
    assert not [m for m in trunk.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    gns = [m for m in trunk.modules() if isinstance(m, nn.GroupNorm)]
    assert len(gns) == 20  # every BatchNorm of resnet18 (incl. downsample branches)
    for g in gns:
        assert g.num_groups == g.num_channels // 16


def test_crop_centre_and_random():
    img = torch.arange(2 * 3 * 10 * 12, dtype=torch.float32).reshape(2, 3, 10, 12)
    c = crop_images(img, (6, 8), random=False)
    assert torch.equal(c, img[:, :, 2:8, 2:10])
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(20):
        r = crop_images(img, (6, 8), random=True, generator=gen)
        assert r.shape == (2, 3, 6, 8)
        for i in range(2):
            top, left = divmod(int(r[i, 0, 0, 0].item()) - i * 360, 12)
            assert 0 <= top <= 4 and 0 <= left <= 4
            assert torch.equal(r[i], img[i, :, top:top + 6, left:left + 8])
            seen.add((top, left))
    assert len(seen) > 3  # windows differ between images and calls


def _cfg(**kw):
    base = dict(lowdim_obs={"pose": 2}, cameras={"a": [48, 56], "b": [48, 56]}, crop=[40, 40],
                image_feature_dim=16, num_keypoints=8)
    base.update(kw)
    return PolicyConfig(**base)


def test_encoder_shapes_train_eval():
    enc = ObsEncoder(_cfg())
    obs = {"a": torch.rand(2, 3, 3, 48, 56), "b": torch.rand(2, 3, 3, 48, 56),
           "pose": torch.randn(2, 3, 2)}
    assert enc.feature_dim == 2 * 16 + 2
    out = enc(obs)
    assert out.shape == (2, 3, 34)
    assert torch.equal(out[..., -2:], obs["pose"])
    enc.eval()
    assert torch.allclose(enc(obs), enc(obs), atol=1e-6)  # centre crop: deterministic
    enc.train()
    assert not torch.allclose(enc(obs), enc(obs))  # random crop
    u8 = {**obs, "a": (obs["a"] * 255).to(torch.uint8)}
    assert enc.eval()(u8).shape == (2, 3, 34)


def test_shared_encoder_and_avg_pooling():
    sep, shared = ObsEncoder(_cfg()), ObsEncoder(_cfg(shared_encoder=True))
    n_sep = sum(p.numel() for p in sep.parameters())
    n_shared = sum(p.numel() for p in shared.parameters())
    assert n_sep == 2 * n_shared
    avg = ObsEncoder(_cfg(pooling="avg", shared_encoder=True)).eval()
    obs = {"a": torch.rand(1, 2, 3, 48, 56), "b": torch.rand(1, 2, 3, 48, 56),
           "pose": torch.zeros(1, 2, 2)}
    assert avg(obs).shape == (1, 2, 34) and shared.eval()(obs).shape == (1, 2, 34)


def test_spatial_softmax_keypoints_in_range():
    ss = SpatialSoftmax(4, 3)
    out = ss(torch.randn(2, 4, 5, 7))
    assert out.shape == (2, 6) and out.abs().max() <= 1.0


def test_three_stage_trunk_keeps_a_finer_map():
    img = torch.rand(2, 3, 84, 84)
    assert resnet18_trunk(4)(img).shape == (2, 512, 3, 3)
    assert resnet18_trunk(3)(img).shape == (2, 256, 6, 6)
    enc = ObsEncoder(_cfg(resnet_stages=3))
    obs = {"a": torch.rand(2, 2, 3, 48, 56), "b": torch.rand(2, 2, 3, 48, 56),
           "pose": torch.randn(2, 2, 2)}
    assert enc(obs).shape == (2, 2, 34)


def test_resnet_stages_validated():
    import pytest
    with pytest.raises(ValueError, match="resnet_stages must be one of"):
        _cfg(resnet_stages=2)
    # 3 stages downsample by 16, so a 24-pixel crop still has a 2x2 map; 4 stages would not.
    _cfg(crop=[24, 24], resnet_stages=3)
    with pytest.raises(ValueError, match="needs both sides > 32 pixels"):
        _cfg(crop=[24, 24])
