"""``numpy-blas``: every weight converted once to float32 in RAM; products through NumPy's BLAS.

The fastest choice when the model fits: decoding is a matrix-vector product per weight matrix,
bound by memory bandwidth, and prompt evaluation is a matrix-matrix product at BLAS speed. The
price is memory: 4 bytes per parameter, so the backend refuses up front (``BackendError``) a model
whose float32 weights exceed ``MemAvailable`` in ``/proc/meminfo``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np

from ggml_py.backend import Float32Ops, WeightTensor, default_thread_count, set_blas_threads
from ggml_py.errors import BackendError
from ggml_py.formats.quant import dequantize

MEMINFO = "/proc/meminfo"


class NumpyBlasBackend(Float32Ops):
    name = "numpy-blas"
    description = "weights converted once to float32 in RAM; matrix products through NumPy's BLAS"

    def __init__(self, n_threads: int | None = None):
        # the threads are the BLAS library's; the graph itself is single-threaded Python. No more
        # than the CPUs this process may use: OpenBLAS starts as many threads as it is told, more
        # threads than CPUs take turns on them, and each product waits for the last one.
        cpus = default_thread_count()
        self.n_threads = min(n_threads or cpus, cpus)

    def prepare(self, path: str, tensors: Mapping[str, WeightTensor]) -> dict[str, Any]:
        memory = float32_memory(tensors)
        if not memory.fits:
            raise BackendError(
                path,
                f"numpy-blas needs {memory.weights / 2**30:.2f} GiB for float32 weights (plus "
                f"{memory.reserve / 2**30:.2f} GiB to run) but only "
                f"{memory.available / 2**30:.2f} GiB of memory is available; use the numba or "
                "blocked-f16 backend",
            )

        # own, aligned, contiguous copies: BLAS must never read the (unaligned) memory map.
        # Decoding runs in NumPy passes that release the GIL: one tensor per thread at a time.
        def to_float32(t: WeightTensor) -> np.ndarray:
            return np.require(dequantize(t.data, t.type, t.shape), np.float32, ["C", "A", "O"])

        with ThreadPoolExecutor(self.n_threads) as pool:
            return dict(zip(tensors, pool.map(to_float32, tensors.values()), strict=True))

    def embedding(self, table: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return table[ids]

    def linear(
        self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None
    ) -> np.ndarray:
        set_blas_threads(self.n_threads)  # another backend may have changed it
        y = x @ weight.T  # [T, out], one BLAS call
        if bias is not None:
            y += bias
        return y


class Float32Memory(NamedTuple):
    """What a model's float32 weights need beside what the machine has (bytes)."""

    weights: int
    reserve: int  # running_reserve(weights)
    available: int | None  # MemAvailable; None where the kernel does not say

    @property
    def fits(self) -> bool:
        return self.available is None or self.weights + self.reserve <= self.available


def float32_memory(tensors: Mapping[str, WeightTensor]) -> Float32Memory:
    """The memory numpy-blas would need for ``tensors`` and the memory available now."""
    weights = sum(4 * math.prod(t.shape) for t in tensors.values())
    return Float32Memory(weights, running_reserve(weights), available_memory())


def running_reserve(weight_bytes: int) -> int:
    """Memory kept free beside the float32 weights: 1 GiB plus 5% of them, for the KV cache,
    activations, conversion temporaries and the interpreter. Without it a model whose weights
    alone just fit (GPT-J-6B's 22.5 GiB on a 24 GB machine) is killed by the kernel's OOM killer
    instead of refused.

    >>> running_reserve(20 * 2**30) / 2**30
    2.0
    """
    return 2**30 + weight_bytes // 20


def available_memory(meminfo: str = MEMINFO) -> int | None:
    """``MemAvailable`` in bytes, or ``None`` where the kernel does not report it."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
