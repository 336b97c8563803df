"""Which precision a training step runs in (`training.mixed_precision`), and what the CPU can do.

CUDA: `auto` is bf16 where the GPU supports it, else fp16 with a GradScaler.
CPU: bf16 autocast pays only where the CPU multiplies bf16 natively. With Intel AMX
(`amx_bf16` in /proc/cpuinfo) the issue measured 2.4 TFLOP/s bf16 against 0.40 fp32 and a Push-T
image step 0.43 s -> 0.29 s (0.24 s with a channels_last encoder). AVX512-BF16 without AMX (AMD
Zen 4, Intel Cooper Lake) also pays: on an AMD EPYC the Push-T image step ran 1.41 s -> 0.76 s
and a low-dim U-Net step 1.2x faster. Without either, bf16 is emulated: the same image step took
18 s instead of 1.4 s (oneDNN limited to AVX2). So `auto` is bf16 with AMX or AVX512-BF16 and
fp32 otherwise; `bf16` asks for it on any CPU; `no` is fp32. Under bf16 on the CPU the vision
encoder runs channels_last (NHWC): bf16 0.85 -> 0.76 s, while fp32 gained nothing (1.41 vs
1.47 s). Figures: README, "Training speed on the CPU"; `dp-ros bench train` measures a config.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

CPUINFO = "/proc/cpuinfo"
# CPU flags with native bf16 dot products: `auto` chooses bf16 on a CPU that has one.
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class Precision:
    """What ran: name in (no, bf16, fp16), the requested mode, and why (for the log)."""
    name: str
    mode: str
    reason: str
    channels_last: bool = False    # the vision encoder's conv weights in NHWC

    @property
    def dtype(self):
        import torch
        return {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]

    def describe(self) -> str:
        cl = ", channels_last encoder" if self.channels_last else ""
        return f"mixed precision: {self.name}{cl} ({self.reason})"

    def to_dict(self) -> dict:
        return {"mode": self.mode, "ran": self.name, "channels_last": self.channels_last,
                "reason": self.reason}


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags from /proc/cpuinfo text (read it when None); empty where there is
    no /proc/cpuinfo (macOS, Windows), so those keep fp32."""
    if cpuinfo is None:
        try:
            with open(CPUINFO) as f:
                cpuinfo = f.read()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):   # x86, ARM
            return set(value.split())
    return set()


def cpu_model(cpuinfo: str | None = None) -> str:
    if cpuinfo is None:
        try:
            with open(CPUINFO) as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "model name":
            return value.strip()
    return platform.processor() or platform.machine()


def cpu_capabilities(flags: set[str] | None = None) -> dict:
    flags = cpu_flags() if flags is None else set(flags)
    return {"model": cpu_model(), "cores": os.cpu_count(),
            "amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags}


def cpu_has_native_bf16(flags) -> bool:
    return any(f in flags for f in CPU_BF16_FLAGS)


def resolve_precision(mode: str, device_type: str, flags=None, cuda_bf16: bool | None = None,
                      has_cameras: bool = True) -> Precision:
    """mode (auto|no|bf16|fp16) on a device type -> the Precision that runs.
    flags: CPU flags (a set, a 'flags : ...' line / /proc/cpuinfo text, or a bare space-separated
    string; None: this machine's). cuda_bf16: whether the GPU supports bf16 (None: ask torch).
    has_cameras: the policy has an image encoder (channels_last applies to it).
    ValueError for fp16 on a CPU."""
    if mode not in ("auto", "no", "bf16", "fp16"):
        raise ValueError(f"mixed precision {mode!r}: expected auto, no, bf16 or fp16")
    if device_type == "cuda":
        if mode == "no":
            return Precision("no", mode, "asked for fp32")
        if mode != "auto":
            return Precision(mode, mode, "asked for")
        if cuda_bf16 is None:
            import torch
            cuda_bf16 = torch.cuda.is_bf16_supported()
        return (Precision("bf16", mode, "GPU supports bf16") if cuda_bf16 else
                Precision("fp16", mode, "GPU without bf16: fp16 with a GradScaler"))
    if device_type != "cpu":
        if mode in ("bf16", "fp16"):
            raise ValueError(f"mixed precision {mode} is not supported on {device_type}; "
                             f"use auto or no")
        return Precision("no", mode, f"{device_type}: fp32")
    if mode == "fp16":
        raise ValueError("mixed precision fp16 needs CUDA (on a CPU use bf16, auto or no)")
    if isinstance(flags, str):
        flags = cpu_flags(flags if ":" in flags else "flags : " + flags)
    elif flags is None:
        flags = cpu_flags()
    if mode == "no":
        return Precision("no", mode, "asked for fp32")
    amx = "amx_bf16" in flags
    native = cpu_has_native_bf16(flags)
    if mode == "bf16":
        why = ("asked for; CPU with AMX" if amx else
               "asked for; CPU with AVX512-BF16, no AMX" if native else
               "asked for; CPU without native bf16: emulated, expect it much slower")
        return Precision("bf16", mode, why, channels_last=has_cameras)
    if amx:
        return Precision("bf16", mode, "CPU with AMX: native bf16 matmul",
                         channels_last=has_cameras)
    if native:
        return Precision("bf16", mode, "CPU with AVX512-BF16, no AMX: native bf16 dot "
                                       "products, measured faster", channels_last=has_cameras)
    return Precision("no", mode, "CPU without AMX or AVX512-BF16: bf16 would be slower")
