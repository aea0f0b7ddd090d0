"""Block quantization: bit-exact with ggml's reference quantizers.

Oracles: the worked examples of ggml's math in ../shared/reference/quantization.md (hard-coded
below), and the ``gguf`` package's NumPy quantizers, which reproduce ``gpt-j-quantize`` byte for
byte on finite data. Non-finite input is undefined behaviour in C at the final float -> int
conversion; the expected bytes below follow the C code's comparisons and x86-64's conversion
result (see spec/quantization.md).
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ggml_py.formats.quant import (
    BLOCK_FORMATS,
    QUANTIZED_TYPES,
    GGMLFileType,
    GGMLType,
    dequantize,
    quantize,
    row_nbytes,
    tensor_nbytes,
)

RAMP = ((np.arange(32, dtype=np.float32) - 10) / 4).reshape(1, 32)

# quantization.md section 4.1: block x_j = (j - 10) / 4, and an all-zero block
RAMP_BYTES = {
    GGMLType.Q4_0: "40 b9 6c 5b 5b 5b 4a 4a 3a 39 39 28 28 28 17 17 06 06",
    GGMLType.Q4_1: "22 38 00 c1 80 80 91 91 a2 a2 b3 b3 c4 c4 d5 d5 e6 e6 f7 f7",
    GGMLType.Q5_0: "40 b5 ff 07 00 00 b8 b7 a6 95 85 84 73 62 52 51 40 3f 2e 2e 1d 0c",
    GGMLType.Q5_1: "00 34 00 c1 00 00 ff ff 00 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff",
    GGMLType.Q8_0: "4b 29 c4 ca d0 d6 dc e2 e8 ee f4 fa 00 06 0c 12 18 1e 24 2a 30 36 3c 43 49 4f 55 5b"
    " 61 67 6d 73 79 7f",
}
ZERO_BYTES = {
    GGMLType.Q4_0: "00 80" + " 88" * 16,
    GGMLType.Q4_1: "00" * 20,
    GGMLType.Q5_0: "00 80 ff ff ff ff" + " 00" * 16,
    GGMLType.Q5_1: "00" * 24,
    GGMLType.Q8_0: "00" * 34,
}


def oracle(x: np.ndarray, ggml_type: GGMLType) -> np.ndarray:
    with np.errstate(all="ignore"):
        return gguf.quants.quantize(
            np.asarray(x, dtype=np.float32), gguf.GGMLQuantizationType(int(ggml_type))
        )


@pytest.mark.parametrize("ggml_type", QUANTIZED_TYPES, ids=lambda t: t.short_name)
def test_worked_example_and_zero_block(ggml_type):
    assert quantize(RAMP, ggml_type).tobytes() == bytes.fromhex(RAMP_BYTES[ggml_type])
    assert quantize(np.zeros((1, 32), np.float32), ggml_type).tobytes() == bytes.fromhex(
        ZERO_BYTES[ggml_type]
    )


def test_signed_zeros_follow_the_c_comparisons():
    # gguf is no oracle here (its argmax/min pick a -0.0 that C's strict comparisons skip).
    # q4_0/q5_0/q8_0: no |x| exceeds the initial amax 0, so max stays +0.0 -> same as all +0.0
    negative_zeros = np.full((1, 32), -0.0, np.float32)
    for ggml_type in (GGMLType.Q4_0, GGMLType.Q5_0, GGMLType.Q8_0):
        assert quantize(negative_zeros, ggml_type).tobytes() == bytes.fromhex(ZERO_BYTES[ggml_type])
    # q4_1/q5_1: min becomes the first zero met (then -0.0 < +0.0 is false): m = fp16(-0.0)
    mixed = np.zeros((1, 32), np.float32)
    mixed[0, 3] = -0.0
    mixed[0, 5:] = 1.0
    assert quantize(mixed, GGMLType.Q4_1).tobytes()[:4].hex() == "442c" + "0000"  # d = 1/15, m = +0
    mixed[0, 0] = -0.0
    assert quantize(mixed, GGMLType.Q4_1).tobytes()[:4].hex() == "442c" + "0080"
    assert quantize(negative_zeros, GGMLType.Q5_1).tobytes() == bytes.fromhex("0000 0080") + bytes(
        20
    )


def adversarial_blocks() -> np.ndarray:
    rng = np.random.default_rng(1234)
    blocks = [
        rng.standard_normal((64, 32)),
        rng.integers(-8, 9, (64, 32)),  # many exact .5 boundaries after scaling
        rng.integers(-16, 17, (64, 32)) / 2,
        np.tile(np.arange(32) - 16, (4, 1)),
        rng.standard_normal((16, 32)) * 1e-3,
        rng.standard_normal((16, 32)) * 6e4,  # d beyond fp16 range for some types
        rng.standard_normal((16, 32)) * 1e38,  # max - min overflows to infinity
        rng.standard_normal((16, 32)) * 1e-38,  # subnormal d: 1/d overflows
        rng.standard_normal((16, 32)) * 1e-44,
        np.full((4, 32), 3.0),  # constant blocks: q4_1/q5_1 d = 0
        np.full((4, 32), -7.25),
    ]
    ties = np.zeros((4, 32))
    ties[0, [3, 9]] = [-2.0, 2.0]  # +-a tie: the first one sets the sign
    ties[1, [3, 9]] = [2.0, -2.0]
    ties[2, :] = 1.0
    ties[2, 31] = -1.0
    ties[3, [0, 31]] = [-5.0, 5.0]
    blocks.append(ties)
    # f16 weights, as quantize sees them in practice
    blocks.append(rng.standard_normal((64, 32)).astype(np.float16))
    return np.concatenate([np.asarray(b, dtype=np.float32) for b in blocks])


@pytest.mark.parametrize("ggml_type", QUANTIZED_TYPES, ids=lambda t: t.short_name)
def test_matches_gguf_on_adversarial_data(ggml_type):
    x = adversarial_blocks().reshape(-1, 256)
    ours = quantize(x, ggml_type)
    assert ours.shape == (x.shape[0], row_nbytes(ggml_type, 256))
    np.testing.assert_array_equal(ours, oracle(x, ggml_type))


@pytest.mark.parametrize("ggml_type", QUANTIZED_TYPES, ids=lambda t: t.short_name)
def test_matches_gguf_across_chunk_boundaries(ggml_type):
    # more blocks than one internal chunk, rows of several blocks, f16 input dtype
    x = np.random.default_rng(7).standard_normal((300, 1024)).astype(np.float16)
    np.testing.assert_array_equal(quantize(x, ggml_type), oracle(x, ggml_type))


finite_blocks = hnp.arrays(
    np.float32,
    st.tuples(st.integers(1, 4), st.just(32)),
    elements=st.floats(-1e6, 1e6, width=32, allow_subnormal=True)
    | st.sampled_from([0.0, -0.0, 0.5, -0.5, 1.0]),
)


@settings(max_examples=150, deadline=None)
@given(finite_blocks, st.sampled_from(QUANTIZED_TYPES))
def test_matches_gguf_on_generated_blocks(x, ggml_type):
    x = x + np.float32(0)  # -0.0 -> +0.0: see test_signed_zeros_follow_the_c_comparisons
    np.testing.assert_array_equal(quantize(x, ggml_type), oracle(x, ggml_type))


def test_nan_is_skipped_by_the_max_scan():
    x = RAMP.copy()
    x[0, 0] = np.nan
    expected = bytearray.fromhex(RAMP_BYTES[GGMLType.Q4_0])
    expected[2] &= 0xF0  # the NaN element itself converts to quant 0
    assert quantize(x, GGMLType.Q4_0).tobytes() == bytes(expected)


def test_q8_0_nan_follows_cs_max_macro():
    # MAX(amax, |v|) = amax > |v| ? amax : |v|: a NaN replaces the running maximum and the next
    # element replaces the NaN, so only elements after the last NaN count.
    x = RAMP.copy()
    x[0, 30] = np.nan  # |x| after it: 5.25 -> same scale as without the NaN
    assert quantize(x, GGMLType.Q8_0).tobytes()[:2] == bytes.fromhex("4b29")
    x = RAMP.copy()
    x[0, 31] = np.nan  # last element NaN: d = NaN, stored as 0x7E00, every quant 0
    assert quantize(x, GGMLType.Q8_0).tobytes() == bytes.fromhex("007e") + bytes(32)
    x = -RAMP.copy()
    x[0, 20] = np.nan  # largest |x| after index 20 is |x_31| = 5.25 although |x_0| = 2.5 < 5.25
    y = -RAMP.copy()
    y[0, :21] = 0
    assert quantize(x, GGMLType.Q8_0).tobytes()[:2] == quantize(y, GGMLType.Q8_0).tobytes()[:2]


def test_infinities():
    x = RAMP.copy()
    x[0, 4] = np.inf
    # q8_0: d = inf, id = 1/inf = 0; finite * 0 = 0, inf * 0 = NaN -> 0
    assert quantize(x, GGMLType.Q8_0).tobytes() == bytes.fromhex("007c") + bytes(32)
    # q4_0: max = +inf, d = -inf, id = -0: every finite quant is trunc(8.5) = 8
    assert quantize(x, GGMLType.Q4_0).tobytes() == bytes.fromhex("00fc") + bytes(
        [0x88, 0x88, 0x88, 0x88, 0x80]
    ) + bytes([0x88] * 11)
    # q4_1 on an all-NaN block: min stays FLT_MAX, max -FLT_MAX, d = -inf, m = fp16(FLT_MAX) = inf
    assert quantize(np.full((1, 32), np.nan, np.float32), GGMLType.Q4_1).tobytes() == bytes.fromhex(
        "00fc007c"
    ) + bytes(16)


@pytest.mark.parametrize("ggml_type", QUANTIZED_TYPES, ids=lambda t: t.short_name)
def test_dequantize_matches_gguf_on_any_bytes(ggml_type):
    rng = np.random.default_rng(99)
    type_size = BLOCK_FORMATS[ggml_type].type_size
    raw = rng.integers(0, 256, (40, 3 * type_size), dtype=np.uint8)
    ours = dequantize(raw, ggml_type, (40, 96))
    with np.errstate(all="ignore"):
        reference = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(int(ggml_type)))
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, reference)  # NaN compares equal to NaN here


@pytest.mark.parametrize("ggml_type", QUANTIZED_TYPES, ids=lambda t: t.short_name)
def test_round_trip_error_is_within_half_a_step(ggml_type):
    x = np.random.default_rng(3).standard_normal((8, 64)).astype(np.float32)
    back = dequantize(quantize(x, ggml_type), ggml_type, x.shape)
    blocks = x.reshape(-1, 32)
    span = blocks.max(1) - blocks.min(1)
    levels = {
        GGMLType.Q4_0: 8,
        GGMLType.Q4_1: 15,
        GGMLType.Q5_0: 16,
        GGMLType.Q5_1: 31,
        GGMLType.Q8_0: 127,
    }[ggml_type]
    step = (np.abs(blocks).max(1) if levels in (8, 16, 127) else span) / levels
    # half a step plus fp16 rounding of the scale (the *_0 types use 2 * amax / 2*levels)
    bound = (step * (1.0 if levels in (8, 16) else 0.5) + 1e-2 * np.abs(blocks).max(1))[:, None]
    assert np.all(np.abs(back.reshape(-1, 32) - blocks) <= bound)


def test_f32_and_f16():
    x = np.array([[1.0, -2.5, 65519.0, 1e-8]], dtype=np.float32)
    assert quantize(x, GGMLType.F32).tobytes() == x.astype("<f4").tobytes()
    assert (
        quantize(x, GGMLType.F16).tobytes() == x.astype("<f2").tobytes()
    )  # RNE, 1e-8 -> subnormal
    assert quantize(x, GGMLType.F16).shape == (1, 8)
    np.testing.assert_array_equal(dequantize(quantize(x, GGMLType.F32), GGMLType.F32, (1, 4)), x)
    np.testing.assert_array_equal(
        dequantize(quantize(x, GGMLType.F16), GGMLType.F16, (4,)), x.astype(np.float16)[0]
    )


def test_sizes_and_errors():
    assert [BLOCK_FORMATS[t].type_size for t in QUANTIZED_TYPES] == [18, 20, 22, 24, 34]
    assert tensor_nbytes(GGMLType.Q4_0, (4096, 4096)) == 4096 * 128 * 18
    assert tensor_nbytes(GGMLType.F32, (7,)) == 28
    with pytest.raises(ValueError, match="multiple of the q8_0 block size 32"):
        quantize(np.zeros((2, 48), np.float32), GGMLType.Q8_0)
    with pytest.raises(ValueError, match="needs 36"):
        dequantize(np.zeros(35, np.uint8), GGMLType.Q4_0, (64,))


def test_file_type_names_and_numbers():
    assert [
        GGMLFileType.parse(n).weight_type for n in ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0")
    ] == list(QUANTIZED_TYPES)
    assert [int(GGMLFileType.parse(n)) for n in ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0")] == [
        2,
        3,
        8,
        9,
        7,
    ]
    assert GGMLFileType.parse("7") is GGMLFileType.MOSTLY_Q8_0
    assert GGMLFileType.parse("F16") is GGMLFileType.MOSTLY_F16
    for bad in ("4", "q4_2", "", "6"):
        with pytest.raises(ValueError):
            GGMLFileType.parse(bad)
