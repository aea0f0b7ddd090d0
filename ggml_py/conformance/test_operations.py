"""Every backend operation against a float64 NumPy reference.

Tolerances (``out`` is the backend's float32 result, ``ref`` the float64 reference):

- ``embedding``: exactly the decoded values (decoding f16 and the block formats is exact in
  float32);
- ``linear``: ``|out - ref| <= 1e-5 * (|x| @ |W|.T + |b|)``, i.e. float32 accumulation error
  relative to the sum of absolute products; exact when each output is a single product;
- ``layer_norm``: ``rtol = atol = 1e-5``; ``gelu``: ``rtol = 1e-5, atol = 1e-6``;
- ``attention``: ``rtol = 1e-5, atol = 1e-5 * max|v|``.

Weights arrive as read-only, deliberately misaligned byte views, like tensors of a legacy ggml
file.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from ggml_py.conformance import reference
from ggml_py.formats.quant import QUANTIZED_TYPES, GGMLType

ALL_TYPES = (GGMLType.F32, GGMLType.F16, *QUANTIZED_TYPES)
# (rows, columns): one row; several 32-blocks; a tall matrix that spans many cache-sized row
# blocks with a ragged end
SHAPES = [(1, 64), (3, 96), (1537, 256)]
# float types also take any row length
ODD_SHAPES = [(5, 33), (2, 1), (40, 7)]


def _prepare(backend, **records):
    handles = backend.prepare("<conformance>", records)
    assert set(handles) == set(records)
    return handles


def _rng(*key) -> np.random.Generator:
    """A generator seeded by the test's parameters, the same in every run."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _check_float32(out, shape):
    assert isinstance(out, np.ndarray) and out.dtype == np.float32, type(out)
    assert out.shape == shape


@pytest.mark.parametrize("ggml_type", ALL_TYPES, ids=lambda t: t.short_name)
@pytest.mark.parametrize("misalign", [0, 1, 2])
def test_embedding_returns_the_decoded_rows(conformance_backend, ggml_type, misalign):
    rng = _rng(ggml_type, misalign)
    shapes = [(70, 64)] + ([(9, 33)] if ggml_type in (GGMLType.F32, GGMLType.F16) else [])
    for n_rows, n_cols in shapes:
        record = reference.tensor_info(
            "table", rng.standard_normal((n_rows, n_cols)), ggml_type, misalign
        )
        table = _prepare(conformance_backend, table=record)["table"]
        expected = reference.decoded(record)
        for ids in ([0, n_rows - 1, 5, 5], [3]):
            out = conformance_backend.embedding(table, np.array(ids, dtype=np.int64))
            _check_float32(out, (len(ids), n_cols))
            np.testing.assert_array_equal(out, expected[ids])


def _assert_linear_close(out, x, w, b):
    ref = reference.linear(x, w, b)
    bound = 1e-5 * (np.abs(x.astype(np.float64)) @ np.abs(w).T + (0 if b is None else np.abs(b)))
    excess = np.abs(out - ref) - bound
    assert excess.max() <= 0, (
        f"max error {np.abs(out - ref).max():.3g} exceeds the bound by {excess.max():.3g}"
    )


@pytest.mark.parametrize(
    "ggml_type, shape",
    [
        *[(t, shape) for t in ALL_TYPES for shape in SHAPES],
        *[(t, shape) for t in (GGMLType.F32, GGMLType.F16) for shape in ODD_SHAPES],
    ],
    ids=lambda p: p.short_name if isinstance(p, GGMLType) else str(p),
)
def test_linear_matches_float64(conformance_backend, ggml_type, shape):
    rng = _rng(ggml_type, *shape)
    n_out, n_in = shape
    for misalign, n_tokens, with_bias in ((0, 1, True), (1, 5, False), (2, 17, True), (3, 2, True)):
        record = reference.tensor_info("w", rng.standard_normal(shape), ggml_type, misalign)
        bias_record = reference.tensor_info("b", rng.standard_normal(n_out), GGMLType.F32, misalign)
        handles = _prepare(conformance_backend, w=record, b=bias_record)
        x = rng.standard_normal((n_tokens, n_in)).astype(np.float32)
        bias = handles["b"] if with_bias else None
        out = conformance_backend.linear(x, handles["w"], bias)
        _check_float32(out, (n_tokens, n_out))
        _assert_linear_close(
            out, x, reference.decoded(record), reference.decoded(bias_record) if with_bias else None
        )


@pytest.mark.parametrize("ggml_type", [GGMLType.F32, GGMLType.F16], ids=lambda t: t.short_name)
def test_linear_is_exact_for_single_products_of_extreme_values(conformance_backend, ggml_type):
    # one-hot activations pick single weights: every f16 subtlety (subnormals, the largest finite
    # values, values just off a power of two) must survive decoding exactly
    special = np.array(
        [
            0.0,
            -0.0,
            1.0,
            -2.5,
            65504.0,
            -65504.0,
            6e-08,
            -6.1e-05,
            3.05e-05,
            1e-3,
            0.33325,
            -1.0009765625,
        ],
        dtype=np.float16,
    ).astype(np.float32)
    w = np.stack([np.roll(special, i) for i in range(5)])  # [5, 12]
    record = reference.tensor_info("w", w, ggml_type, misalign=1)
    handle = _prepare(conformance_backend, w=record)["w"]
    x = np.eye(w.shape[1], dtype=np.float32)  # [12, 12]
    out = conformance_backend.linear(x, handle)
    np.testing.assert_array_equal(out, w.T)


