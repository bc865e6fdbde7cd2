"""Backprop through windows: gradients split over overlapping windows like the outputs."""

from collections.abc import Callable

import numpy as np
import pytest
import spacy
import torch

from spacy_trf import DocTransformerGradient
from spacy_trf.encoder import get_shim

TEXTS = [
    "Gradients must reach every window of a long document. " * 4,
    "A short one.",
    "Overlapping windows share pieces, and each shared piece gets its gradient split. " * 2,
]


def reference_grads(
    hf: torch.nn.Module, docs: list, d_last: list, d_special: list, d_layer: list, layer: int
) -> dict[str, torch.Tensor]:
    """Param grads of sum(out * d) computed with plain autograd, window by window."""
    hf.zero_grad()
    loss = torch.zeros(())
    for doc, g_last, g_special, g_layer in zip(docs, d_last, d_special, d_layer, strict=True):
        out = doc._.trf
        ids = torch.from_numpy(out.piece_ids)
        n = len(ids)
        total = torch.zeros((n, out.width))
        total_layer = torch.zeros((n, out.width))
        count = torch.zeros(n)
        specials = []
        for a, b in out.window_ranges.tolist():
            window = torch.cat([torch.tensor([0]), ids[a:b], torch.tensor([2])])[None]
            res = hf(window, output_hidden_states=True)
            total[a:b] += res.last_hidden_state[0, 1:-1]
            total_layer[a:b] += res.hidden_states[layer][0, 1:-1]
            count[a:b] += 1
            specials.extend([res.last_hidden_state[0, 0], res.last_hidden_state[0, -1]])
        loss = loss + (total / count[:, None] * torch.from_numpy(g_last)).sum()
        loss = loss + (total_layer / count[:, None] * torch.from_numpy(g_layer)).sum()
        if specials:
            loss = loss + (torch.stack(specials) * torch.from_numpy(g_special)).sum()
    loss.backward()
    return {k: p.grad.clone() for k, p in hf.named_parameters() if p.grad is not None}


def test_backprop_matches_autograd_over_windows(nlp_factory: Callable[..., spacy.Language]) -> None:
    nlp = nlp_factory("roberta", model={"window": 16, "stride": 10, "output_hidden_states": True})
    model = nlp.get_pipe("trf").model
    hf = get_shim(model).hf_model
    for module in hf.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    docs = [nlp.make_doc(t) for t in TEXTS]
    outputs, backprop = model.begin_update(docs)
    for doc, out in zip(docs, outputs, strict=True):
        doc._.trf = out
    rng = np.random.default_rng(0)
    d_last = [rng.normal(size=o.last_hidden_state.shape).astype("f") for o in outputs]
    d_special = [rng.normal(size=o.special_hidden_state.shape).astype("f") for o in outputs]
    layer = 1
    d_layer = [rng.normal(size=o.last_hidden_state.shape).astype("f") for o in outputs]
    n_streams = len(outputs[0].hidden_states)
    grads = [
        DocTransformerGradient(
            d_last_hidden_state=g,
            d_special_hidden_state=s,
            d_hidden_states=[gl if i == layer else None for i in range(n_streams)],
        )
        for g, s, gl in zip(d_last, d_special, d_layer, strict=True)
    ]
    hf.zero_grad()
    assert backprop(grads) == []
    ours = {k: p.grad.clone() for k, p in hf.named_parameters() if p.grad is not None}
    expected = reference_grads(hf, docs, d_last, d_special, d_layer, layer)
    assert ours.keys() == expected.keys() and len(ours) > 10
    for key, grad in expected.items():
        torch.testing.assert_close(ours[key], grad, atol=1e-4, rtol=1e-3, msg=key)
    assert any(len(o.window_ranges) > 2 for o in outputs)


def test_no_gradient_means_no_backward(nlp_factory: Callable[..., spacy.Language]) -> None:
    nlp = nlp_factory("roberta", model={"window": 16, "stride": 10})
    model = nlp.get_pipe("trf").model
    hf = get_shim(model).hf_model
    hf.zero_grad()
    _, backprop = model.begin_update([nlp.make_doc(t) for t in TEXTS])
    backprop([DocTransformerGradient() for _ in TEXTS])
    assert all(p.grad is None or not p.grad.any() for p in hf.parameters())


def test_fp16_scaler_unscales_accumulated_gradients_once(
    nlp_factory: Callable[..., spacy.Language], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a gradient scaler (fp16 on GPU), two accumulated backward passes step the weights
    by their summed true gradient: scaled in backprop, unscaled once in finish_update."""
    from thinc.api import SGD
    from thinc.shims.pytorch_grad_scaler import PyTorchGradScaler

    # Thinc scales CUDA tensors only; the same multiplication on CPU tensors stands in for it.
    monkeypatch.setattr(
        PyTorchGradScaler,
        "_scale_tensor",
        lambda self, t, per_device, inplace: t.mul_(self._scale) if inplace else t * self._scale,
    )
    nlp = nlp_factory("roberta", model={"window": 16, "stride": 10})
    model = nlp.get_pipe("trf").model
    shim = get_shim(model)
    shim.enable_loss_scaling(init_scale=1024.0)
    docs = [nlp.make_doc(t) for t in TEXTS]
    for _ in range(2):
        outputs, backprop = model.begin_update(docs)
        backprop(
            [
                DocTransformerGradient(d_last_hidden_state=o.last_hidden_state * 0 + 1)
                for o in outputs
            ]
        )
    params = dict(shim.hf_model.named_parameters())
    true_grads = {k: p.grad / 1024.0 for k, p in params.items() if p.grad is not None}
    before = {k: params[k].detach().clone() for k in true_grads}
    shim.finish_update(SGD(1.0, L2=0.0, grad_clip=0.0))
    for k, grad in true_grads.items():
        torch.testing.assert_close(before[k] - params[k].detach(), grad, atol=1e-6, rtol=1e-4)


def test_an_overflowing_fp16_step_is_skipped_and_keeps_the_weights_version(
    nlp_factory: Callable[..., spacy.Language],
) -> None:
    """fp16 loss scaling: a step whose gradients overflowed changes no weight, and converted
    models (int8, compile, onnx) are not rebuilt for it."""
    from thinc.api import SGD

    nlp = nlp_factory("roberta", model={"window": 16, "stride": 10})  # fresh: weights change
    shim = get_shim(nlp.get_pipe("trf").model)
    shim.enable_loss_scaling()
    params = dict(shim.hf_model.named_parameters())
    before = {k: p.detach().clone() for k, p in params.items()}
    version = shim.weights_version
    for p in params.values():
        p.grad = torch.full_like(p, float("inf"))
    shim.finish_update(SGD(1.0))
    assert shim.weights_version == version
    assert all(torch.equal(before[k], p.detach()) for k, p in params.items())
    assert all(p.grad is None for p in params.values())
    for p in params.values():
        p.grad = torch.ones_like(p)
    shim.finish_update(SGD(1.0))
    assert shim.weights_version == version + 1
