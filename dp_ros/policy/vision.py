"""Observation encoder: ResNet-18 per camera (or shared), GroupNorm instead of BatchNorm,
spatial-softmax or average pooling, plus the low-dim observations concatenated.

GroupNorm because BatchNorm's running statistics do not survive EMA weight averaging, and because
trained from scratch (weights=None; no downloads) there are no ImageNet statistics to keep."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from .config import PolicyConfig

GN_FEATURES_PER_GROUP = 16


def replace_batchnorm_with_groupnorm(module: nn.Module,
                                     features_per_group: int = GN_FEATURES_PER_GROUP) -> nn.Module:
    """Replace every BatchNorm (any dimensionality) in place; returns module for chaining."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            c = child.num_features
            setattr(module, name, nn.GroupNorm(max(c // features_per_group, 1), c))
        else:
            replace_batchnorm_with_groupnorm(child, features_per_group)
    return module


RESNET18_STAGE_CHANNELS = {3: 256, 4: 512}


def resnet18_trunk(stages: int = 4) -> nn.Sequential:
    """ResNet-18 without avgpool and fc, keeping the first `stages` residual stages:
    (N, 3, H, W) -> (N, 512, H/32, W/32) for 4, (N, 256, H/16, W/16) for 3."""
    net = torchvision.models.resnet18(weights=None)
    replace_batchnorm_with_groupnorm(net)
    layers = [net.layer1, net.layer2, net.layer3, net.layer4][:stages]
    return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, *layers)


class SpatialSoftmax(nn.Module):
    """1x1 conv to K keypoint maps, softmax over H*W per map, expected (x, y) in [-1, 1]:
    (N, C, H, W) -> (N, 2K). Keeps *where* things are, which average pooling throws away."""

    def __init__(self, in_channels: int, num_keypoints: int):
        super().__init__()
        self.keypoints = nn.Conv2d(in_channels, num_keypoints, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        k = self.keypoints(x).flatten(2).softmax(dim=-1)  # N, K, H*W
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=k.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=k.dtype)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        pos = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=-1)  # H*W, 2
        return (k @ pos).reshape(n, -1)  # N, K*2


class ImageEncoder(nn.Module):
    """(N, 3, h, w) in [0, 1] -> (N, feature_dim)."""

    def __init__(self, pooling: str, num_keypoints: int, feature_dim: int, stages: int = 4):
        super().__init__()
        self.trunk = resnet18_trunk(stages)
        channels = RESNET18_STAGE_CHANNELS[stages]
        if pooling == "spatial_softmax":
            self.pool = SpatialSoftmax(channels, num_keypoints)
            pooled = 2 * num_keypoints
        else:
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            pooled = channels
        self.proj = nn.Linear(pooled, feature_dim)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        # [0, 1] -> [-1, 1]: zero-centred input without borrowing ImageNet statistics.
        return self.proj(self.pool(self.trunk(img * 2.0 - 1.0)))


def crop_images(img: torch.Tensor, size, random: bool, generator=None) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, h, w). Random: an independent window per image; else centred."""
    n, c, H, W = img.shape
    h, w = size
    if (h, w) == (H, W):
        return img
    if not random:
        top, left = (H - h) // 2, (W - w) // 2
        return img[:, :, top:top + h, left:left + w]
    dev = generator.device if generator is not None else img.device
    top = torch.randint(0, H - h + 1, (n,), generator=generator, device=dev).to(img.device)
    left = torch.randint(0, W - w + 1, (n,), generator=generator, device=dev).to(img.device)
    rows = (top[:, None] + torch.arange(h, device=img.device))[:, None, :, None]
    cols = (left[:, None] + torch.arange(w, device=img.device))[:, None, None, :]
    batch = torch.arange(n, device=img.device)[:, None, None, None]
    chan = torch.arange(c, device=img.device)[None, :, None, None]
    return img[batch, chan, rows, cols]


class ObsEncoder(nn.Module):
    """obs dict (already normalised low-dim) -> per-step features (B, To, feature_dim).

    Cameras: (B, To, 3, H, W) float in [0, 1] (uint8 is accepted and scaled); low-dim: (B, To, D).
    Features per step are [camera features in config order, low-dim in config order]."""

    def __init__(self, config: PolicyConfig):
        super().__init__()
        self.config = config
        self.camera_names = list(config.cameras)
        self.lowdim_names = list(config.lowdim_obs)
        self.crop = config.crop
        if self.camera_names and config.shared_encoder:
            self.shared = ImageEncoder(config.pooling, config.num_keypoints,
                                       config.image_feature_dim, config.resnet_stages)
            self.cams = None
        else:
            self.shared = None
            self.cams = nn.ModuleDict({
                k: ImageEncoder(config.pooling, config.num_keypoints, config.image_feature_dim,
                                config.resnet_stages)
                for k in self.camera_names})
        self.feature_dim = (len(self.camera_names) * config.image_feature_dim
                            + sum(config.lowdim_obs.values()))

    def _check(self, obs) -> tuple[int, int]:
        B = T = None
        for k in self.camera_names + self.lowdim_names:
            if k not in obs:
                raise KeyError(f"observation {k!r} is missing (got {sorted(obs)})")
            x = obs[k]
            if k in self.config.cameras:
                H, W = self.config.cameras[k]
                ok = x.ndim == 5 and tuple(x.shape[2:]) == (3, H, W)
                want = f"(B, To, 3, {H}, {W})"
            else:
                ok = x.ndim == 3 and x.shape[2] == self.config.lowdim_obs[k]
                want = f"(B, To, {self.config.lowdim_obs[k]})"
            if not ok:
                raise ValueError(f"observation {k!r} must be {want}, got {tuple(x.shape)}")
            if B is None:
                B, T = x.shape[0], x.shape[1]
            elif (x.shape[0], x.shape[1]) != (B, T):
                raise ValueError(f"observation {k!r} has batch/time {tuple(x.shape[:2])}, "
                                 f"others have {(B, T)}")
        return B, T

    def forward(self, obs: dict[str, torch.Tensor], generator=None) -> torch.Tensor:
        B, T = self._check(obs)
        feats = []
        if self.camera_names:
            imgs = []
            for k in self.camera_names:
                x = obs[k]
                x = x.float() / 255.0 if x.dtype == torch.uint8 else x
                x = x.reshape(B * T, *x.shape[2:])
                if self.crop is not None:
                    x = crop_images(x, self.crop, random=self.training, generator=generator)
                imgs.append(x)
            if self.shared is not None:
                # One pass for all cameras when they have the same shape (they do after a crop).
                if all(i.shape == imgs[0].shape for i in imgs):
                    out = self.shared(torch.cat(imgs, dim=0)).split(B * T, dim=0)
                else:
                    out = [self.shared(i) for i in imgs]
            else:
                out = [self.cams[k](i) for k, i in zip(self.camera_names, imgs)]
            feats += [f.reshape(B, T, -1) for f in out]
        for k in self.lowdim_names:
            feats.append(obs[k].to(torch.float32))
        return torch.cat(feats, dim=-1)
