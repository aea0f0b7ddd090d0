"""A minimal ggml-py backend living outside the ggml-py package.

It decodes every weight once to float64 and computes matrix products in float64: twice the
memory of ``numpy-blas`` and slower, but a little more accurate. LayerNorm, GELU and attention come from
``ggml_py.backend.Float32Ops``; a backend may equally write its own (see ``spec/backend.md``).

Check it with the conformance suite::

    pip install ./examples/custom_backend
    pytest --pyargs ggml_py.conformance --ggml-py-backend example-float64
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ggml_py.backend import Float32Ops, WeightTensor
from ggml_py.formats.quant import dequantize


class Float64Backend(Float32Ops):
    name = "example-float64"
    description = "example out-of-tree backend: weights and matrix products in float64"

    def __init__(self, n_threads: int | None = None):
        self.n_threads = n_threads  # single-threaded; accepted because every backend takes it

    def prepare(self, path: str, tensors: Mapping[str, WeightTensor]) -> dict[str, Any]:
        # the records' bytes are read-only and unaligned: keep our own float64 copies
        return {
            name: dequantize(t.data, t.type, t.shape).astype(np.float64)
            for name, t in tensors.items()
        }

    def embedding(self, table: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return table[ids].astype(np.float32)

    def linear(
        self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None
    ) -> np.ndarray:
        y = x.astype(np.float64) @ weight.T
        if bias is not None:
            y += bias
        return y.astype(np.float32)
