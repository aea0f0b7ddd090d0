"""Deliberately broken backends, one bug each, for tests/test_conformance_mutants.py.

Each is ``numpy-blas`` with one mistake a backend author could plausibly make; the conformance
suite must fail on every one of them and name the broken operation. They are registered as
backends only for those tests (a temporary entry-point folder on ``sys.path``).
"""

from __future__ import annotations

import numpy as np
from ggml_py_backends.numpy_blas import NumpyBlasBackend

F16_SMALLEST_NORMAL = 2.0**-14


class LinearDropsTokensPast32(NumpyBlasBackend):
    """Prompts processed in chunks of 32 tokens; the last partial chunk is forgotten."""

    def linear(self, x, weight, bias=None):
        y = np.zeros((x.shape[0], weight.shape[0]), np.float32)
        for start in range(0, x.shape[0] - x.shape[0] % 32 or x.shape[0], 32):
            y[start : start + 32] = super().linear(x[start : start + 32], weight, bias)
        return y


class AttentionWindowOf64(NumpyBlasBackend):
    """Attention over the last 64 cached positions only (a fixed-size key buffer)."""

    def attention(self, q, k, v):
        return super().attention(q, k[:, -64:], v[:, -64:])


def _scores_and_mask(q, k, first_hidden=1):
    """Scaled scores ``[H, T, S]`` and the mask of the keys each query must not see: key
    ``S - T + i + first_hidden`` on (1 is right)."""
    n_query, n_key = q.shape[1], k.shape[1]
    scores = np.matmul(q, k.transpose(0, 2, 1)) / np.float32(np.sqrt(q.shape[2]))
    return scores, np.triu(np.ones((n_query, n_key), dtype=bool), k=n_key - n_query + first_hidden)


def _softmax_product(weights, v):
    with np.errstate(invalid="ignore"):
        return np.matmul(weights / weights.sum(axis=-1, keepdims=True), v).astype(np.float32)


class AttentionSeesOneFuturePosition(NumpyBlasBackend):
    """The causal mask is off by one: query i also sees the key after its own position."""

    def attention(self, q, k, v):
        scores, hidden = _scores_and_mask(q, k, first_hidden=2)
        scores[:, hidden] = -np.inf
        return _softmax_product(np.exp(scores - scores.max(axis=-1, keepdims=True)), v)


class SoftmaxWithoutMaxSubtraction(NumpyBlasBackend):
    """``exp`` of the raw scores: overflows for large scores, underflows for very negative ones."""

    def attention(self, q, k, v):
        scores, hidden = _scores_and_mask(q, k)
        with np.errstate(over="ignore"):
            return _softmax_product(np.where(hidden, 0, np.exp(scores)), v)


class SoftmaxMaxTakenBeforeMask(NumpyBlasBackend):
    """The maximum is taken over all keys, masked ones included, and the mask applied after exp."""

    def attention(self, q, k, v):
        scores, hidden = _scores_and_mask(q, k)
        return _softmax_product(
            np.where(hidden, 0, np.exp(scores - scores.max(axis=-1, keepdims=True))), v
        )


class FortranOrderLinear(NumpyBlasBackend):
    """``(W @ x.T).T``: the right values, but a transposed (not C-contiguous) array."""

    def linear(self, x, weight, bias=None):
        y = (weight @ x.T).T
        if bias is not None:
            y += bias
        return y


class GeluInPlace(NumpyBlasBackend):
    """gelu computed in the input array and returned: the caller's activations are overwritten."""

    def gelu(self, x):
        x[...] = super().gelu(x)
        return x


class LayerNormCentersTheInput(NumpyBlasBackend):
    """layer_norm subtracts the mean from its input in place before normalising a copy."""

    def layer_norm(self, x, weight, bias, eps):
        x -= x.mean(axis=-1, keepdims=True)
        centered = x.copy()
        centered /= np.sqrt(np.mean(centered * centered, axis=-1, keepdims=True) + np.float32(eps))
        return centered * weight + bias


