"""``inference = "compile"``: a copy of the model compiled by ``torch.compile`` (inductor, dynamic
shapes): the same fp32 computation with fused kernels.

Compilation happens at the first calls, in every process: once for batches of one window and once
for larger ones, each taking seconds to a minute. After a weights change the new copy reuses the
compiled graphs (weights are graph inputs).
"""

import sysconfig
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import torch


def compile_model(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` (an eval-mode copy) compiled by inductor with dynamic shapes."""
    if next(model.parameters()).device.type == "cpu":  # checked per copy, not per call
        check_cpp_toolchain()
    return cast(torch.nn.Module, torch.compile(model, dynamic=True))


def check_cpp_toolchain() -> None:
    """Raise if inductor cannot build its CPU kernels: they need a C++ compiler and Python's
    headers (they are built as Python extensions)."""
    fix = (
        "install them (e.g. `apt install g++ python3-dev`; CXX picks another compiler), or use "
        'inference = "torch" or "int8".'
    )
    try:
        from torch._inductor import exc
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # private API moved: let torch.compile report what is missing
        return
    try:
        get_cpp_compiler()
    except exc.InvalidCxxCompiler as err:
        raise ValueError(
            f'inference = "compile" needs a C++ compiler and Python headers on CPU: {fix}'
        ) from err
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        raise ValueError(
            f'inference = "compile" needs Python headers (Python.h) on CPU as well: {fix}'
        )


class CompileCalls:
    """Runs a compiled copy's calls one at a time until it has run for a batch of one window
    and for a larger batch: dynamo compiles (with ``dynamic=True``, once for each) in the
    calling thread, and threads must not race through those first compilations."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._compiled: set[bool] = set()

    @contextmanager
    def run(self, n_windows: int) -> Iterator[None]:
        """The block in which a batch of ``n_windows`` runs."""
        several = n_windows > 1
        if several in self._compiled:
            yield
            return
        with self._lock:
            yield
            self._compiled.add(several)
