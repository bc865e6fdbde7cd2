"""``inference = "int8"``: a copy of the model whose Linear layers use dynamic int8 quantization
with per-channel weight scales (CPU only)."""

import warnings
from typing import Any

import torch


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` (in eval mode) with its ``int8_layers`` dynamically quantized."""
    with warnings.catch_warnings():
        # torch.ao's dynamic quantization is deprecated in favour of torchao, but still the
        # fastest int8 path on CPU in the pinned torch.
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(
            model,
            dict.fromkeys(int8_layers(model), torch.ao.quantization.per_channel_dynamic_qconfig),
            mapping={torch.nn.Linear: Int8Linear},
        )


def int8_layers(model: torch.nn.Module) -> list[str]:
    """The Linear layers that int8 quantizes: all of them where activations get 8 bits
    (``full_range_int8``); elsewhere not the feed-forward output projections (wider input than
    output), whose GELU inputs' outliers 7 bits quantize badly.

    MiniLM, CoNLL-2003 NER F1 / EWT XPOS / LAS against fp32's 92.44 / 95.46 / 85.07
    (benchmarks/speed/inference_options.py): every Linear, 8 bits: 92.23 / 95.43 / 84.81;
    7 bits: 91.95 / 95.33 / 84.36; 7 bits, feed-forward outputs in fp32: 92.40 / 95.35 / 84.72.
    """
    every = full_range_int8()
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and (every or module.in_features <= module.out_features)
    ]


def full_range_int8() -> bool:
    """Whether int8 activations may use all 8 bits: fbgemm's AVX512-VNNI kernels sum u8 x s8
    products in int32; its AVX2 kernels pair them in int16, which 8-bit activations can overflow
    (hence torch's 7-bit default)."""
    return torch.backends.quantized.engine in ("x86", "fbgemm") and bool(
        torch.cpu.get_capabilities().get("avx512_vnni", False)
    )


class Int8Linear(torch.ao.nn.quantized.dynamic.Linear):
    """torch's dynamic int8 Linear, with 8-bit rather than 7-bit activations where the CPU
    allows it (``full_range_int8``): on MiniLM that took the mean cosine between int8 and fp32
    hidden states from 0.960 to 0.989 with every Linear in int8."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.full_range = full_range_int8()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.full_range or self._packed_params.dtype != torch.qint8:
            return super().forward(x)
        packed = self._packed_params._packed_params
        return torch.ops.quantized.linear_dynamic(x, packed, reduce_range=False).to(x.dtype)