class LinearReusesItsOutputBuffer(NumpyBlasBackend):
    """One preallocated result per shape, returned by every call of that shape."""

    def linear(self, x, weight, bias=None):
        buffers = self.__dict__.setdefault("buffers", {})
        out = buffers.setdefault(
            (x.shape[0], weight.shape[0]), np.empty((x.shape[0], weight.shape[0]), np.float32)
        )
        np.matmul(x, weight.T, out=out)
        if bias is not None:
            out += bias
        return out


class EmbeddingReturnsAView(NumpyBlasBackend):
    """Consecutive ids are returned as a slice of the table: writing into the result changes the
    weights."""

    def embedding(self, table, ids):
        if len(ids) and np.array_equal(ids, np.arange(ids[0], ids[0] + len(ids))):
            return table[ids[0] : ids[0] + len(ids)]
        return table[ids]


class EmbeddingIdsAsInt16(NumpyBlasBackend):
    """Token ids narrowed to 16 bits: ids from 32768 on wrap around."""

    def embedding(self, table, ids):
        return table[np.asarray(ids).astype(np.int16)]


class LinearFlushesSubnormals(NumpyBlasBackend):
    """A kernel running with flush-to-zero: f16 subnormal weights (and products) become 0."""

    def linear(self, x, weight, bias=None):
        flushed = np.where(np.abs(weight) < F16_SMALLEST_NORMAL, np.float32(0), weight)
        return super().linear(x, flushed, bias)


class LinearLosesNaN(NumpyBlasBackend):
    """Weights cleaned with ``nan_to_num``: NaN becomes 0 and infinities the largest float."""

    def linear(self, x, weight, bias=None):
        return super().linear(x, np.nan_to_num(weight), bias)


class LinearRoundsActivationsToF16(NumpyBlasBackend):
    """Activations rounded to f16 before the product, as ggml does for f16 weights."""

    def linear(self, x, weight, bias=None):
        return super().linear(x.astype(np.float16).astype(np.float32), weight, bias)


class LinearSumsInAVaryingOrder(NumpyBlasBackend):
    """Every other call sums the products in reverse order (as thread timing can make happen)."""

    def linear(self, x, weight, bias=None):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls % 2:
            return super().linear(x, weight, bias)
        return super().linear(
            np.ascontiguousarray(x[:, ::-1]), np.ascontiguousarray(weight[:, ::-1]), bias
        )


class LinearSplitDropsTheRemainderRows(NumpyBlasBackend):
    """Rows split into ``n_threads`` equal shares of ``rows // n_threads``; the remainder is lost."""

    def linear(self, x, weight, bias=None):
        y = np.zeros((x.shape[0], weight.shape[0]), np.float32)
        share = weight.shape[0] // self.n_threads or weight.shape[0]
        for start in range(0, share * self.n_threads, share):
            y[:, start : start + share] = x @ weight[start : start + share].T
        if bias is not None:
            y += bias
        return y


class LinearSkipsThePartialRowBlock(NumpyBlasBackend):
    """Row blocks of 1024 rows; a last block shorter than that is never computed."""

    def linear(self, x, weight, bias=None):
        y = np.zeros((x.shape[0], weight.shape[0]), np.float32)
        n_full = weight.shape[0] // 1024 * 1024 if weight.shape[0] >= 1024 else weight.shape[0]
        for start in range(0, n_full, 1024):
            y[:, start : start + 1024] = x @ weight[start : start + 1024].T
        if bias is not None:
            y += bias
        return y


class GeluTanhThroughExp(NumpyBlasBackend):
    """``tanh(z) = (exp(2z) - 1) / (exp(2z) + 1)``: inf / inf for large inputs."""

    def gelu(self, x):
        z = np.float32(np.sqrt(2.0 / np.pi)) * (x + np.float32(0.044715) * x * x * x)
        with np.errstate(over="ignore", invalid="ignore"):
            e = np.exp(2 * z)
            return (0.5 * x * (1 + (e - 1) / (e + 1))).astype(np.float32)
