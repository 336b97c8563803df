"""training.mixed_precision: CPU capability detection from /proc/cpuinfo flags, what `auto`
resolves to on each kind of CPU / GPU, and the trainer running and recording it."""

import pytest
import torch

from dp_ros.policy.checkpoint import read_checkpoint_meta
from dp_ros.train import precision
from dp_ros.train.config import ConfigError
from dp_ros.train.precision import cpu_flags, cpu_model, resolve_precision
from dp_ros.train.trainer import Trainer
from test_train_common import make_store, tiny_config

# Abbreviated flags lines of three CPU kinds.
PLAIN = "fpu sse sse2 avx avx2 fma"                                       # no native bf16
ZEN4 = "fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni"           # AMD EPYC Genoa
SPR = "fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8"      # Sapphire Rapids

CPUINFO = f"""processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: {SPR}

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: {SPR}
"""


def test_cpu_flags_and_model_from_cpuinfo_text():
    flags = cpu_flags(CPUINFO)
    assert {"amx_bf16", "avx512_bf16", "amx_tile"} <= flags and "flags" not in flags
    assert cpu_model(CPUINFO) == "Intel(R) Xeon(R) Platinum 8480+"
    assert cpu_flags("processor : 0\nmodel name : x\n") == set()    # no flags line
    assert cpu_flags("Features\t: fp asimd bf16") == {"fp", "asimd", "bf16"}   # ARM spelling


@pytest.mark.parametrize("flags", [PLAIN, "flags : " + PLAIN, set(PLAIN.split())])
def test_auto_without_amx_is_fp32(flags):
    p = resolve_precision("auto", "cpu", flags=flags)
    assert p.name == "no" and p.dtype is None and not p.channels_last
    assert "without AMX or AVX512-BF16" in p.reason and "no (" in p.describe()


def test_auto_with_amx_is_bf16_channels_last():
    p = resolve_precision("auto", "cpu", flags=SPR)
    assert p.name == "bf16" and p.dtype is torch.bfloat16 and p.channels_last
    assert "AMX" in p.reason
    assert resolve_precision("auto", "cpu", flags=SPR, has_cameras=False).name == "bf16"
    assert resolve_precision("auto", "cpu", flags=CPUINFO).name == "bf16"   # whole file


def test_auto_with_avx512_bf16_without_amx_is_bf16():
    p = resolve_precision("auto", "cpu", flags=ZEN4)
    assert p.name == "bf16" and p.channels_last and "AVX512-BF16, no AMX" in p.reason
    low = resolve_precision("auto", "cpu", flags=ZEN4, has_cameras=False)
    assert low.name == "bf16" and not low.channels_last     # no encoder to lay out


def test_explicit_modes():
    for flags in (PLAIN, ZEN4, SPR):
        assert resolve_precision("no", "cpu", flags=flags).name == "no"
        p = resolve_precision("bf16", "cpu", flags=flags)
        assert p.name == "bf16" and p.reason.startswith("asked for")
        with pytest.raises(ValueError, match="CUDA"):
            resolve_precision("fp16", "cpu", flags=flags)
    assert "emulated" in resolve_precision("bf16", "cpu", flags=PLAIN).reason
    with pytest.raises(ValueError):
        resolve_precision("fp8", "cpu", flags=PLAIN)


def test_cuda_modes_ignore_cpu_flags():
    assert resolve_precision("auto", "cuda", flags=PLAIN, cuda_bf16=True).name == "bf16"
    assert resolve_precision("auto", "cuda", flags=SPR, cuda_bf16=False).name == "fp16"
    assert resolve_precision("fp16", "cuda", cuda_bf16=True).name == "fp16"
    assert resolve_precision("no", "cuda", cuda_bf16=True).name == "no"
    assert not resolve_precision("auto", "cuda", cuda_bf16=True).channels_last


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("precision") / "reach.zarr", n_episodes=4)


AUTO = ["training.device=cpu", "training.mixed_precision=auto"]   # tiny_config pins fp32


def _with_flags(monkeypatch, flags):
    monkeypatch.setattr(precision, "cpu_flags", lambda text=None: set(flags.split()))


def test_trainer_auto_follows_the_cpu_flags(store, tmp_path, monkeypatch, capsys):
    _with_flags(monkeypatch, PLAIN)
    tr = Trainer(tiny_config(store, *AUTO), tmp_path / "plain", progress=False)
    assert tr.amp_dtype is None and tr.precision.name == "no"
    assert "mixed precision: no (CPU without AMX" in capsys.readouterr().err
    tr.close()

    _with_flags(monkeypatch, SPR)
    tr = Trainer(tiny_config(store, *AUTO, "training.max_steps=2",
                             "training.eval_every=2", "training.checkpoint_every=2"),
                 tmp_path / "amx", progress=False)
    assert tr.amp_dtype is torch.bfloat16
    assert "mixed precision: bf16, channels_last encoder (CPU with AMX" in capsys.readouterr().err
    conv = next(m for m in tr.policy.obs_encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    summary = tr.fit()      # bf16 autocast steps, and a checkpoint saved from NHWC weights
    tr.close()
    assert summary["step"] == 2 and summary["loss"] == summary["loss"]     # finite, not NaN
    _, extra = read_checkpoint_meta(tmp_path / "amx" / "checkpoints" / "last")
    assert extra["mixed_precision"] == {"mode": "auto", "ran": "bf16", "channels_last": True,
                                        "reason": "CPU with AMX: native bf16 matmul"}


def test_trainer_refuses_fp16_on_cpu(store, tmp_path):
    with pytest.raises(ConfigError, match="mixed_precision.*CUDA"):
        Trainer(tiny_config(store, "training.device=cpu", "training.mixed_precision=fp16"),
                tmp_path / "r", progress=False)
