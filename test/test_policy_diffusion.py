import numpy as np
import pytest
import torch

from dp_ros.policy.config import PolicyConfig
from dp_ros.policy.diffusion import DiffusionPolicy
from dp_ros.policy.normalizer import LinearNormalizer


SMALL_UNET = dict(down_dims=[16, 32], kernel_size=3, diffusion_step_embed_dim=16)
SMALL_TF = dict(backbone="transformer", n_layer=2, n_head=2, n_emb=16, p_drop_attn=0.0)


def make(cameras=True, **kw):
    base = dict(action_dim=2, lowdim_obs={"pose": 3}, num_inference_steps=4,
                image_feature_dim=8, num_keypoints=4, **SMALL_UNET)
    if cameras:
        base.update(cameras={"cam": [44, 44]}, crop=[40, 40])
    base.update(kw)
    cfg = PolicyConfig(**base)
    policy = DiffusionPolicy(cfg)
    rng = np.random.default_rng(0)
    policy.set_normalizer(LinearNormalizer().fit({
        "action": rng.uniform(-2, 5, size=(50, cfg.action_dim)),
        "pose": rng.uniform(-1, 1, size=(50, 3))}))
    return policy


def obs_for(cfg, B=2, T=None):
    T = T or cfg.obs_horizon
    g = torch.Generator().manual_seed(1)
    obs = {k: torch.rand(B, T, 3, *hw, generator=g) for k, hw in cfg.cameras.items()}
    obs.update({k: torch.rand(B, T, d, generator=g) for k, d in cfg.lowdim_obs.items()})
    return obs


@pytest.mark.parametrize("backbone", [SMALL_UNET, SMALL_TF], ids=["unet", "transformer"])
def test_predict_action_shapes(backbone):
    policy = make(**backbone).eval()
    cfg = policy.config
    out = policy.predict_action(obs_for(cfg, B=3), generator=torch.Generator().manual_seed(0))
    assert out["action_pred"].shape == (3, 16, 2)
    assert out["action"].shape == (3, 8, 2)
    assert torch.equal(out["action"], out["action_pred"][:, 1:9])  # starts at step To-1
    # clip_sample keeps the normalised sample in [-1, 1]: actions stay in the data's range
    assert out["action_pred"].min() >= -2 - 1e-4 and out["action_pred"].max() <= 5 + 1e-4
    loss = policy.train().compute_loss({"obs": obs_for(cfg, B=3),
                                        "action": torch.randn(3, 16, 2)})
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert policy.obs_encoder.cams["cam"].proj.weight.grad is not None  # trained end to end


def test_encoder_runs_once_per_inference():
    policy = make(num_inference_steps=6).eval()
    calls = {"enc": 0, "net": 0}
    policy.obs_encoder.register_forward_hook(lambda *a: calls.__setitem__("enc", calls["enc"] + 1))
    policy.noise_net.register_forward_hook(lambda *a: calls.__setitem__("net", calls["net"] + 1))
    policy.predict_action(obs_for(policy.config))
    assert calls == {"enc": 1, "net": 6}


def test_several_samples_per_observation_share_one_encoding():
    policy = make(num_inference_steps=3).eval()
    calls = {"enc": 0, "net": 0}
    policy.obs_encoder.register_forward_hook(lambda *a: calls.__setitem__("enc", calls["enc"] + 1))
    policy.noise_net.register_forward_hook(lambda *a: calls.__setitem__("net", calls["net"] + 1))
    obs = obs_for(policy.config, B=2)
    out = policy.predict_action(obs, generator=torch.Generator().manual_seed(0), num_samples=4)["action_pred"]
    assert out.shape == (8, 16, 2) and calls == {"enc": 1, "net": 3}     # one batch of 8
    assert torch.all((out[1:] - out[:-1]).abs().amax(dim=(1, 2)) > 1e-4)   # independent noise
    one = policy.predict_action(obs, generator=torch.Generator().manual_seed(0), num_samples=1)["action_pred"]
    torch.testing.assert_close(one, policy.predict_action(obs, generator=torch.Generator().manual_seed(0))["action_pred"])
    with pytest.raises(ValueError, match="num_samples"):
        policy.predict_action(obs, num_samples=0)


def test_fixed_generator_is_deterministic_and_uses_latest_obs():
    policy = make().eval()
    obs = obs_for(policy.config)
    a = policy.predict_action(obs, generator=torch.Generator().manual_seed(3))["action_pred"]
    b = policy.predict_action(obs, generator=torch.Generator().manual_seed(3))["action_pred"]
    assert torch.equal(a, b)
    longer = obs_for(policy.config, T=4)
    for k in longer:
        longer[k][:, -2:] = obs[k]
    c = policy.predict_action(longer, generator=torch.Generator().manual_seed(3))["action_pred"]
    assert torch.allclose(a, c, atol=1e-6)


def test_lowdim_only_policy():
    policy = make(cameras=False).eval()
    assert policy.obs_encoder.feature_dim == 3
    out = policy.predict_action({"pose": torch.zeros(1, 2, 3)})
    assert out["action"].shape == (1, 8, 2)
    assert policy.device == torch.device("cpu")


def test_clear_input_errors():
    policy = make().eval()
    obs = obs_for(policy.config)
    with pytest.raises(KeyError, match="pose"):
        policy.predict_action({"cam": obs["cam"]})
    with pytest.raises(ValueError, match="'cam' must be"):
        policy.predict_action({**obs, "cam": obs["cam"][..., :40]})
    with pytest.raises(ValueError, match="obs_horizon"):
        policy.predict_action({k: v[:, :1] for k, v in obs.items()})
    with pytest.raises(ValueError, match="batch\\['action'\\]"):
        policy.compute_loss({"obs": obs, "action": torch.zeros(2, 8, 2)})
    fresh = DiffusionPolicy(policy.config)
    with pytest.raises(RuntimeError, match="set_normalizer"):
        fresh.predict_action(obs)


@pytest.mark.parametrize("backbone", [SMALL_UNET, SMALL_TF], ids=["unet", "transformer"])
def test_loss_decreases_when_overfitting(backbone):
    torch.manual_seed(0)
    policy = make(cameras=False, **backbone)
    batch = {"obs": {"pose": torch.rand(8, 2, 3)},
             "action": torch.rand(8, 16, 2) * 7 - 2}

    def eval_loss():
        # Same noise and timesteps before and after: compare like with like.
        torch.manual_seed(123)
        with torch.no_grad():
            return float(np.mean([policy.compute_loss(batch).item() for _ in range(8)]))

    policy.eval()
    before = eval_loss()
    policy.train()
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    for _ in range(50):
        loss = policy.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    policy.eval()
    after = eval_loss()
    assert after < 0.6 * before, (before, after)
