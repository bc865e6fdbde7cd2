"""``HFShim``: the Thinc shim that owns a Hugging Face encoder, its tokenizer and its inference
backends; saved as a plain Hugging Face directory."""

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, cast

import torch
from thinc.api import Optimizer, torch2xp, xp2torch
from thinc.shims import PyTorchShim
from thinc.shims.pytorch_grad_scaler import PyTorchGradScaler
from thinc.types import FloatsXd
from thinc.util import get_torch_default_device
from transformers import PreTrainedModel

from ..pieces import PieceTokenizer
from .backends import ONNX_FILE, InferenceBackends, Predict
from .dropout import use_cpu_dropout
from .loading import ModelLoadError, bytes_to_dir, dir_to_bytes, load_hf, save_hf
from .options import EncoderOptions


class HFShim(PyTorchShim):
    """Owns an HF encoder and its tokenizer, serialized as an HF directory.

    With ``head`` ("token" or "sequence") the model is the encoder with its fine-tuned
    classification head, and its output rows are the head's logits (streams.py).

    The model is loaded lazily (at initialize or from_disk/from_bytes), so that a pipeline can be
    built from its config without the original model files. ``options`` say how it runs
    (options.py); ``backends`` runs predictions (encoder/backends); ``weights_version`` counts
    the changes of the weights, so converted models know when to rebuild.
    """

    def __init__(
        self,
        tokenizer_config: dict[str, Any] | None = None,
        transformer_config: dict[str, Any] | None = None,
        options: EncoderOptions | None = None,
        head: str | None = None,
    ) -> None:
        super().__init__(None)
        self.head = head
        self.tokenizer: Any = None
        self.pieces: PieceTokenizer | None = None
        # Loading options (trust_remote_code, attn_implementation, ...) reused for saved copies.
        self.tokenizer_config = dict(tokenizer_config or {})
        self.transformer_config = dict(transformer_config or {})
        self.options = options or EncoderOptions()
        self.backends = InferenceBackends()
        self.weights_version = 0
        self._loss_scaling = False

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def hf_model(self) -> PreTrainedModel:
        """The Hugging Face model (read it; change it through the shim)."""
        if self._model is None:
            raise ValueError(
                "The transformer has no model loaded: call nlp.initialize() (or "
                "model.initialize()) first, or load a saved pipeline."
            )
        return cast(PreTrainedModel, self._model)

    def ensure_loaded(self, name: str) -> None:
        """Load the model and tokenizer ``name`` (hub id or directory) unless one is loaded."""
        if not self.loaded:
            self.set_model(*self._load(name))

    def _load(self, name: str) -> tuple[torch.nn.Module, Any]:
        return load_hf(name, self.tokenizer_config, self.transformer_config, self.head)

    @property
    def output_width(self) -> int:
        """Columns of the output rows: the hidden size, or the head's number of labels."""
        config: Any = self.hf_model.config
        return int(config.num_labels if self.head else config.hidden_size)

    def require_loaded(self, name: str) -> None:
        """Raise, naming the fix, if no model is loaded yet."""
        if not self.loaded:
            raise ValueError(
                f"The transformer model '{name}' is not loaded yet: call nlp.initialize() (or "
                "model.initialize()) first, or load a saved pipeline (or model.from_disk)."
            )

    @property
    def input_names(self) -> tuple[str, ...]:
        """The HF forward's input tensors, in the order the ONNX export takes them."""
        assert self.pieces is not None
        return self.pieces.input_names

    @property
    def inference(self) -> str:
        return self.backends.name

    def set_inference(self, backend: str) -> None:
        """Switch the prediction backend; converted models of other backends are dropped."""
        self.backends.select(backend)

    def use_backend(self, backend: str) -> AbstractContextManager[None]:
        """Predict with ``backend`` inside the block, keeping the converted models."""
        return self.backends.using(backend)

    def predictor(self, flags: dict[str, bool], autocast: AbstractContextManager) -> Predict:
        """A prediction function on the current backend and weights."""
        return self.backends.predictor(
            self.hf_model, self.weights_version, flags, autocast, self.input_names
        )

    def set_options(self, options: EncoderOptions) -> None:
        """Use ``options`` from now on (and settle the model's switches for them)."""
        self.options = options
        if self.loaded:
            self._settle()

    def _settle(self) -> None:
        """Set the HF model's switches that the options need, whenever the model, its device
        or the options change (never during a forward): eager attention when attentions are
        asked for (fused kernels return none), and on CUDA gradient checkpointing and fp16 loss
        scaling, on or off."""
        hf_model, options = self.hf_model, self.options
        attention = getattr(hf_model.config, "_attn_implementation", "eager")
        if options.output_attentions and attention != "eager":
            hf_model.set_attn_implementation("eager")
            self.backends.forget()  # converted copies were built with fused attention
        if self.device.type != "cuda":
            return
        checkpointing = bool(
            options.gradient_checkpointing and hf_model.supports_gradient_checkpointing
        )
        if checkpointing and not hf_model.is_gradient_checkpointing:
            hf_model.gradient_checkpointing_enable({"use_reentrant": False})
        elif not checkpointing and hf_model.is_gradient_checkpointing:
            hf_model.gradient_checkpointing_disable()
        if options.mixed_precision and not torch.cuda.is_bf16_supported():
            self.enable_loss_scaling()
        elif self._loss_scaling:
            self._loss_scaling = False
            self._grad_scaler = PyTorchGradScaler(enabled=False)

    @property
    def has_gradients(self) -> bool:
        """Whether any weight of the HF model has a gradient to step with."""
        return self.loaded and any(p.grad is not None for p in self.hf_model.parameters())

    def gradients_finite(self) -> bool:
        """Whether every gradient of the HF model is finite (True without gradients)."""
        if not self.loaded:
            return True
        grads = [p.grad for p in self.hf_model.parameters() if p.grad is not None]
        if not grads:
            return True
        # The max norm: a sum of squares would overflow on large but finite gradients.
        return bool(torch.nn.utils.get_total_norm(grads, norm_type=float("inf")).isfinite())

    def drop_gradients(self) -> None:
        """Forget the gradients received since the last step."""
        if self.loaded:
            self.hf_model.zero_grad(set_to_none=True)

    @property
    def loss_scaling(self) -> bool:
        """Whether gradients are scaled (fp16 training on a GPU without bf16)."""
        return self._loss_scaling

    def enable_loss_scaling(self, init_scale: float = 2.0**16) -> None:
        """Scale gradients in fp16 training (mixed precision without bf16), once."""
        if not self._loss_scaling:
            self._loss_scaling = True
            self._grad_scaler = PyTorchGradScaler(enabled=True, init_scale=init_scale)
            self._grad_scaler.to_(self.device)

    def backward(self, tensors: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        """Backpropagate ``grads`` from ``tensors`` into the weights (fp16: scaled here and
        unscaled once in ``finish_update``, after all accumulation)."""
        if tensors:
            torch.autograd.backward(tensors, self._grad_scaler.scale(grads))

    def finish_update(self, optimizer: Optimizer) -> None:
        """Step the weights that received a gradient, at ``learn_rate_scale`` times the rate.

        Gradients are then dropped (not zeroed), so weights without a gradient in the next
        update are left alone instead of drifting on the optimizer's momentum. In fp16 a step
        whose gradients overflowed is skipped, and the weights version stays.
        """
        scaler = self._grad_scaler
        params = [(n, p) for n, p in self.hf_model.named_parameters() if p.grad is not None]
        if self._loss_scaling:  # unscale the accumulated gradients once; notes overflows
            scaler.unscale([p.grad for _, p in params])
        step = bool(params) and not scaler.found_inf
        # lr_scale only when needed: custom optimizers may not take it.
        lr_scale = self.options.learn_rate_scale
        scale = {"lr_scale": lr_scale} if lr_scale != 1.0 else {}
        for name, param in params:
            if step:
                data, _ = optimizer(
                    (self.id, name),
                    cast(FloatsXd, torch2xp(param.data)),
                    cast(FloatsXd, torch2xp(cast(torch.Tensor, param.grad))),
                    **scale,
                )
                # Write into the parameter's own storage: rebinding param.data to a tensor made
                # from the optimizer's array grew memory by tens of MB per step (measured).
                new = xp2torch(data, device=param.device)
                if new.data_ptr() != param.data.data_ptr():
                    with torch.no_grad():
                        param.data.copy_(new)
            param.grad = None
        if step:
            self.weights_version += 1
        scaler.update()

    def set_model(self, model: torch.nn.Module, tokenizer: Any) -> None:
        """Install a loaded model on the current device (Thinc's: the GPU after require_gpu),
        with its dropout layers drawing their masks the cheaper way on CPU (dropout.py)."""
        device = self.device if self._model is not None else get_torch_default_device()
        self._model = use_cpu_dropout(model).to(device)
        self.tokenizer = tokenizer
        self.pieces = PieceTokenizer(tokenizer)
        self.weights_version += 1
        self.backends.forget()
        self._settle()

    @property
    def device(self) -> torch.device:
        if self._model is None:
            return get_torch_default_device()
        return super().device

    def to_device(self, device_type: str, device_id: int) -> None:
        if self._model is not None:  # an unloaded model goes to the default device when loaded
            super().to_device(device_type, device_id)
            self.backends.forget()  # built for the old device
            if self._loss_scaling:
                self._grad_scaler.to_(self.device)
            self._settle()

    def to_disk(self, path: str | Path) -> None:
        if self._model is None:
            raise ValueError(
                "The transformer has no model loaded, so there is nothing to save: call "
                "nlp.initialize() (or load a saved pipeline) first."
            )
        onnx = self.backends.onnx_to_save(self.hf_model, self.weights_version, self.input_names)
        save_hf(self.hf_model, self.tokenizer, path, {ONNX_FILE: onnx} if onnx else {})

    def from_disk(self, path: str | Path) -> "HFShim":
        if not (Path(path) / "config.json").is_file():
            raise ModelLoadError(
                f"No saved transformer at '{path}' (config.json missing): the pipeline directory "
                "is incomplete. Save it again with nlp.to_disk()."
            )
        self.set_model(*self._load(str(path)))
        if (Path(path) / ONNX_FILE).is_file():
            self.backends.found_onnx(Path(path) / ONNX_FILE, self.weights_version)
        return self

    def to_bytes(self) -> bytes:
        return dir_to_bytes(self.to_disk)

    def from_bytes(self, bytes_data: bytes) -> "HFShim":
        return bytes_to_dir(bytes_data, self.from_disk)
