"""Skip marks for tests that need something this machine may lack."""

from importlib.util import find_spec

import pytest
import torch

needs_bf16 = pytest.mark.skipif(
    not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="no bf16 on this CPU"
)
needs_onnx = pytest.mark.skipif(
    not all(find_spec(m) for m in ("onnxruntime", "onnxscript")), reason="no onnxruntime"
)
