"""The trainable parameters of a pipeline in one stable order, for data-parallel training: the
same list on every worker, so that gradients are summed and weights broadcast parameter by
parameter, and optimizer state is saved by position rather than by Thinc's per-process ids.

Thinc layers' parameters and the torch parameters of their shims (the HF encoder) alike.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.distributed as dist
from spacy.language import Language
from thinc.api import Model, torch2xp, xp2torch
from thinc.shims import PyTorchShim
from thinc.types import FloatsXd

from ..encoder import HFShim

BUCKET = 1 << 24  # floats per flat buffer (64 MB): large models are broadcast in pieces
SMALL = 1 << 16  # gradients with fewer floats are summed together, in flat buffers


@dataclass
class Param:
    """One parameter: a Thinc layer's (``node`` and ``name``) or a torch shim's (``tensor``).

    key (tuple[int, str]): The optimizer's key for it, as Thinc's ``finish_update`` passes it.
    """

    key: tuple[int, str]
    node: Model | None = None
    name: str = ""
    tensor: torch.nn.Parameter | None = None
    shim: PyTorchShim | None = None

    @property
    def weight(self) -> torch.Tensor:
        """The weights, sharing memory with the parameter."""
        if self.tensor is not None:
            return self.tensor.data
        assert self.node is not None
        return xp2torch(self.node.get_param(self.name))

    @property
    def grad(self) -> torch.Tensor | None:
        """The gradient, sharing memory with the parameter's, or None if it has none."""
        if self.tensor is not None:
            return self.tensor.grad
        assert self.node is not None
        return xp2torch(self.node.get_grad(self.name)) if self.node.has_grad(self.name) else None

    def set_grad(self, value: torch.Tensor) -> None:
        """Give the parameter the gradient ``value`` (in place where it has one)."""
        grad = self.grad
        if grad is not None:
            grad.copy_(value.view_as(grad))
            return
        weight = self.weight
        new = value.view_as(weight).to(device=weight.device, dtype=weight.dtype, copy=True)
        if self.tensor is not None:
            self.tensor.grad = new
        else:
            assert self.node is not None
            self.node.set_grad(self.name, cast(FloatsXd, torch2xp(new)))


def trained_components(nlp: Language, exclude: Iterable[str] = ()) -> list[Any]:
    """The components that ``spacy train`` updates (and calls ``finish_update`` on)."""
    return [
        proc
        for name, proc in nlp.pipeline
        if name not in exclude
        and getattr(proc, "is_trainable", False)
        and isinstance(getattr(proc, "model", None), Model)
    ]


def trainable_params(nlp: Language, exclude: Iterable[str] = ()) -> list[Param]:
    """The parameters of the components that ``spacy train`` updates, in pipeline order, each
    once (a layer shared by two components is listed under the first)."""
    seen: set[tuple[str, int]] = set()
    params: list[Param] = []
    for proc in trained_components(nlp, exclude):
        params.extend(_model_params(proc.model, seen))
    return params


def unseen_class_nodes(nlp: Language, exclude: Iterable[str] = ()) -> list[Model]:
    """The layers of the trained components that keep ``unseen_classes`` (spaCy's transition
    parsers mask the scores of the actions not yet seen in training), in pipeline order."""
    nodes: dict[int, Model] = {}
    for proc in trained_components(nlp, exclude):
        nodes.update((n.id, n) for n in proc.model.walk() if "unseen_classes" in n.attrs)
    return list(nodes.values())


def sync_unseen_classes(nodes: list[Model]) -> None:
    """An action that any worker has seen is seen on every worker (each saw its own slice), so
    that all mask the same actions, as one worker on the whole batches would."""
    if not nodes or dist.get_world_size() == 1:
        return
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, [sorted(n.attrs["unseen_classes"]) for n in nodes])
    for i, node in enumerate(nodes):
        node.attrs["unseen_classes"].intersection_update(*(classes[i] for classes in gathered))


def _model_params(model: Model, seen: set[tuple[str, int]]) -> Iterator[Param]:
    for node in model.walk():
        if ("node", node.id) in seen:
            continue
        seen.add(("node", node.id))
        for shim in node.shims:
            if isinstance(shim, PyTorchShim) and ("shim", shim.id) not in seen:
                seen.add(("shim", shim.id))
                torch_model: Any = shim._model  # Thinc's shims keep their module here
                for pname, tensor in torch_model.named_parameters() if torch_model else ():
                    yield Param((shim.id, pname), tensor=tensor, shim=shim)
        for pname in node.param_names:
            if node.has_param(pname):
                yield Param((node.id, pname), node=node, name=pname)


def all_reduce_gradients(params: list[Param], device: torch.device) -> None:
    """Sum every parameter's gradient over the workers, in place: large gradients each on
    their own (asynchronously), small ones together in flat buckets.

    A parameter without a gradient here counts as zeros and gets the sum if any worker had
    one, so that the optimizer steps the same parameters on every worker.
    """
    if dist.get_world_size() == 1:
        return
    present = torch.tensor([float(p.grad is not None) for p in params], device=device)
    dist.all_reduce(present)
    summed = [p for p, seen in zip(params, present.tolist(), strict=True) if seen]
    for p in summed:
        if p.grad is None:
            p.set_grad(p.weight.new_zeros(p.weight.shape))
    # Which way each gradient goes is decided from its weight, the same on every worker.
    direct = [p.weight.numel() >= SMALL and p.weight.dtype == torch.float32 for p in summed]
    pending = []
    for p in (p for p, d in zip(summed, direct, strict=True) if d):
        grad = cast(torch.Tensor, p.grad)
        shared = grad.is_contiguous() and grad.device == device and grad.dtype == torch.float32
        buffer = grad if shared else grad.contiguous().to(device, torch.float32)
        pending.append((grad, buffer, dist.all_reduce(buffer, async_op=True)))
    small = [p for p, d in zip(summed, direct, strict=True) if not d]
    for bucket in _buckets(small):
        grads = [cast(torch.Tensor, p.grad) for p in bucket]
        flat = torch.cat([g.reshape(-1).to(device, torch.float32) for g in grads])
        dist.all_reduce(flat)
        for g, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
            g.copy_(part.view_as(g))
    for grad, buffer, work in pending:
        if work is not None:
            work.wait()
        if buffer is not grad:
            grad.copy_(buffer)


def broadcast_weights(params: list[Param], device: torch.device, src: int = 0) -> None:
    """Give every worker the weights of worker ``src`` (so that all start equal)."""
    for bucket in _buckets(params):
        flat = torch.cat([p.weight.reshape(-1).float() for p in bucket]).to(device)
        dist.broadcast(flat, src)
        set_weights(bucket, flat.split([p.weight.numel() for p in bucket]))


def set_weights(params: list[Param], values: Iterable[torch.Tensor | Any]) -> None:
    """Write ``values`` (tensors or arrays, one per parameter) into the parameters' weights."""
    for p, value in zip(params, values, strict=True):
        weight = p.weight
        weight.copy_(torch.as_tensor(value).view_as(weight))
    for shim in {id(p.shim): p.shim for p in params if p.shim is not None}.values():
        if isinstance(shim, HFShim):
            shim.weights_version += 1  # converted inference copies are stale


def _buckets(params: list[Param]) -> Iterator[list[Param]]:
    bucket: list[Param] = []
    size = 0
    for p in params:
        bucket.append(p)
        size += p.weight.numel()
        if size >= BUCKET:
            yield bucket
            bucket, size = [], 0
    if bucket:
        yield bucket
