"""PolicyConfig: every number that fixes the network's architecture, the diffusion schedule and the
horizons. It is stored verbatim in each checkpoint, so a deployed policy is rebuilt exactly as it
was trained; anything not in here must not change the weights' shapes."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

POOLINGS = ("spatial_softmax", "avg")
BACKBONES = ("unet", "transformer")
BETA_SCHEDULES = ("squaredcos_cap_v2", "linear", "scaled_linear")
PREDICTION_TYPES = ("epsilon", "sample")
RESNET_STAGES = (3, 4)

# Keys added after checkpoints were first shipped, with the value that rebuilds those older
# checkpoints exactly. A checkpoint lacking one of these still loads; any other gap is an error.
ADDED_KEYS_OLD_VALUES: dict[str, Any] = {"resnet_stages": 4, "train_prefix_steps": 0}

# Observation names become nn.Module names and safetensors keys: keep them plain identifiers.
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class PolicyConfig:
    action_dim: int = 2
    obs_horizon: int = 2  # To
    pred_horizon: int = 16  # Tp
    action_horizon: int = 8  # Ta
    lowdim_obs: dict[str, int] = field(default_factory=dict)  # name -> dim
    cameras: dict[str, list[int]] = field(default_factory=dict)  # name -> [H, W] of the input
    crop: list[int] | None = None  # [h, w]; random in train(), centre in eval()
    # vision encoder
    shared_encoder: bool = False
    pooling: str = "spatial_softmax"
    num_keypoints: int = 32
    image_feature_dim: int = 64
    # ResNet-18 residual stages kept: 4 is the full trunk (512 ch, /32); 3 stops after layer3
    # (256 ch, /16): a quarter of the parameters, ~20 % fewer FLOPs, and a 6x6 rather than 3x3
    # map at 84x84 for the spatial softmax to place keypoints on.
    resnet_stages: int = 4
    # noise network
    backbone: str = "unet"
    down_dims: list[int] = field(default_factory=lambda: [256, 512, 1024])
    kernel_size: int = 5
    n_groups: int = 8
    diffusion_step_embed_dim: int = 128
    n_layer: int = 8
    n_head: int = 4
    n_emb: int = 256
    p_drop_emb: float = 0.0
    p_drop_attn: float = 0.3
    causal_attn: bool = True
    n_cond_layers: int = 0
    # diffusion
    num_train_timesteps: int = 100
    num_inference_steps: int = 10
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "epsilon"
    clip_sample: bool = True
    # Real-time chunking trained in: each training chunk gets a clean prefix of d ~ U{0..this}
    # steps, marked in an extra input channel and excluded from the loss, so the network learns to
    # continue a given prefix (stitch: inpaint then feeds the committed path clean). 0 = off.
    train_prefix_steps: int = 0
    # deployment
    control_frequency_hz: float = 10.0

    def __post_init__(self):
        # JSON/YAML give lists and plain dicts; normalise so equality and to_dict are stable.
        self.lowdim_obs = {str(k): int(v) for k, v in dict(self.lowdim_obs).items()}
        self.cameras = {str(k): [int(x) for x in v] for k, v in dict(self.cameras).items()}
        self.crop = None if self.crop is None else [int(x) for x in self.crop]
        self.down_dims = [int(x) for x in self.down_dims]
        self.validate()

    # --- derived values -------------------------------------------------------------------
    @property
    def dt(self) -> float:
        """Control step in seconds: action k of a chunk is meant for t_obs_last + (k-(To-1))*dt."""
        return 1.0 / self.control_frequency_hz

    @property
    def obs_keys(self) -> list[str]:
        return list(self.cameras) + list(self.lowdim_obs)

    @property
    def image_shape(self) -> dict[str, list[int]]:
        """[H, W] each camera has after cropping, i.e. what the ResNet sees."""
        return {k: list(self.crop) if self.crop else list(v) for k, v in self.cameras.items()}

    # --- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any], require_all: bool = False) -> "PolicyConfig":
        """Missing keys take their defaults unless require_all (checkpoints use that, so a changed
        default can never silently change a trained network)."""
        if not isinstance(data, dict):
            raise ValueError(f"PolicyConfig.from_dict expects a dict, got {type(data).__name__}")
        names = cls.field_names()
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(
                f"PolicyConfig: unknown keys {unknown}; valid keys are {sorted(names)}")
        if require_all:
            missing = cls.missing_keys(data)
            if missing:
                raise ValueError(f"PolicyConfig: missing keys {missing}")
            data = {**{k: v for k, v in ADDED_KEYS_OLD_VALUES.items() if k not in data}, **data}
        return cls(**data)

    @classmethod
    def missing_keys(cls, data: dict[str, Any]) -> list[str]:
        """Fields a stored config must hold: all but those added later with an old value."""
        return [n for n in cls.field_names() if n not in data and n not in ADDED_KEYS_OLD_VALUES]

    # --- validation -----------------------------------------------------------------------
    def validate(self) -> None:
        errors = []

        def need(cond, msg):
            if not cond:
                errors.append(msg)

        To, Tp, Ta = self.obs_horizon, self.pred_horizon, self.action_horizon
        need(self.action_dim >= 1, f"action_dim must be >= 1, got {self.action_dim}")
        need(To >= 1, f"obs_horizon must be >= 1, got {To}")
        need(Ta >= 1, f"action_horizon must be >= 1, got {Ta}")
        need(Tp >= To, f"pred_horizon ({Tp}) must be >= obs_horizon ({To})")
        # The executed actions start at the latest observation step (index To-1) and must fit.
        need(Ta <= Tp - To + 1,
             f"action_horizon ({Ta}) must be <= pred_horizon - obs_horizon + 1 ({Tp - To + 1})")
        need(self.cameras or self.lowdim_obs, "need at least one camera or low-dim observation")
        need(0 <= self.train_prefix_steps < Tp,
             f"train_prefix_steps must be in [0, pred_horizon) = [0, {Tp}), got {self.train_prefix_steps}")
        need(not self.train_prefix_steps or self.backbone == "unet", "train_prefix_steps needs backbone unet")
        names = list(self.cameras) + list(self.lowdim_obs)
        for n in names:
            need(_NAME_RE.match(n) is not None,
                 f"observation name {n!r} must be a plain identifier (letters, digits, _)")
        need(len(set(names)) == len(names),
             f"a name is both a camera and a low-dim observation: {names}")
        need("action" not in names, "'action' is reserved and cannot be an observation name")
        for n, d in self.lowdim_obs.items():
            need(d >= 1, f"lowdim_obs[{n!r}] must be >= 1, got {d}")
        for n, hw in self.cameras.items():
            need(len(hw) == 2 and min(hw) >= 1, f"cameras[{n!r}] must be [H, W], got {hw}")
        if self.crop is not None:
            need(len(self.crop) == 2 and min(self.crop) >= 1,
                 f"crop must be [h, w] or None, got {self.crop}")
            for n, hw in self.cameras.items():
                if len(hw) == 2 and len(self.crop) == 2:
                    need(self.crop[0] <= hw[0] and self.crop[1] <= hw[1],
                         f"crop {self.crop} is larger than camera {n!r} image {hw}")
        need(self.pooling in POOLINGS, f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        need(self.resnet_stages in RESNET_STAGES,
             f"resnet_stages must be one of {RESNET_STAGES}, got {self.resnet_stages}")
        if self.pooling == "spatial_softmax" and self.resnet_stages in RESNET_STAGES:
            # The trunk downsamples by 2^(stages+1): a 1-cell feature map has no position to report.
            stride = 2 ** (self.resnet_stages + 1)
            for n, hw in self.image_shape.items():
                need(len(hw) != 2 or min(hw) > stride,
                     f"camera {n!r}: image {hw} (after crop) gives a 1-cell ResNet feature map; "
                     f"spatial_softmax with resnet_stages={self.resnet_stages} needs both sides "
                     f"> {stride} pixels")
        need(self.num_keypoints >= 1, "num_keypoints must be >= 1")
        need(self.image_feature_dim >= 1, "image_feature_dim must be >= 1")
        need(self.backbone in BACKBONES,
             f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.backbone == "unet":
            need(len(self.down_dims) >= 1, "down_dims must not be empty")
            for d in self.down_dims:
                need(d >= 1 and d % self.n_groups == 0,
                     f"each of down_dims {self.down_dims} must be a multiple of n_groups "
                     f"({self.n_groups})")
            need(self.kernel_size >= 1 and self.kernel_size % 2 == 1,
                 f"kernel_size must be odd so the sequence length is kept, got {self.kernel_size}")
            # Each level but the deepest halves the time axis; the skips must line up again.
            factor = 2 ** (len(self.down_dims) - 1)
            need(Tp % factor == 0,
                 f"pred_horizon ({Tp}) must be divisible by {factor} "
                 f"(2^(len(down_dims)-1)) for the U-Net")
            need(self.diffusion_step_embed_dim >= 2 and self.diffusion_step_embed_dim % 2 == 0,
                 "diffusion_step_embed_dim must be even")
        else:
            need(self.n_emb >= 2 and self.n_emb % 2 == 0, "n_emb must be even")
            need(self.n_head >= 1 and self.n_emb % self.n_head == 0,
                 f"n_emb ({self.n_emb}) must be divisible by n_head ({self.n_head})")
            need(self.n_layer >= 1, "n_layer must be >= 1")
            need(self.n_cond_layers >= 0, "n_cond_layers must be >= 0")
            need(0.0 <= self.p_drop_emb < 1.0 and 0.0 <= self.p_drop_attn < 1.0,
                 "dropout probabilities must be in [0, 1)")
        need(self.num_train_timesteps >= 1, "num_train_timesteps must be >= 1")
        need(1 <= self.num_inference_steps <= self.num_train_timesteps,
             f"num_inference_steps must be in [1, num_train_timesteps={self.num_train_timesteps}]"
             f", got {self.num_inference_steps}")
        need(self.beta_schedule in BETA_SCHEDULES,
             f"beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        need(self.prediction_type in PREDICTION_TYPES,
             f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        need(math.isfinite(self.control_frequency_hz) and self.control_frequency_hz > 0,
             f"control_frequency_hz must be > 0, got {self.control_frequency_hz}")
        if errors:
            raise ValueError("invalid PolicyConfig: " + "; ".join(errors))
