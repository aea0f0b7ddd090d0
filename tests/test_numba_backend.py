"""The ``numba`` backend's own promises: its fast kernel against the plain loops and against
float64, infinities and NaN carried through, weights left in the file, the compile announced once
and cached, and a clean refusal when numba is missing or broken. (The conformance suite runs on it
from ``test_backend.py``.)"""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import REPO, needs_numba
from test_backend import _run
from test_model import byte_model_file, write_model_file

from ggml_py.backend import create_backend
from ggml_py.conformance import reference
from ggml_py.formats.quant import QUANTIZED_TYPES, GGMLType, dequantize, row_nbytes

ALL_TYPES = (GGMLType.F32, GGMLType.F16, *QUANTIZED_TYPES)


def _record(values, ggml_type, misalign):
    return reference.tensor_info("w", values, ggml_type, misalign)


def _products(record, x, n_threads=2):
    """(fast kernel, plain kernel, float64 of the decoded weights) for one token ``x``."""
    from ggml_py_backends import numba_kernels as kernels

    n_out, n_in = record.shape
    data = record.data
    block_sums = x.reshape(-1, 32).sum(axis=1) if n_in % 32 == 0 else np.zeros(0, np.float32)
    fast, plain = np.empty(n_out, np.float32), np.empty(n_out, np.float32)
    kernels.set_threads(n_threads)
    kernels.matvec(int(record.type), data, row_nbytes(record.type, n_in), x, block_sums, fast)
    kernels.matvec_reference(int(record.type), data, row_nbytes(record.type, n_in), x, plain)
    return fast, plain, reference.linear(x[None], reference.decoded(record))[0]


@needs_numba
@pytest.mark.parametrize("ggml_type", ALL_TYPES, ids=lambda t: t.short_name)
@pytest.mark.parametrize("shape", [(1, 32), (67, 96), (300, 2048)], ids=str)
def test_fast_kernel_matches_the_plain_loop_and_float64(ggml_type, shape):
    rng = np.random.default_rng([int(ggml_type), *shape])
    for misalign in (0, 1, 3):
        record = _record(rng.standard_normal(shape), ggml_type, misalign)
        x = rng.standard_normal(shape[1]).astype(np.float32)
        fast, plain, exact = _products(record, x)
        # float32 accumulation error relative to the sum of absolute products (the suite's bound)
        bound = 1e-5 * (np.abs(reference.decoded(record)) @ np.abs(x.astype(np.float64)))
        assert np.all(np.abs(plain - exact) <= bound)
        assert np.all(np.abs(fast - exact) <= bound)
        assert np.all(np.abs(fast - plain) <= bound)


