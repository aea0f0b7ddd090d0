"""Every backend operation against a float64 NumPy reference, and the output contract.

Tolerances (``out`` is the backend's float32 result, ``ref`` the float64 reference):

- ``embedding``: exactly the decoded values (decoding f16 and the block formats is exact in
  float32), infinities and NaN included;
- ``linear``: ``|out - ref| <= 1e-5 * (|x| @ |W|.T + |b|)``, i.e. float32 accumulation error
  relative to the sum of absolute products; exact when each output is a single product;
  non-finite exactly where ``ref`` is (an infinite or NaN weight reaches every output it feeds);
- ``layer_norm``: ``rtol = atol = 1e-5``; ``gelu``: ``rtol = 1e-5, atol = 1e-6``;
- ``attention``: ``rtol = 1e-5, atol = 1e-5 * max|v|``, finite for any scores.

Every result must be a new, writable, C-contiguous float32 array of the documented shape that
shares no memory with the inputs or with the backend's state, the inputs must be left unchanged,
and calling again with the same inputs must give the same bits (``_call``).

The sizes reach where backends split work: token counts 1, 2, 33, 70 and 257, attention over up
to 2048 cached positions, embedding tables of 50400 rows, and matrices that span several row
blocks of the shipped blocked backend (2**20 elements each, cut unevenly between 1 to 4
threads) as square, tall and wide shapes. Weights arrive as read-only byte views at odd offsets,
as tensors of a legacy ggml file do. Edge cases are constructed, not left to random luck:
softmax scores that overflow ``exp`` or underflow it, masked keys far above the visible ones,
f16 subnormal weights and scales, infinite and NaN weights.
"""

from __future__ import annotations

import functools
import zlib

import numpy as np
import pytest

from ggml_py.conformance import reference
from ggml_py.formats.quant import QUANTIZED_TYPES, GGMLType, row_nbytes

ALL_TYPES = (GGMLType.F32, GGMLType.F16, *QUANTIZED_TYPES)
FLOAT_TYPES = (GGMLType.F32, GGMLType.F16)
TOKEN_COUNTS = [1, 2, 33, 70, 257]
THREAD_COUNTS = [1, 2, 3, 4]
# (rows, columns) spanning several blocks of 2**20 elements, none of them evenly, with row
# counts that 3 threads cannot share evenly: square (963 + 125 rows), tall (3 * 1024 + 5 rows)
# and wide (3 + 3 + 3 + 1 rows of 262176 columns)
ROW_BLOCK_SHAPES = {"square": (1088, 1088), "tall": (3077, 1024), "wide": (10, 262176)}


def _type_name(ggml_type) -> str:
    return GGMLType(ggml_type).short_name


