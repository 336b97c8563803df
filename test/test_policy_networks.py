import pytest
import torch
from torch import nn

from dp_ros.policy.transformer import TransformerForDiffusion
from dp_ros.policy.unet import ConditionalResidualBlock1D, ConditionalUnet1D


def test_unet_shapes():
    for dims in ([16], [16, 32], [16, 32, 64]):
        net = ConditionalUnet1D(input_dim=3, global_cond_dim=10, diffusion_step_embed_dim=16,
                                down_dims=dims, kernel_size=3, n_groups=8)
        x = torch.randn(4, 16, 3)
        out = net(x, torch.randint(0, 100, (4,)), torch.randn(4, 10))
        assert out.shape == x.shape
        assert net(x, 5, torch.randn(4, 10)).shape == x.shape  # scalar timestep broadcasts


def test_unet_film_in_every_residual_block():
    net = ConditionalUnet1D(input_dim=2, global_cond_dim=6, diffusion_step_embed_dim=16,
                            down_dims=[16, 32], kernel_size=3, n_groups=8)
    blocks = [m for m in net.modules() if isinstance(m, ConditionalResidualBlock1D)]
    assert len(blocks) == 2 * 2 + 2 + 2 * 1  # down, mid, up
    for b in blocks:
        # scale and bias per output channel from the condition (step embedding + obs)
        assert b.film[-1].in_features == 16 + 6
        assert b.film[-1].out_features == 2 * b.out_ch
    x, t = torch.randn(2, 16, 2), torch.tensor([3, 3])
    c = torch.randn(2, 6)
    assert not torch.allclose(net(x, t, c), net(x, t, c + 1.0))
    assert not torch.allclose(net(x, t, c), net(x, t + 50, c))


def test_transformer_shapes_and_causality():
    torch.manual_seed(0)
    net = TransformerForDiffusion(input_dim=2, output_dim=2, horizon=16, n_obs_steps=2,
                                  cond_dim=5, n_layer=2, n_head=2, n_emb=16).eval()
    x, cond = torch.randn(3, 16, 2), torch.randn(3, 2, 5)
    out = net(x, torch.tensor([1, 2, 3]), cond)
    assert out.shape == (3, 16, 2)
    # Changing action 10 must not change predictions for actions 0..9 (causal self-attention).
    x2 = x.clone()
    x2[:, 10] += 1.0
    out2 = net(x2, torch.tensor([1, 2, 3]), cond)
    assert torch.allclose(out[:, :10], out2[:, :10], atol=1e-5)
    assert not torch.allclose(out[:, 10:], out2[:, 10:])
    # Action 0 cannot see observation step 1; later actions do.
    cond2 = cond.clone()
    cond2[:, 1] += 1.0
    out3 = net(x, torch.tensor([1, 2, 3]), cond2)
    assert torch.allclose(out[:, 0], out3[:, 0], atol=1e-5)
    assert not torch.allclose(out[:, 1:], out3[:, 1:])


@pytest.mark.parametrize("cin,cout,k,stride,pad,length", [
    (3, 8, 5, 1, 2, 16),      # the U-Net's blocks: 'same' padding
    (64, 64, 3, 2, 1, 16),    # its downsampling
    (64, 64, 3, 2, 1, 15),    # an odd length
    (16, 8, 1, 1, 0, 4),      # the 1x1 residual and final layers
    (7, 9, 4, 3, 0, 11),      # no padding, a stride that does not divide the length
])
def test_unet_conv1d_batch_one_path_is_nn_conv1d(cin, cout, k, stride, pad, length):
    from dp_ros.policy.unet import Conv1d
    ours, ref = Conv1d(cin, cout, k, stride=stride, padding=pad), nn.Conv1d(cin, cout, k, stride=stride, padding=pad)
    ref.load_state_dict(ours.state_dict())                       # same parameters, same names
    for batch in (1, 3):                                         # the fast path, and PyTorch's
        x = torch.randn(batch, cin, length, requires_grad=True)
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-6)
    x = torch.randn(1, cin, length, requires_grad=True)          # and it trains like one
    ours(x).square().sum().backward()
    g_ours = ours.weight.grad.clone()
    ref(x).square().sum().backward()
    torch.testing.assert_close(g_ours, ref.weight.grad, rtol=1e-4, atol=1e-5)