@needs_numba
@pytest.mark.parametrize("ggml_type", [GGMLType.F32, GGMLType.F16], ids=lambda t: t.short_name)
def test_fast_kernel_takes_any_row_length_of_the_float_types(ggml_type):
    rng = np.random.default_rng(7)
    for n_in in (1, 7, 33, 129):
        record = _record(rng.standard_normal((5, n_in)), ggml_type, 1)
        x = rng.standard_normal(n_in).astype(np.float32)
        fast, plain, exact = _products(record, x)
        np.testing.assert_allclose(fast, exact, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(plain, exact, rtol=1e-6, atol=1e-6)


@needs_numba
@pytest.mark.parametrize("ggml_type", ALL_TYPES, ids=lambda t: t.short_name)
def test_decoders_give_dequantizes_values_bit_for_bit(ggml_type):
    # the plain loop and the vectorised row blocks of prompts, -0.0 and subnormals included
    from ggml_py_backends import numba_kernels as kernels

    rng = np.random.default_rng(int(ggml_type))
    values = rng.standard_normal((9, 64)) * np.logspace(-6, 4, 64)  # subnormal f16 to large
    values[0, :5] = [0.0, -0.0, 65504.0, -65504.0, 6e-8]
    values[1] *= -1e-7  # blocks of negative scale whose zero quants decode to -0.0
    record = _record(values, ggml_type, 3)
    row_bytes = row_nbytes(ggml_type, 64)
    plain, blocks = np.empty(record.shape, np.float32), np.empty((8, 64), np.float32)
    for row in range(record.shape[0]):
        kernels.decode_row(int(ggml_type), record.data, row * row_bytes, plain[row])
    kernels.decode_rows(int(ggml_type), record.data, row_bytes, 1, blocks)  # rows 1 .. 8
    expected = dequantize(record.data, ggml_type, record.shape).view(np.uint32)
    assert np.array_equal(plain.view(np.uint32), expected)
    assert np.array_equal(blocks.view(np.uint32), expected[1:])


@needs_numba
def test_every_half_widens_exactly():
    from ggml_py_backends import numba_kernels as kernels

    halves = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    raw = np.zeros(2 * halves.size + 1, np.uint8)
    raw[1:] = halves.view(np.uint8)  # misaligned by one byte
    out = np.empty(halves.size, np.float32)
    kernels.decode_row(int(GGMLType.F16), raw[1:], 0, out)
    expected = halves.view(np.float16).astype(np.float32)  # NumPy's own cast
    # the CPU's conversion (F16C, as in ggml) quiets signalling NaNs: still NaN, same payload
    signalling = np.isnan(expected) & (expected.view(np.uint32) & 0x00400000 == 0)
    assert signalling.sum() == 2 * 511
    quieted = expected.view(np.uint32) | np.where(signalling, 0x00400000, 0).astype(np.uint32)
    assert np.array_equal(out.view(np.uint32), quieted)


@needs_numba
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("ggml_type", [GGMLType.F32, GGMLType.F16], ids=lambda t: t.short_name)
def test_infinite_and_nan_weights_come_through_exactly(ggml_type):
    # fast-math without nnan/ninf: an infinite weight gives an infinite output of the right
    # sign, inf - inf and NaN give NaN, exactly where float64 arithmetic gives them
    w = np.random.default_rng(3).standard_normal((6, 256)).astype(np.float32)
    w[1, 17] = np.inf
    w[2, 200] = -np.inf
    w[3, [5, 99]] = [np.inf, -np.inf]
    w[4, 31] = np.nan
    record = _record(w, ggml_type, 1)
    x = np.abs(np.random.default_rng(4).standard_normal(256)).astype(np.float32) + 0.5
    fast, plain, exact = _products(record, x)
    assert exact[1] == np.inf and exact[2] == -np.inf and np.isnan(exact[3:5]).all()
    for out in (fast, plain):
        np.testing.assert_array_equal(out[1:5], exact[1:5])  # equal, NaN where NaN
        assert np.isfinite(out[[0, 5]]).all()


@needs_numba
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("ggml_type", QUANTIZED_TYPES, ids=lambda t: t.short_name)
def test_infinite_block_scales_give_non_finite_outputs(ggml_type):
    # a block whose scale d is infinite (or NaN) holds only non-finite weights: its row's output
    # must not be finite (d multiplies the block's dot product, so 0 * inf gives +-inf, not NaN)
    w = np.random.default_rng(5).standard_normal((3, 64)).astype(np.float32)
    record = _record(w, ggml_type, 2)
    raw = record.data.copy()
    row_bytes = row_nbytes(ggml_type, 64)
    raw[row_bytes : row_bytes + 2] = np.array([np.inf], np.float16).view(np.uint8)  # row 1, block 0
    raw[2 * row_bytes : 2 * row_bytes + 2] = np.array([np.nan], np.float16).view(np.uint8)  # row 2
    record = record._replace(data=raw)
    x = np.random.default_rng(6).standard_normal(64).astype(np.float32)
    fast, plain, exact = _products(record, x)
    assert np.isfinite(fast[0]) and not np.isfinite(exact[1:]).any()
    assert not np.isfinite(fast[1:]).any() and not np.isfinite(plain[1:]).any()


@needs_numba
def test_results_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(8)
    record = _record(rng.standard_normal((1001, 256)), GGMLType.Q4_1, 1)
    x = rng.standard_normal(256).astype(np.float32)
    one = _products(record, x, n_threads=1)[0]
    for n_threads in (2, 4):
        np.testing.assert_array_equal(_products(record, x, n_threads)[0], one)


@needs_numba
def test_weights_stay_the_file_bytes_for_one_token_and_for_prompts():
    rng = np.random.default_rng(9)
    record = _record(rng.standard_normal((40, 64)), GGMLType.Q8_0, 1)
    backend = create_backend("numba", n_threads=2)
    handle = backend.prepare("m.bin", {"w": record})["w"]
    assert np.shares_memory(handle.data, record.data)
    w = reference.decoded(record)
    for n_tokens in (1, 4):  # matvec, then row blocks decoded for BLAS
        x = rng.standard_normal((n_tokens, 64)).astype(np.float32)
        x_before = x.copy()
        out = backend.linear(x, handle)
        assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == (n_tokens, 40)
        np.testing.assert_array_equal(x, x_before)
        np.testing.assert_allclose(out, reference.linear(x, w), rtol=1e-5, atol=1e-5)


def _python(*args, env=None):
    return _run(*args, cwd=REPO, env=env)


@needs_numba
def test_first_compile_is_announced_once_and_cached(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache")}  # a fresh cache: numba compiles
    code = "from ggml_py.backend import create_backend; create_backend('numba')"
    first = _python("-c", code, env=env)
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("compiling kernels, once") == 1
    assert any((tmp_path / "cache").rglob("*.nbi"))
    second = _python("-c", code, env=env)
    assert second.returncode == 0 and second.stderr == ""


def test_a_broken_numba_is_reported_as_unavailable_in_one_line(tmp_path):
    # a numba whose import fails the way a mismatched llvmlite does
    fake = tmp_path / "numba"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "raise ImportError('llvmlite 0.1 is not supported by numba')\n"
    )
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    listing = _python("-m", "ggml_py", "backends", env=env)
    assert listing.returncode == 0, listing.stderr
    (line,) = [line for line in listing.stdout.splitlines() if line.strip().startswith("numba")]
    assert "unavailable" in line and "llvmlite 0.1 is not supported" in line
    assert "auto picks here: numpy-blas when a model's float32 weights" in listing.stdout
    assert "Traceback" not in listing.stderr


def test_run_falls_back_from_a_broken_numba_with_one_warning(tmp_path):
    model_path = tmp_path / "model.bin"
    write_model_file(model_path, byte_model_file())
    fake = tmp_path / "numba"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "raise ImportError('llvmlite 0.1 is not supported by numba')\n"
    )
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    run = _python("-m", "ggml_py", "run", "-m", str(model_path), "-p", "Hi", "-n", "2", env=env)
    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "numba backend does not work" in warnings[0]
    assert "main: backend = numpy-blas (auto: numba does not work; " in run.stderr
    assert "Traceback" not in run.stderr


@needs_numba
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_one_query_attention_is_numpys_with_infinities_and_nan():
    # one token's attention runs compiled over the model's cache layout; it must give NumPy's
    # float32 result, NaN where a score or value is NaN, infinite values carried through
    from ggml_py.backend import Float32Ops

    rng = np.random.default_rng(9)
    cache = rng.standard_normal((2, 300, 4, 16)).astype(np.float32)  # [keys/values, S, H, D]
    cache[0, 5, 1, :] = np.nan  # head 1: one NaN score
    cache[1, 7, 2, 3] = np.inf  # head 2: an infinite value
    q = rng.standard_normal((4, 1, 16)).astype(np.float32)
    k, v = cache[0, :290].transpose(1, 0, 2), cache[1, :290].transpose(1, 0, 2)  # as the graph
    out = create_backend("numba", 2).attention(q, k, v)
    expected = Float32Ops().attention(q, k, v)
    assert np.isnan(out[1]).all() and np.isnan(expected[1]).all()
    assert out[2, 0, 3] == expected[2, 0, 3] == np.inf
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
