"""The inference backend interface, the float32 operations backends share, and the registry.

A backend holds a model's weights in the form it prefers and performs the heavy operations of
the GPT-J graph (``ggml_py.model``) on float32 NumPy activations. The graph only ever talks to
the :class:`Backend` protocol; concrete backends are found by name through the entry-point group
``ggml_py.backends``, so a backend installed from another distribution works exactly like the two
that ship with ggml-py. ``spec/backend.md`` is the full contract; ``ggml_py.conformance`` is the
test suite that checks it.

>>> {"numpy-blas", "blocked-f16"} <= set(installed_backends())
True
>>> resolve_backend_name("blocked-f16")
'blocked-f16'
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ggml_py.errors import BackendError

ENTRY_POINT_GROUP = "ggml_py.backends"
ENV_VAR = "GGML_PY_BACKEND"
DEFAULT_BACKEND = "auto"  # backends/auto.py: numba, else numpy-blas if it fits, else blocked-f16


class WeightTensor(Protocol):
    """What a backend receives for each tensor: ``ggml_py.formats.TensorInfo`` satisfies it.

    ``type`` is a ``ggml_py.formats.quant.GGMLType``; ``shape`` is in NumPy order (rows first);
    ``data`` is a 1-D ``uint8`` array holding the tensor's bytes exactly as stored in the file
    (usually a read-only memory-mapped view, not necessarily aligned).
    """

    name: str
    type: int
    shape: tuple[int, ...]
    data: np.ndarray


@runtime_checkable
class Backend(Protocol):
    """The operations the GPT-J graph needs; see ``spec/backend.md`` for the exact contract.

    Activations are C-contiguous ``float32`` arrays. Weights are opaque *handles*: whatever
    :meth:`prepare` returned for a tensor name; the graph passes them back unchanged.
    A backend class is constructed as ``cls(n_threads=None)``.
    """

    name: str
    description: str

    def prepare(self, path: str, tensors: Mapping[str, WeightTensor]) -> dict[str, Any]:
        """Turn every tensor into a handle; raise ``BackendError(path, ...)`` to refuse a model."""

    def embedding(self, table: Any, ids: np.ndarray) -> np.ndarray:
        """Rows ``ids`` (int array ``[T]``) of a 2-D table handle ``[V, E]``: float32 ``[T, E]``."""

    def linear(self, x: np.ndarray, weight: Any, bias: Any = None) -> np.ndarray:
        """``x @ W.T (+ b)``: x ``[T, in]``, W ``[out, in]``, b ``[out]`` -> float32 ``[T, out]``."""

    def layer_norm(self, x: np.ndarray, weight: Any, bias: Any, eps: float) -> np.ndarray:
        """LayerNorm over the last axis of ``[T, E]`` with the biased variance."""

    def gelu(self, x: np.ndarray) -> np.ndarray:
        """``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` elementwise, any shape."""

    def attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Causal softmax attention per head: q ``[H, T, D]``, k and v ``[H, S, D]`` (S >= T)
        -> ``[H, T, D]``; query ``i`` sees keys ``0 .. S - T + i``, scores scaled by ``D**-0.5``."""


class Float32Ops:
    """NumPy float32 implementations of the elementwise and attention operations.

    Both shipped backends inherit them, and so may third-party backends: they only need their
    own :meth:`prepare`, :meth:`embedding` and :meth:`linear`. Weight handles passed to
    :meth:`layer_norm` must be float32 arrays (or anything ``np.asarray`` turns into one).
    """

    def layer_norm(self, x: np.ndarray, weight: Any, bias: Any, eps: float) -> np.ndarray:
        mean = x.mean(axis=-1, keepdims=True)  # [T, 1]
        centered = x - mean  # [T, E]
        variance = np.mean(centered * centered, axis=-1, keepdims=True)
        centered *= 1.0 / np.sqrt(variance + np.float32(eps))  # [T, E] normalised
        centered *= weight
        centered += bias
        return centered

    def gelu(self, x: np.ndarray) -> np.ndarray:
        inner = x * x  # x^2
        inner *= np.float32(0.044715)
        inner += np.float32(1.0)
        inner *= x
        inner *= np.float32(np.sqrt(2.0 / np.pi))  # sqrt(2/pi) (x + 0.044715 x^3)
        np.tanh(inner, out=inner)
        inner += np.float32(1.0)
        inner *= x
        inner *= np.float32(0.5)
        return inner

    def attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        n_query, n_key, head_dim = q.shape[1], k.shape[1], q.shape[2]
        scores = np.matmul(q, k.transpose(0, 2, 1))  # [H, T, S]
        scores *= np.float32(1.0 / np.sqrt(head_dim))
        if n_query > 1:
            # query i sits at absolute position S - T + i and must not see later keys
            future = np.triu(np.ones((n_query, n_key), dtype=bool), k=n_key - n_query + 1)
            scores[:, future] = -np.inf
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)  # softmax over keys
        return np.matmul(scores, v)  # [H, T, D]


# --- registry --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackendEntry:
    """One installed backend: its name, ``module:attribute``, and the distribution providing it."""

    name: str
    target: str
    distribution: str | None
    entry_point: metadata.EntryPoint

    def load(self) -> type:
        try:
            return self.entry_point.load()
        except Exception as error:  # any import failure of a plugin is the plugin's problem
            raise BackendError(
                None,
                f"backend '{self.name}' ({self.target}) cannot be imported: "
                f"{type(error).__name__}: {error}",
            ) from error


def installed_backends() -> dict[str, BackendEntry]:
    """Every backend registered in the ``ggml_py.backends`` entry-point group, by name.

    When two distributions register the same name, the first one found on ``sys.path`` wins.
    """
    found: dict[str, BackendEntry] = {}
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name in found:
            continue
        dist = getattr(entry_point, "dist", None)
        where = f"{dist.metadata['Name']} {dist.version}" if dist is not None else None
        found[entry_point.name] = BackendEntry(
            entry_point.name, entry_point.value, where, entry_point
        )
    return found


def resolve_backend_name(name: str | None = None) -> str:
    """The backend to use: ``name`` if given, else ``$GGML_PY_BACKEND``, else ``auto``."""
    return name or os.environ.get(ENV_VAR) or DEFAULT_BACKEND


def create_backend(name: str | None = None, n_threads: int | None = None) -> Backend:
    """Instantiate a registered backend (name resolved by :func:`resolve_backend_name`)."""
    name = resolve_backend_name(name)
    if n_threads is not None and n_threads < 1:
        raise BackendError(None, f"n_threads must be at least 1, got {n_threads}")
    entries = installed_backends()
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise BackendError(None, f"unknown backend '{name}' (installed: {known})")
    backend = entries[name].load()(n_threads=n_threads)
    missing = [
        op
        for op in ("prepare", "embedding", "linear", "layer_norm", "gelu", "attention")
        if not callable(getattr(backend, op, None))
    ]
    if missing:
        raise BackendError(None, f"backend '{name}' does not implement {', '.join(missing)}")
    return backend


def default_thread_count() -> int:
    """The CPUs this process may run on (``sched_getaffinity`` where available)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def set_blas_threads(count: int) -> bool:
    """Set the thread count of the BLAS NumPy uses, for the whole process; False if it cannot be
    controlled (only OpenBLAS found through ``/proc/self/maps`` can).

    Backends call it before their products: numpy-blas wants the BLAS threaded, blocked-f16 runs
    one single-threaded product per worker thread (a threaded BLAS inside its workers would have
    the threads fight over the cores).
    """
    setter = _openblas_thread_setter()
    if setter is None:
        return False
    setter(count)
    return True


@functools.cache
def _openblas_thread_setter() -> Callable[[int], None] | None:
    # NumPy, imported above, has loaded its BLAS library: find it among the mapped files
    try:
        with open("/proc/self/maps") as maps:
            libraries = {
                line.split()[-1] for line in maps if "openblas" in line.rsplit("/", 1)[-1].lower()
            }
    except OSError:
        return None
    for library in sorted(libraries):
        try:
            handle = ctypes.CDLL(library)
        except OSError:
            continue
        for symbol in (
            "scipy_openblas_set_num_threads64_",
            "scipy_openblas_set_num_threads",
            "openblas_set_num_threads64_",
            "openblas_set_num_threads",
        ):
            setter = getattr(handle, symbol, None)
            if setter is not None:
                setter.argtypes, setter.restype = [ctypes.c_int], None
                return setter
    return None
