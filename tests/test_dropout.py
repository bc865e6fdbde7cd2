"""CPUDropout: the same Bernoulli dropout as torch.nn.Dropout, with a cheaper mask on CPU."""

from collections.abc import Callable

import pytest
import spacy
import torch

from spacy_trf.encoder import get_shim
from spacy_trf.encoder.dropout import RESOLUTION, CPUDropout, cpu_dropout, use_cpu_dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keeps_each_element_with_probability_one_minus_p(p: float) -> None:
    torch.manual_seed(0)
    x = torch.rand(1_000_001) + 1.0  # odd size; no zeros, so zeros in the output are drops
    y = cpu_dropout(x, p)
    kept = y != 0
    # Both 16-bit halves of each 32-bit draw (even and odd positions) are uniform.
    for lane in (kept[0::2], kept[1::2]):
        assert abs(lane.float().mean().item() - (1 - p)) < 0.003
    rounded = round(p * RESOLUTION) / RESOLUTION  # p is used to 1/32768: 0.1 is 3277/32768
    assert torch.allclose(y[kept], x[kept] / (1 - rounded))
    # The two halves of one draw are independent: both kept with probability (1 - p)^2.
    both = (kept[0:-1:2] & kept[1::2]).float().mean().item()
    assert abs(both - (1 - p) ** 2) < 0.003


def test_gradient_is_the_mask_times_the_scale() -> None:
    x = torch.randn(3, 40, 16).transpose(0, 1).requires_grad_()  # not contiguous
    y = cpu_dropout(x, 0.2)
    g = torch.randn_like(y)
    y.backward(g)
    assert x.grad is not None
    scale = RESOLUTION / (RESOLUTION - round(0.2 * RESOLUTION))  # 1 / (1 - p), p rounded
    expected = torch.where(y != 0, g * scale, 0.0)
    assert torch.allclose(x.grad, expected)


def test_module_matches_nn_dropout_outside_training_and_repeats_under_a_seed() -> None:
    drop = CPUDropout(0.3)
    x = torch.randn(8, 50)
    drop.eval()
    assert torch.equal(drop(x), x)
    drop.train()
    torch.manual_seed(7)
    a = drop(x)
    torch.manual_seed(7)
    assert torch.equal(a, cpu_dropout(x, 0.3))  # the cheaper mask, not torch's
    torch.manual_seed(7)
    assert torch.equal(drop(x), a)
    assert not torch.equal(drop(x), a)
    for p in (0.0, 1.0):  # the edge cases go to torch's own dropout
        assert torch.equal(CPUDropout(p)(x), torch.nn.functional.dropout(x, p, True))


def test_swaps_only_plain_dropout_modules() -> None:
    class OwnDropout(torch.nn.Dropout):
        pass

    model = torch.nn.Sequential(
        torch.nn.Linear(4, 4), torch.nn.Dropout(0.25), torch.nn.Sequential(OwnDropout(0.5))
    )
    assert use_cpu_dropout(model) is model
    assert type(model[1]) is CPUDropout and model[1].p == 0.25
    assert use_cpu_dropout(torch.nn.Sequential(torch.nn.Dropout(0.1)).eval())[0].training is False
    assert type(model[2][0]) is OwnDropout


def test_pipeline_encoder_trains_with_cpu_dropout(
    nlp_factory: Callable[..., spacy.Language],
) -> None:
    """The loaded encoder's dropout layers are swapped, keep their rates (attention code reads
    ``self.dropout.p``), and are active in training only."""
    nlp = nlp_factory("bert")
    hf = get_shim(nlp.get_pipe("trf").model).hf_model
    drops = [m for m in hf.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(type(m) is CPUDropout for m in drops)
    assert {m.p for m in drops} == {hf.config.hidden_dropout_prob} | {
        hf.config.attention_probs_dropout_prob
    }
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
    hf.eval()
    with torch.no_grad():
        a, b = hf(input_ids=ids).last_hidden_state, hf(input_ids=ids).last_hidden_state
    assert torch.equal(a, b)
    hf.train()
    with torch.no_grad():
        c = hf(input_ids=ids).last_hidden_state
    hf.eval()
    assert not torch.allclose(a, c)