@pytest.mark.parametrize("ggml_type", ALL_TYPES, ids=lambda t: t.short_name)
@pytest.mark.parametrize("magnitude", [3e5, 1e30])
@pytest.mark.parametrize("n_tokens", [1, 3])  # decoding and prompt paths may differ
def test_linear_handles_huge_activations(conformance_backend, ggml_type, magnitude, n_tokens):
    rng = _rng("huge", ggml_type, magnitude, n_tokens)
    record = reference.tensor_info("w", rng.standard_normal((40, 64)), ggml_type, misalign=2)
    handle = _prepare(conformance_backend, w=record)["w"]
    x = (magnitude * rng.standard_normal((n_tokens, 64))).astype(np.float32)
    out = conformance_backend.linear(x, handle)
    assert np.isfinite(out).all()
    _assert_linear_close(out, x, reference.decoded(record), None)


def test_linear_does_not_depend_on_thread_count(conformance_make_backend):
    rng = _rng("threads")
    w = rng.standard_normal((777, 128))
    x = rng.standard_normal((3, 128)).astype(np.float32)
    results = []
    for n_threads in (1, 3):
        backend = conformance_make_backend(n_threads)
        handles = _prepare(
            backend,
            **{
                f"w_{t.short_name}": reference.tensor_info("w", w, t, 1)
                for t in (GGMLType.F16, GGMLType.Q8_0)
            },
        )
        results.append({name: backend.linear(x, handle) for name, handle in handles.items()})
        repeat = {name: backend.linear(x, handle) for name, handle in handles.items()}
        for name in handles:
            np.testing.assert_array_equal(results[-1][name], repeat[name])  # deterministic
    for name, out in results[0].items():
        np.testing.assert_allclose(results[1][name], out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 64), (5, 7), (3, 4096)], ids=str)
@pytest.mark.parametrize("eps", [1e-5, 1e-2])
def test_layer_norm_matches_float64(conformance_backend, shape, eps):
    rng = _rng("ln", *shape)
    x = (5.0 + 3.0 * rng.standard_normal(shape)).astype(np.float32)
    weight = reference.tensor_info("w", 1.0 + 0.5 * rng.standard_normal(shape[1]), GGMLType.F32, 1)
    bias = reference.tensor_info("b", rng.standard_normal(shape[1]), GGMLType.F32, 2)
    handles = _prepare(conformance_backend, w=weight, b=bias)
    x_before = x.copy()
    out = conformance_backend.layer_norm(x, handles["w"], handles["b"], eps)
    _check_float32(out, shape)
    np.testing.assert_array_equal(x, x_before)  # the input is left alone
    expected = reference.layer_norm(x, reference.decoded(weight), reference.decoded(bias), eps)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(1,), (3, 256), (2, 3, 5)], ids=str)
def test_gelu_matches_float64(conformance_backend, shape):
    rng = _rng("gelu", *shape)
    x = rng.uniform(-15, 15, size=shape).astype(np.float32)
    x.reshape(-1)[:1] = 0.0
    x_before = x.copy()
    out = conformance_backend.gelu(x)
    _check_float32(out, shape)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_allclose(out, reference.gelu(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "n_head, n_query, n_key, head_dim",
    [(1, 1, 1, 1), (4, 1, 9, 16), (4, 5, 5, 8), (3, 4, 11, 7), (2, 33, 40, 64)],
)
@pytest.mark.parametrize("sharpness", [1.0, 30.0])
def test_attention_matches_float64(
    conformance_backend, n_head, n_query, n_key, head_dim, sharpness
):
    rng = _rng("attention", n_head, n_query, n_key, head_dim, int(sharpness))
    q = (sharpness * rng.standard_normal((n_head, n_query, head_dim))).astype(np.float32)
    # keys and values arrive as the graph passes them: [H, S, D] views of a longer
    # position-major cache [positions, H, D]
    cache = rng.standard_normal((2, n_key + 6, n_head, head_dim)).astype(np.float32)
    k, v = cache[0, :n_key].transpose(1, 0, 2), cache[1, :n_key].transpose(1, 0, 2)
    out = conformance_backend.attention(q, k, v)
    _check_float32(out, (n_head, n_query, head_dim))
    assert np.isfinite(out).all()
    expected = reference.attention(q, k, v)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * np.abs(v).max())


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
    np.testing.assert_array_equal(after[:, :2], before[:, :2])
    assert not np.allclose(after[:, 2], before[:, 2])
