"""``inference = "bf16"``: PyTorch under bf16 autocast."""

import warnings
from contextlib import AbstractContextManager

import torch


def native_bf16() -> bool:
    """Whether the CPU computes in bf16 natively (AVX512-BF16 or AMX)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def bf16_autocast(device: torch.device) -> AbstractContextManager:
    """bf16 autocast on ``device``; raises where the CPU cannot run bf16, warns where it
    only emulates it."""
    if device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise ValueError(
            'inference = "bf16" needs a CPU with bf16 support (AVX-512 or AMX); this one '
            'has none. Use "int8" or "onnx" for faster CPU inference.'
        )
    if device.type == "cpu" and not native_bf16():
        warnings.warn(
            'inference = "bf16": this CPU has no native bf16 instructions (AVX512-BF16 or '
            "AMX), so bf16 is emulated and may be slower than fp32; int8 is faster here.",
            stacklevel=3,
        )
    return torch.autocast(device.type, dtype=torch.bfloat16)
