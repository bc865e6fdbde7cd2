"""Dropout with a cheaper random mask on CPU, swapped into the HF encoder for training.

PyTorch draws a CPU dropout mask with one generator call per element (``bernoulli_``); in a
MiniLM training step that was 10% of the time (benchmarks/speed, py-spy and torch.profiler). Here
one 32-bit draw gives two 15-bit uniform numbers, each compared with p: the same Bernoulli(1 - p)
mask with p rounded to a multiple of 1/32768, from torch's global generator (so
``torch.manual_seed`` and spaCy's ``fix_random_seed`` still make runs repeatable).
"""

import torch

RESOLUTION = 1 << 15  # 15 uniform bits per element


class CPUDropout(torch.nn.Dropout):
    """``torch.nn.Dropout`` (same ``p`` and ``inplace``, so attention code that reads
    ``self.dropout.p`` keeps working) with the cheaper mask on CPU tensors in training."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if (
            not self.training
            or self.inplace
            or input.device.type != "cpu"
            or not input.is_floating_point()
            or round(self.p * RESOLUTION) in (0, RESOLUTION)  # p within 1/65536 of 0 or 1
        ):
            return super().forward(input)
        return cpu_dropout(input, self.p)


def cpu_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Zero each element of ``x`` with probability ``p`` and scale the rest by 1 / (1 - p),
    p rounded to a multiple of 1/32768."""
    n = x.numel()
    # random_() on int32 fills [0, 2**31): the low and high 16-bit halves both carry 15
    # uniform bits once the top bit of each half is masked off.
    draws = torch.empty((n + 1) // 2, dtype=torch.int32).random_().view(torch.int16)[:n]
    threshold = round(p * RESOLUTION)
    keep = (draws & (RESOLUTION - 1)).view(x.shape) >= threshold
    # One float mask (0 or the scale), so that autograd's backward is a single multiply; the
    # scale uses the rounded p, so the output stays unbiased.
    scale = RESOLUTION / (RESOLUTION - threshold)
    return x * torch.where(keep, scale, 0.0).to(x.dtype)


def use_cpu_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Replace the plain ``torch.nn.Dropout`` modules of ``model`` by ``CPUDropout``, in place.

    Subclasses (a model's own dropout variants) are left alone. Returns the model.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Dropout:
                swapped = CPUDropout(child.p, child.inplace)
                swapped.train(child.training)
                setattr(parent, name, swapped)
    return model
