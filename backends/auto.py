"""``auto`` (the default backend): the fastest shipped backend that works here for the model at hand.

In order: ``numba`` when it imports and its kernels run; otherwise ``numpy-blas`` when the model's
float32 weights, plus its running reserve, fit in the memory available; otherwise
``blocked-f16``, which needs little more than the file. The choice is made in :meth:`prepare`,
once the model's size is known; every operation then goes to the chosen backend.
``ggml-py run`` prints the choice and its reason (:attr:`AutoBackend.reason`) in its header.

A numba that is installed but broken (a mismatched llvmlite, kernels that do not compile) is
reported in one line on stderr and passed over; a numba that is not installed is passed over
silently (the reason still says so).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
from ggml_py_backends.numpy_blas import available_memory, float32_memory

from ggml_py.backend import Backend, WeightTensor, create_backend
from ggml_py.errors import BackendError


class AutoBackend:
    name = "auto"
    description = (
        "the default: numba when it works, else numpy-blas when the float32 weights fit in "
        "memory, else blocked-f16"
    )

    def __init__(self, n_threads: int | None = None):
        self.n_threads = n_threads
        self.chosen: Backend | None = None  # set by prepare
        self.reason = ""

    @staticmethod
    def preview() -> str:
        """What ``auto`` takes on this machine before knowing the model (``ggml-py backends``)."""
        numba, why_not = working_numba()
        if numba is not None:
            return "numba (its compiled kernels work here)"
        available = available_memory()
        room = "" if available is None else f" in the {available / 2**30:.1f} GiB available"
        return (
            f"numpy-blas when a model's float32 weights and reserve fit{room}, else blocked-f16 "
            f"({why_not})"
        )

    def prepare(self, path: str, tensors: Mapping[str, WeightTensor]) -> dict[str, Any]:
        self.chosen, self.reason = choose(tensors, self.n_threads)
        return self.chosen.prepare(path, tensors)

    def embedding(self, table: Any, ids: np.ndarray) -> np.ndarray:
        return self.chosen.embedding(table, ids)

    def linear(self, x: np.ndarray, weight: Any, bias: Any = None) -> np.ndarray:
        return self.chosen.linear(x, weight, bias)

    def layer_norm(self, x: np.ndarray, weight: Any, bias: Any, eps: float) -> np.ndarray:
        return self._elementwise_backend().layer_norm(x, weight, bias, eps)

    def gelu(self, x: np.ndarray) -> np.ndarray:
        return self._elementwise_backend().gelu(x)

    def attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        return self._elementwise_backend().attention(q, k, v)

    def _elementwise_backend(self) -> Backend:
        """The chosen backend; called before any model was prepared (as the conformance suite
        calls these operations), the one ``auto`` takes for a model of no weights."""
        if self.chosen is None:
            self.chosen, self.reason = choose({}, self.n_threads)
        return self.chosen


def choose(tensors: Mapping[str, WeightTensor], n_threads: int | None) -> tuple[Backend, str]:
    """The backend ``auto`` takes for ``tensors``, created, and why (one phrase)."""
    numba, why_not = working_numba(n_threads)
    if numba is not None:
        return numba, "its compiled kernels work here"
    memory = float32_memory(tensors)
    weights = f"{(memory.weights + memory.reserve) / 2**30:.1f} GiB of float32 weights and reserve"
    if memory.fits:
        room = "" if memory.available is None else f" fit in {memory.available / 2**30:.1f} GiB"
        return create_backend("numpy-blas", n_threads), f"{why_not}; {weights}{room}"
    available = f"{memory.available / 2**30:.1f} GiB available"
    return create_backend("blocked-f16", n_threads), f"{why_not}; {weights} > {available}"


def working_numba(n_threads: int | None = None) -> tuple[Backend | None, str]:
    """The numba backend, or ``None`` and why not (a broken install also warns on stderr)."""
    try:
        return create_backend("numba", n_threads), ""
    except BackendError as error:
        if importlib.util.find_spec("numba") is None:
            return None, "numba is not installed (pip install 'ggml-py-gptj[numba]')"
        print(
            f"ggml-py: warning: the numba backend does not work, passed over: {error}",
            file=sys.stderr,
        )
        return None, "numba does not work"
