"""``numba``: weights stay memory-mapped as stored; one token's products run compiled kernels.

Decoding one token reads every weight once, so its speed is how fast the weights can be read,
unpacked and multiplied: ``ggml_py_backends.numba_kernels.matvec`` does all three in one pass over
the file's bytes (f32, f16 and every block format), threaded over rows. Prompts (several tokens at
once) are matrix-matrix products where BLAS is faster than any fused loop: row blocks are decoded
to float32 by ``numba_kernels.decode_rows`` and multiplied by BLAS straight into their columns of
the output, the blocks split between blocked-f16's threads (this backend inherits its pool). One
token's attention reads the whole KV cache and is compiled too (``numba_kernels.attend``); norms
and GELU stay in NumPy (``Float32Ops``): about 1 ms of a 1B token.

numba compiles the kernels the first time they are used on a machine (a few seconds, announced
on stderr) and caches them: beside the kernels' source when that folder is writable, else in
``$NUMBA_CACHE_DIR`` or ``~/.cache/numba``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
from ggml_py_backends import numba_kernels as kernels
from ggml_py_backends.blocked_f16 import BLOCK_ELEMENTS, BlockedF16Backend
from numba import types

from ggml_py.backend import WeightTensor, set_blas_threads
from ggml_py.errors import BackendError
from ggml_py.formats.quant import BLOCK_FORMATS, GGMLType, Scratch

# numba's thread pool takes one parallel kernel at a time (its 'workqueue' layer, the fallback
# without OpenMP or TBB, aborts the process on concurrent launches from several threads): calls
# from threads are serialised
_PARALLEL = threading.Lock()


class NumbaMatrix(NamedTuple):
    """A 2-D weight ``[n_rows, n_cols]``: its raw bytes, as the kernels read them."""

    kind: int  # GGMLType
    data: np.ndarray  # read-only uint8 view of the file's bytes, rows one after another
    row_bytes: int
    n_rows: int
    n_cols: int
    block_rows: int  # rows decoded at a time for prompts (4 MiB of float32, in the caches)


class NumbaBackend(BlockedF16Backend):
    name = "numba"
    description = (
        "weights stay memory-mapped as stored; one token through fused decode-and-dot kernels "
        "compiled by numba, prompts through row blocks decoded to float32 and BLAS"
    )

    def __init__(self, n_threads: int | None = None):
        super().__init__(n_threads)
        try:
            compile_kernels()
        except Exception as error:  # LLVM or numba trouble: one line, so that `auto` can move on
            raise BackendError(
                None, f"numba kernels do not work: {type(error).__name__}: {error}"
            ) from error

    def prepare(self, path: str, tensors: Mapping[str, WeightTensor]) -> dict[str, Any]:
        vectors = super().prepare(path, {n: t for n, t in tensors.items() if len(t.shape) != 2})
        return {
            name: _matrix(record) if len(record.shape) == 2 else vectors[name]
            for name, record in tensors.items()
        }

    def embedding(self, table: NumbaMatrix, ids: np.ndarray) -> np.ndarray:
        out = np.empty((len(ids), table.n_cols), np.float32)  # [T, E]
        for i, row in enumerate(ids):
            kernels.decode_rows(table.kind, table.data, table.row_bytes, int(row), out[i : i + 1])
        return out

    def linear(
        self, x: np.ndarray, weight: NumbaMatrix, bias: np.ndarray | None = None
    ) -> np.ndarray:
        if x.shape[0] != 1:
            return self._prompt_linear(x, weight, bias)
        token = _read_only(np.ascontiguousarray(x[0], dtype=np.float32))
        block_sums = (  # only q4_1 and q5_1 use them: their values are q * d + m
            _read_only(token.reshape(-1, 32).sum(axis=1))
            if weight.kind in _WITH_MINIMUM
            else _NO_BLOCKS
        )
        out = np.empty((1, weight.n_rows), dtype=np.float32)
        with _PARALLEL:
            # waking the other threads costs more than a small matrix (and much more on a busy
            # machine: 10-40 ms instead of 0.2 ms for a 64 x 2048 q4_0 product, load average 12)
            small = weight.data.size < PARALLEL_MIN_BYTES
            kernels.set_threads(1 if small else self.n_threads)
            kernels.matvec(weight.kind, weight.data, weight.row_bytes, token, block_sums, out[0])
        if bias is not None:
            out += bias
        return out

    def _prompt_linear(
        self, x: np.ndarray, weight: NumbaMatrix, bias: np.ndarray | None
    ) -> np.ndarray:
        """Several tokens: ``y [T, out] = x @ W.T``, each thread taking a share of the row blocks.
        (Through blocked-f16's ``[out, T]`` products, the transposes of x and of the result took
        a fifth of a 256-token prompt's time.)"""
        x = np.ascontiguousarray(x, dtype=np.float32)  # [T, in]
        y = np.empty((x.shape[0], weight.n_rows), np.float32)  # [T, out]
        set_blas_threads(1)  # the threads here are the parallelism
        self.on_row_ranges(
            lambda start, stop: _product_rows(x, weight, y, start, stop, self._scratch),
            weight.n_rows,
            weight.block_rows,
        )
        if bias is not None:
            y += bias
        return y

    def attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        keys, values = k.transpose(1, 0, 2), v.transpose(1, 0, 2)  # [S, H, D]
        if q.shape[1] != 1 or not (_cache_layout(keys) and _cache_layout(values)):
            return super().attention(q, k, v)  # prompts: NumPy's matrix products
        query = _read_only(np.ascontiguousarray(q[:, 0, :], dtype=np.float32))  # [H, D]
        out = np.empty(q.shape, np.float32)  # [H, 1, D]
        with _PARALLEL:
            kernels.set_threads(self.n_threads)
            kernels.attend(query, _read_only(keys), _read_only(values), out.reshape(q.shape[::2]))
        return out


def _cache_layout(array: np.ndarray) -> bool:
    """Whether keys or values ``[S, H, D]`` are float32 in one C-ordered block, as the model's
    cache holds them (other layouts take NumPy's path)."""
    return array.dtype == np.float32 and array.flags.c_contiguous


def _product_rows(
    x: np.ndarray, weight: NumbaMatrix, y: np.ndarray, start: int, stop: int, scratch: Scratch
) -> None:
    """``y[:, start:stop] = x @ W[start:stop].T``, a row block at a time (the kernel releases the
    GIL, BLAS writes into the columns of ``y`` in place)."""
    for begin in range(start, stop, weight.block_rows):
        end = min(begin + weight.block_rows, stop)
        rows = scratch.array("rows", np.float32, (end - begin, weight.n_cols))
        kernels.decode_rows(weight.kind, weight.data, weight.row_bytes, begin, rows)
        np.matmul(x, rows.T, out=y[:, begin:end])


def _matrix(record: WeightTensor) -> NumbaMatrix:
    n_rows, n_cols = record.shape
    block = BLOCK_FORMATS[GGMLType(record.type)]
    row_bytes = n_cols // block.block_size * block.type_size
    data = _read_only(np.asarray(record.data).reshape(-1))
    block_rows = max(1, min(n_rows, BLOCK_ELEMENTS // n_cols))
    return NumbaMatrix(int(record.type), data, row_bytes, n_rows, n_cols, block_rows)


# a matrix smaller than this is multiplied on one thread
PARALLEL_MIN_BYTES = 1 << 20

_WITH_MINIMUM = (int(GGMLType.Q4_1), int(GGMLType.Q5_1))
_NO_BLOCKS = np.zeros(0, np.float32)
_NO_BLOCKS.flags.writeable = False


_MATVEC_SIGNATURE = (
    types.int64,  # kind
    types.Array(types.uint8, 1, "C", readonly=True),  # the weight's bytes
    types.int64,  # row_bytes
    types.Array(types.float32, 1, "C", readonly=True),  # x
    types.Array(types.float32, 1, "C", readonly=True),  # block_sums
    types.Array(types.float32, 1, "C"),  # out
)
_ATTEND_SIGNATURE = (
    types.Array(types.float32, 2, "C", readonly=True),  # q [H, D]
    types.Array(types.float32, 3, "C", readonly=True),  # keys [S, H, D]
    types.Array(types.float32, 3, "C", readonly=True),  # values
    types.Array(types.float32, 2, "C"),  # out [H, D]
)
_DECODE_ROWS_SIGNATURE = (
    types.int64,  # kind
    types.Array(types.uint8, 1, "C", readonly=True),  # the weight's bytes
    types.int64,  # row_bytes
    types.int64,  # start
    types.Array(types.float32, 2, "C"),  # out
)
F32 = int(GGMLType.F32)


def compile_kernels() -> None:
    """Compile the kernels for the signatures the backend calls them with, or load them from
    numba's cache; the first compile on a machine is announced on stderr. Then a tiny product
    proves they run: a broken numba raises here, in the backend's constructor, not mid-run."""
    wanted = [
        (kernels.matvec, _MATVEC_SIGNATURE),
        (kernels.decode_rows, _DECODE_ROWS_SIGNATURE),
        (kernels.attend, _ATTEND_SIGNATURE),
    ]
    missing = [
        (kernel, signature) for kernel, signature in wanted if signature not in kernel.overloads
    ]
    if not missing:
        return
    if not all(_in_cache(kernel, signature) for kernel, signature in missing):
        print(
            "ggml-py: numba backend: compiling kernels, once (numba caches them)",
            file=sys.stderr,
            flush=True,
        )
    for kernel, signature in missing:
        kernel.compile(signature)
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    x = np.array([1.0, -2.0, 0.5], np.float32)
    out = np.empty(2, np.float32)
    with _PARALLEL:
        kernels.matvec(
            F32, _read_only(w.reshape(-1).view(np.uint8)), 12, _read_only(x), _NO_BLOCKS, out
        )
    if not np.array_equal(out, w @ x):
        raise RuntimeError(
            f"the compiled product gives {out.tolist()} instead of {(w @ x).tolist()}"
        )


def _in_cache(dispatcher: Any, signature: tuple) -> bool:
    """Whether numba's on-disk cache holds ``dispatcher`` for ``signature``: its index lists the
    key (reading the index only; loading the code to find out would load it twice). numba has no
    public query, hence its internals, and any surprise counts as not cached."""
    try:
        cache = dispatcher._cache
        key = cache._index_key(signature, dispatcher.targetctx.codegen())
        return key in cache._cache_file._load_index()
    except Exception:
        return False


def _read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view: the kernels are compiled for read-only inputs only."""
    view = array.view()
    view.flags.writeable = False
    return view