def _rng(*key) -> np.random.Generator:
    """A generator seeded by the test's parameters, the same in every run."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _prepare(backend, **tensors):
    handles = backend.prepare("<conformance>", tensors)
    assert set(handles) == set(tensors), (
        f"prepare returned handles for {sorted(handles)}, not {sorted(tensors)}"
    )
    return handles


def _call(where: str, operation, *args, shape, inputs=(), thorough=True) -> np.ndarray:
    """``operation(*args)`` with the output contract checked; ``where`` names the call in messages.

    A second call with the same inputs must give the same bits in new memory. ``thorough``: a
    third call after overwriting the second result must still give them (the result must not be
    the backend's weights or cache).
    """
    before = [np.array(a, copy=True) for a in inputs]
    out = operation(*args)
    assert isinstance(out, np.ndarray), f"{where}: returned {type(out).__name__}, not a NumPy array"
    assert out.dtype == np.float32, f"{where}: returned {out.dtype}, not float32"
    assert out.shape == shape, f"{where}: returned shape {out.shape}, not {shape}"
    assert out.flags.c_contiguous, (
        f"{where}: the result is not C-contiguous (strides {out.strides})"
    )
    assert out.flags.writeable, f"{where}: the result is read-only (the graph writes into results)"
    for index, (array, copy) in enumerate(zip(inputs, before, strict=True)):
        assert not np.shares_memory(out, array), (
            f"{where}: the result shares memory with input {index}"
        )
        assert np.array_equal(array, copy, equal_nan=True), (
            f"{where}: the call modified input {index}"
        )
    again = operation(*args)
    assert not np.shares_memory(out, again), f"{where}: two calls returned the same memory"
    _assert_same_bits(where, out, again, "two identical calls")
    if thorough:
        again[...] = np.nan
        _assert_same_bits(where, out, operation(*args), "a call after overwriting a result")
    return out


def _assert_same_bits(where, first, second, what):
    if first.tobytes() != second.tobytes():
        differ = first.view(np.uint32) != second.view(np.uint32)
        index = tuple(int(i) for i in np.argwhere(differ)[0])
        raise AssertionError(
            f"{where}: {what} gave different results ({differ.sum()} values differ; at {index}: "
            f"{first[index]!r} and {second[index]!r})"
        )


def _assert_close(where, out, ref, tolerance):
    """``|out - ref| <= tolerance`` elementwise; non-finite exactly where ``ref`` is."""
    ref = np.asarray(ref, dtype=np.float64)
    tolerance = np.broadcast_to(np.asarray(tolerance, dtype=np.float64), ref.shape)
    finite = np.isfinite(ref)
    wrong = np.isfinite(out) != finite
    if wrong.any():
        index = tuple(int(i) for i in np.argwhere(wrong)[0])
        raise AssertionError(
            f"{where}: {wrong.sum()} values are finite where the reference is not or the reverse; "
            f"at {index}: {out[index]!r}, reference {ref[index]!r}"
        )
    error = np.where(finite, np.abs(out - np.where(finite, ref, 0)), 0.0)
    excess = error - tolerance
    index = np.unravel_index(np.argmax(excess), excess.shape)
    assert excess[index] <= 0, (
        f"{where}: max |error| {error.max():.3g}; worst at {tuple(int(i) for i in index)}: "
        f"{out[index]!r}, reference {ref[index]!r}, allowed {tolerance[index]:.3g}"
    )


def _linear_where(x, tensor, with_bias, n_threads=None):
    threads = "" if n_threads is None else f", {n_threads} threads"
    return (
        f"linear(x [{x.shape[0]}, {x.shape[1]}], W {_type_name(tensor.type)} {list(tensor.shape)} "
        f"{'+ bias' if with_bias else 'no bias'}{threads})"
    )


def _linear_reference(x, tensor, bias_tensor=None, w=None):
    """The float64 result and the allowed error of ``linear`` for these inputs (``w``: the
    tensor's decoded values, when the caller already has them)."""
    w = reference.decoded(tensor) if w is None else w
    b = None if bias_tensor is None else reference.decoded(bias_tensor)
    with np.errstate(invalid="ignore", over="ignore"):
        bound = 1e-5 * (
            np.abs(x.astype(np.float64)) @ np.abs(w).T + (0 if b is None else np.abs(b))
        )
    return reference.linear(x, w, b), np.where(np.isfinite(bound), bound, 0)


def _check_linear(
    backend, x, tensor, bias_tensor=None, n_threads=None, thorough=True, expected=None
):
    """``expected``: :func:`_linear_reference`'s result, when the caller already has it."""
    handles = _prepare(backend, w=tensor, **({"b": bias_tensor} if bias_tensor is not None else {}))
    where = _linear_where(x, tensor, bias_tensor is not None, n_threads)
    out = _call(
        where, backend.linear, x, handles["w"], handles.get("b"),
        shape=(x.shape[0], tensor.shape[0]), inputs=[x], thorough=thorough,
    )  # fmt: skip
    ref, bound = expected if expected is not None else _linear_reference(x, tensor, bias_tensor)
    _assert_close(where, out, ref, bound)
    return out


# --- embedding -------------------------------------------------------------------------------


def _check_embedding(backend, tensor, ids, what=""):
    table = _prepare(backend, table=tensor)["table"]
    ids = np.asarray(ids, dtype=np.int64)
    where = f"embedding(table {_type_name(tensor.type)} {list(tensor.shape)}{what}, {len(ids)} ids)"
    out = _call(
        where, backend.embedding, table, ids, shape=(len(ids), tensor.shape[1]), inputs=[ids]
    )
    expected = reference.decoded(tensor)[ids].astype(np.float32)
    if not np.array_equal(out, expected, equal_nan=True):
        wrong = ~((out == expected) | (np.isnan(out) & np.isnan(expected)))
        row, column = (int(i) for i in np.argwhere(wrong)[0])
        raise AssertionError(
            f"{where}: {wrong.sum()} values differ from the decoded rows; row {row} (id {ids[row]}), "
            f"column {column}: {out[row, column]!r}, decoded {expected[row, column]!r}"
        )


@pytest.mark.parametrize("ggml_type", ALL_TYPES, ids=_type_name)
@pytest.mark.parametrize("misalign", [0, 1, 3])
def test_embedding_returns_the_decoded_rows(conformance_backend, ggml_type, misalign):
    rng = _rng(ggml_type, misalign)
    shapes = [(70, 64)] + ([(9, 33)] if ggml_type in FLOAT_TYPES else [])
    for n_rows, n_cols in shapes:
        values = rng.standard_normal((n_rows, n_cols))
        tensor = reference.tensor_info("table", values, ggml_type, misalign)
        for ids in ([0, n_rows - 1, 5, 5], [3]):
            _check_embedding(conformance_backend, tensor, ids, f" at byte offset {misalign}")


@functools.cache
def _large_table(ggml_type):
    values = _rng("large table").standard_normal((50400, 32)).astype(np.float32)
    return reference.tensor_info("table", values, ggml_type, misalign=1)


@pytest.mark.parametrize("ggml_type", ALL_TYPES, ids=_type_name)
def test_embedding_of_a_table_of_50400_rows(conformance_backend, ggml_type):
    # ids beyond 255, 32767 and 32768 (8- and 16-bit indices), the last row, repeats, one id
    ids = [0, 50399, 256, 32767, 32768, 40000, 255, 50399, 1000, 65535 - 50400]
    _check_embedding(conformance_backend, _large_table(ggml_type), ids)
    _check_embedding(conformance_backend, _large_table(ggml_type), [45678])


# --- linear ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ggml_type, shape",
    [
        *[(t, shape) for t in ALL_TYPES for shape in [(1, 64), (3, 96), (1537, 256)]],
        *[(t, shape) for t in FLOAT_TYPES for shape in [(5, 33), (2, 1), (40, 7)]],
    ],
    ids=lambda p: _type_name(p) if isinstance(p, GGMLType) else str(p),
)
def test_linear_matches_float64(conformance_backend, ggml_type, shape):
    rng = _rng(ggml_type, *shape)
    n_out, n_in = shape
    for misalign, n_tokens, with_bias in ((0, 1, True), (1, 5, False), (2, 17, True), (3, 2, True)):
        tensor = reference.tensor_info("w", rng.standard_normal(shape), ggml_type, misalign)
        bias = reference.tensor_info("b", rng.standard_normal(n_out), GGMLType.F32, misalign)
        x = rng.standard_normal((n_tokens, n_in)).astype(np.float32)
        _check_linear(conformance_backend, x, tensor, bias if with_bias else None)


@pytest.mark.parametrize("ggml_type", ALL_TYPES, ids=_type_name)
@pytest.mark.parametrize("shape", [(96, 96), (40, 160)], ids=["square", "non-square"])
@pytest.mark.parametrize("n_tokens", TOKEN_COUNTS)
def test_linear_for_token_counts_past_every_chunk_size(
    conformance_backend, ggml_type, shape, n_tokens
):
    rng = _rng("tokens", ggml_type, shape, n_tokens)
    tensor = reference.tensor_info("w", rng.standard_normal(shape), ggml_type, misalign=1)
    bias = reference.tensor_info("b", rng.standard_normal(shape[0]), GGMLType.F32, misalign=3)
    x = rng.standard_normal((n_tokens, shape[1])).astype(np.float32)
    _check_linear(conformance_backend, x, tensor, bias)


@functools.cache
def _row_block_values(shape_name):
    """The same values for every type (about 27 MB for the three shapes)."""
    return _rng("row blocks", shape_name).standard_normal(
        ROW_BLOCK_SHAPES[shape_name], dtype=np.float32
    )


@pytest.mark.parametrize("ggml_type", ALL_TYPES, ids=_type_name)
@pytest.mark.parametrize("shape_name", list(ROW_BLOCK_SHAPES))
def test_linear_over_many_row_blocks_with_1_to_4_threads(
    conformance_make_backend, ggml_type, shape_name
):
    tensor = reference.tensor_info("w", _row_block_values(shape_name), ggml_type, misalign=3)
    rng = _rng("row block x", shape_name, ggml_type)
    bias = reference.tensor_info(
        "b", rng.standard_normal(tensor.shape[0]), GGMLType.F32, misalign=1
    )
    w = reference.decoded(tensor)
    for n_tokens in (1, 3):  # decoding and prompt paths may differ
        x = rng.standard_normal((n_tokens, tensor.shape[1])).astype(np.float32)
        expected = _linear_reference(x, tensor, bias, w)
        for n_threads in THREAD_COUNTS:
            backend = conformance_make_backend(n_threads)
            _check_linear(backend, x, tensor, bias, n_threads, thorough=False, expected=expected)


def _one_hot_exactness(backend, tensor):
    """Each output a single product: ``x`` = rows of the identity, all at once and one by one."""
    handle = _prepare(backend, w=tensor)["w"]
    w = reference.decoded(tensor).astype(np.float32)
    n_in = tensor.shape[1]
    identity = np.eye(n_in, dtype=np.float32)
    cases = [(identity, slice(None))] + [
        (identity[i : i + 1], slice(i, i + 1)) for i in range(n_in)
    ]
    for x, columns in cases:
        where = f"linear(x one-hot [{x.shape[0]}, {n_in}], W {_type_name(tensor.type)} {list(tensor.shape)})"
        out = _call(
            where, backend.linear, x, handle, None, shape=(x.shape[0], tensor.shape[0]), inputs=[x]
        )
        expected = w.T[columns]
        if not np.array_equal(out, expected):
            row, column = (int(i) for i in np.argwhere(out != expected)[0])
            raise AssertionError(
                f"{where}: a single product is not exact: W[{column}, {row + (columns.start or 0)}] "
                f"gave {out[row, column]!r}, expected {expected[row, column]!r}"
            )


# f16 values that must survive decoding: signed zeros, the largest finite, subnormals (the
# smallest is 2**-24), the smallest normal, values just off a power of two
F16_SPECIAL = [0.0, -0.0, 1.0, -2.5, 65504.0, -65504.0, 2.0**-24, -(2.0**-24), 6e-08, -6.1e-05,
               3.05e-05, 2.0**-14, 1e-3, 0.33325, -1.0009765625, 2047 * 2.0**-24]  # fmt: skip


@pytest.mark.parametrize("ggml_type", ALL_TYPES, ids=_type_name)
def test_linear_is_exact_for_single_products_of_subnormal_and_extreme_values(
    conformance_backend, ggml_type
):
    if ggml_type in FLOAT_TYPES:
        special = np.array(F16_SPECIAL, dtype=np.float16).astype(np.float32)
        w = np.stack([np.roll(special, i) for i in range(5)])  # [5, 16]
        w = np.concatenate([w, w], axis=1)  # [5, 32]
    else:
        # rows of tiny values: every block's f16 scale d (and q4_1/q5_1's minimum m) is subnormal
        rng = _rng("subnormal scales", ggml_type)
        w = rng.standard_normal((4, 64)) * np.array([[3e-5], [1e-6], [1.0], [1e3]])
    tensor = reference.tensor_info("w", w, ggml_type, misalign=1)
    _one_hot_exactness(conformance_backend, tensor)
    _check_embedding(
        conformance_backend, tensor, list(range(tensor.shape[0])), " of f16 subnormals"
    )


def _with_non_finite_weights(ggml_type, shape, misalign):
    """A matrix whose row 1 holds +inf, row 2 -inf, row 3 NaN (for block formats: in a block's
    scale ``d``, row 4 a NaN minimum ``m`` for q4_1/q5_1); the other rows finite."""
    values = _rng("non-finite", ggml_type).standard_normal(shape)
    if ggml_type in FLOAT_TYPES:
        values[1, 3], values[2, 5], values[3, 7] = np.inf, -np.inf, np.nan
        return reference.tensor_info("w", values, ggml_type, misalign)
    tensor = reference.tensor_info("w", values, ggml_type, misalign)
    raw = np.array(tensor.data).reshape(shape[0], -1)  # [rows, row bytes]
    block_bytes = row_nbytes(ggml_type, 32)
    fields = [(1, 0, np.inf), (2, 0, -np.inf), (3, 0, np.nan)]
    if ggml_type in (GGMLType.Q4_1, GGMLType.Q5_1):
        fields.append((4, 2, np.nan))  # m follows d
    for row, field, value in fields:
        start = block_bytes + field  # the second block of the row
        raw[row, start : start + 2] = np.array([value], dtype="<f2").view(np.uint8)
    buffer = np.zeros(raw.size + misalign, dtype=np.uint8)
    buffer[misalign:] = raw.reshape(-1)
    data = buffer[misalign:]
    data.flags.writeable = False
    return tensor._replace(data=data)


@pytest.mark.parametrize("ggml_type", ALL_TYPES, ids=_type_name)
@pytest.mark.parametrize("n_tokens", [1, 3])
def test_infinite_and_nan_weights_reach_their_outputs(conformance_backend, ggml_type, n_tokens):
    tensor = _with_non_finite_weights(ggml_type, (6, 64), misalign=1)
    # positive activations: +inf weights give +inf, -inf give -inf, NaN gives NaN
    x = _rng("positive x", n_tokens).uniform(0.5, 2.0, (n_tokens, 64)).astype(np.float32)
    with np.errstate(invalid="ignore"):
        _check_linear(conformance_backend, x, tensor)
        _check_embedding(conformance_backend, tensor, [0, 1, 2, 3, 4, 5], " with inf and NaN")


@pytest.mark.parametrize("ggml_type", ALL_TYPES, ids=_type_name)
@pytest.mark.parametrize("magnitude", [3e5, 1e30])
@pytest.mark.parametrize("n_tokens", [1, 3])  # decoding and prompt paths may differ
def test_linear_handles_huge_activations(conformance_backend, ggml_type, magnitude, n_tokens):
    rng = _rng("huge", ggml_type, magnitude, n_tokens)
    tensor = reference.tensor_info("w", rng.standard_normal((40, 64)), ggml_type, misalign=2)
    x = (magnitude * rng.standard_normal((n_tokens, 64))).astype(np.float32)
    _check_linear(conformance_backend, x, tensor)


# --- layer_norm, gelu ------------------------------------------------------------------------


def _check_layer_norm(backend, x, eps, n_threads=None):
    rng = _rng("ln weights", x.shape[1])
    weight = reference.tensor_info(
        "w", 1.0 + 0.5 * rng.standard_normal(x.shape[1]), GGMLType.F32, 1
    )
    bias = reference.tensor_info("b", rng.standard_normal(x.shape[1]), GGMLType.F32, 2)
    handles = _prepare(backend, w=weight, b=bias)
    threads = "" if n_threads is None else f", {n_threads} threads"
    where = f"layer_norm(x {list(x.shape)}, eps {eps}{threads})"
    out = _call(
        where, backend.layer_norm, x, handles["w"], handles["b"], eps, shape=x.shape, inputs=[x]
    )
    expected = reference.layer_norm(x, reference.decoded(weight), reference.decoded(bias), eps)
    _assert_close(where, out, expected, 1e-5 + 1e-5 * np.abs(expected))


@pytest.mark.parametrize("shape", [(1, 64), (5, 7), (3, 4096), (257, 96)], ids=str)
@pytest.mark.parametrize("eps", [1e-5, 1e-2])
def test_layer_norm_matches_float64(conformance_backend, shape, eps):
    x = (5.0 + 3.0 * _rng("ln", *shape).standard_normal(shape)).astype(np.float32)
    _check_layer_norm(conformance_backend, x, eps)


def _check_gelu(backend, x, n_threads=None):
    threads = "" if n_threads is None else f", {n_threads} threads"
    where = f"gelu(x {list(x.shape)}{threads})"
    out = _call(where, backend.gelu, x, shape=x.shape, inputs=[x])
    expected = reference.gelu(x)
    _assert_close(where, out, expected, 1e-6 + 1e-5 * np.abs(expected))


@pytest.mark.parametrize("shape", [(1,), (3, 256), (2, 3, 5), (257, 97)], ids=str)
def test_gelu_matches_float64(conformance_backend, shape):
    x = _rng("gelu", *shape).uniform(-15, 15, size=shape).astype(np.float32)
    x.reshape(-1)[:1] = 0.0
    _check_gelu(conformance_backend, x)


def test_gelu_of_huge_inputs(conformance_backend):
    # x**3 overflows float32 from about 7e12, exp(2x) from 44: gelu is x or 0 there, never NaN
    magnitudes = np.array([10.0, 44.5, 100.0, 1e4, 1e13, 1e20, 1e30], dtype=np.float32)
    with np.errstate(over="ignore"):  # a backend's float32 x**3 may overflow on the way
        _check_gelu(conformance_backend, np.concatenate([magnitudes, -magnitudes])[None, :])


# --- attention -------------------------------------------------------------------------------


def _check_attention(backend, q, cache, n_key, n_threads=None, what=""):
    """``cache``: ``[2, positions, H, D]``; keys and values are its first ``n_key`` positions as
    the graph passes them, ``[H, S, D]`` views of the position-major cache."""
    k, v = cache[0, :n_key].transpose(1, 0, 2), cache[1, :n_key].transpose(1, 0, 2)
    threads = "" if n_threads is None else f", {n_threads} threads"
    n_head, n_query, head_dim = q.shape
    where = f"attention(H {n_head}, T {n_query}, S {n_key}, D {head_dim}{what}{threads})"
    out = _call(where, backend.attention, q, k, v, shape=q.shape, inputs=[q, k, v])
    expected = reference.attention(q, k, v)
    _assert_close(where, out, expected, 1e-5 * np.abs(v).max() + 1e-5 * np.abs(expected))
    return out


def _random_attention(key, n_head, n_query, n_key, head_dim, sharpness=1.0):
    rng = _rng("attention", key, n_head, n_query, n_key, head_dim, sharpness)
    q = (sharpness * rng.standard_normal((n_head, n_query, head_dim))).astype(np.float32)
    cache = rng.standard_normal((2, n_key + 6, n_head, head_dim)).astype(np.float32)
    return q, cache


@pytest.mark.parametrize(
    "n_head, n_query, n_key, head_dim",
    [(1, 1, 1, 1), (4, 1, 9, 16), (4, 5, 5, 8), (3, 4, 11, 7), (2, 33, 40, 64), (4, 1, 65, 16),
     (2, 70, 70, 32), (3, 2, 257, 16), (2, 257, 257, 8), (2, 1, 2048, 64), (2, 33, 2048, 16)],
)  # fmt: skip
@pytest.mark.parametrize("sharpness", [1.0, 30.0])
def test_attention_matches_float64(
    conformance_backend, n_head, n_query, n_key, head_dim, sharpness
):
    q, cache = _random_attention("float64", n_head, n_query, n_key, head_dim, sharpness)
    _check_attention(conformance_backend, q, cache, n_key)


def _ladder_attention(n_query, n_key, step, offset=0.0, future_boost=0.0):
    """Scores ``offset + step * rank`` with distinct ranks per key (so one key wins by ``step``),
    plus ``future_boost`` for the keys only the last query sees."""
    n_head, head_dim = 2, 16
    q = np.zeros((n_head, n_query, head_dim), np.float32)
    q[:, :, 0] = np.sqrt(head_dim)  # score = k[..., 0] + k[..., 1]
    q[:, :, 1] = np.sqrt(head_dim)
    cache = (
        _rng("ladder", n_query, n_key)
        .standard_normal((2, n_key, n_head, head_dim))
        .astype(np.float32)
    )
    ranks = np.stack([_rng("ranks", h).permutation(n_key) for h in range(n_head)], axis=1)  # [S, H]
    cache[0, :, :, 0] = step * ranks
    cache[0, :, :, 1] = offset
    cache[0, n_key - n_query + 1 :, :, 1] += future_boost
    return q, cache


@pytest.mark.parametrize(
    "case, n_query, n_key, step, offset, future_boost",
    [("overflowing exp", 1, 70, 100.0, 0.0, 0.0), ("overflowing exp", 4, 70, 100.0, 0.0, 0.0),
     ("underflowing exp", 1, 70, 100.0, -1e5, 0.0), ("underflowing exp", 4, 70, 100.0, -1e5, 0.0),
     ("masked keys far above the visible ones", 4, 70, 1.0, 0.0, 1e4)],
)  # fmt: skip
def test_softmax_of_extreme_scores(
    conformance_backend, case, n_query, n_key, step, offset, future_boost
):
    q, cache = _ladder_attention(n_query, n_key, step, offset, future_boost)
    _check_attention(conformance_backend, q, cache, n_key, what=f", {case}")


def test_attention_is_causal(conformance_backend):
    # changing a key the last query may see changes its output; earlier queries must not move
    rng = _rng("causal")
    q = rng.standard_normal((2, 3, 4)).astype(np.float32)
    k = rng.standard_normal((2, 5, 4)).astype(np.float32)
    v = rng.standard_normal((2, 5, 4)).astype(np.float32)
    before = conformance_backend.attention(q, k, v)
    k[:, 4] += 3.0
    v[:, 4] += 3.0
    after = conformance_backend.attention(q, k, v)
    assert np.array_equal(after[:, :2], before[:, :2]), "attention: a query saw a later position"
    assert not np.allclose(after[:, 2], before[:, 2]), (
        "attention: the last query ignored its last key"
    )


# --- threads ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n_threads", THREAD_COUNTS)
def test_every_operation_with_1_to_4_threads(conformance_make_backend, n_threads):
    # sizes that no thread count divides evenly
    backend = conformance_make_backend(n_threads)
    rng = _rng("threads", n_threads)
    for ggml_type in (GGMLType.F16, GGMLType.Q4_1):
        tensor = reference.tensor_info("w", rng.standard_normal((101, 64)), ggml_type, misalign=1)
        _check_embedding(backend, tensor, rng.integers(0, 101, 70))
        _check_linear(
            backend, rng.standard_normal((7, 64)).astype(np.float32), tensor, n_threads=n_threads
        )
    x = (1.0 + rng.standard_normal((70, 97))).astype(np.float32)
    _check_layer_norm(backend, x, 1e-5, n_threads)
    _check_gelu(backend, x, n_threads)
    q, cache = _random_attention("threads", 3, 7, 70, 16)
    _check_attention(backend, q, cache, 70, n_threads)
