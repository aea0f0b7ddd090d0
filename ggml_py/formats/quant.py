"""ggml tensor types and their block formats: encode float32 data, decode it back.

``quantize`` reproduces ggml's reference quantizers (``quantize_row_*_ref``) bit for bit, so a
file written with it is byte-identical to one written by ggml's tools; ``dequantize`` decodes any
supported type to float32. All arithmetic is float32 with one rounding per operation, exactly as
the C code does it; see ``spec/quantization.md`` for the formulas and the handling of zeros,
ties, infinities and NaN.

>>> x = ((np.arange(32, dtype=np.float32) - 10) / 4).reshape(1, 32)
>>> quantize(x, GGMLType.Q8_0)[0, :4].tobytes().hex()
'4b29c4ca'
>>> float(dequantize(quantize(x, GGMLType.Q8_0), GGMLType.Q8_0, (1, 32))[0, 31])  # x[0, 31] = 5.25
5.251617431640625
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import NamedTuple

import numpy as np

# ftype = QNT_VERSION * QNT_VERSION_FACTOR + base ftype in headers written by ggml's quantizers.
QNT_VERSION = 2
QNT_VERSION_FACTOR = 1000

GGML_MAX_DIMS = 4  # dimensions a ggml tensor can have, in either file format


class GGMLType(IntEnum):
    """``enum ggml_type``: the type of one tensor (the ``ttype`` of a legacy record)."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8

    @property
    def short_name(self) -> str:
        """``"q4_0"``, ``"f16"``: the spelling ggml's tools use."""
        return self.name.lower()


class BlockFormat(NamedTuple):
    block_size: int  # elements per block
    type_size: int  # bytes per block


BLOCK_FORMATS: dict[GGMLType, BlockFormat] = {
    GGMLType.F32: BlockFormat(1, 4),
    GGMLType.F16: BlockFormat(1, 2),
    GGMLType.Q4_0: BlockFormat(32, 18),
    GGMLType.Q4_1: BlockFormat(32, 20),
    GGMLType.Q5_0: BlockFormat(32, 22),
    GGMLType.Q5_1: BlockFormat(32, 24),
    GGMLType.Q8_0: BlockFormat(32, 34),
}

QUANTIZED_TYPES: tuple[GGMLType, ...] = (
    GGMLType.Q4_0,
    GGMLType.Q4_1,
    GGMLType.Q5_0,
    GGMLType.Q5_1,
    GGMLType.Q8_0,
)


class GGMLFileType(IntEnum):
    """``enum ggml_ftype``: what a whole file's 2-D weights are stored as.

    Numbered differently from ``GGMLType`` for q8_0, q5_0 and q5_1.

    >>> GGMLFileType.parse("q5_0"), GGMLFileType.parse("9")
    (<GGMLFileType.MOSTLY_Q5_0: 8>, <GGMLFileType.MOSTLY_Q5_1: 9>)
    >>> GGMLFileType.MOSTLY_Q8_0.weight_type
    <GGMLType.Q8_0: 8>
    """

    ALL_F32 = 0
    MOSTLY_F16 = 1
    MOSTLY_Q4_0 = 2
    MOSTLY_Q4_1 = 3
    MOSTLY_Q8_0 = 7
    MOSTLY_Q5_0 = 8
    MOSTLY_Q5_1 = 9

    @property
    def weight_type(self) -> GGMLType:
        return _FILE_TYPE_WEIGHTS[self]

    @property
    def short_name(self) -> str:
        return self.weight_type.short_name

    @classmethod
    def parse(cls, text: str) -> GGMLFileType:
        """A file type from its short name (``q4_0``) or its ggml_ftype number (``2``).

        Raises ``ValueError`` for anything else.
        """
        spelled = text.strip().lower()
        for file_type in cls:
            if spelled in (file_type.short_name, str(int(file_type))):
                return file_type
        raise ValueError(f"unknown type {text!r}")


_FILE_TYPE_WEIGHTS: dict[GGMLFileType, GGMLType] = {
    GGMLFileType.ALL_F32: GGMLType.F32,
    GGMLFileType.MOSTLY_F16: GGMLType.F16,
    GGMLFileType.MOSTLY_Q4_0: GGMLType.Q4_0,
    GGMLFileType.MOSTLY_Q4_1: GGMLType.Q4_1,
    GGMLFileType.MOSTLY_Q8_0: GGMLType.Q8_0,
    GGMLFileType.MOSTLY_Q5_0: GGMLType.Q5_0,
    GGMLFileType.MOSTLY_Q5_1: GGMLType.Q5_1,
}


def row_nbytes(ggml_type: GGMLType, n_per_row: int) -> int:
    """Bytes of one row of ``n_per_row`` elements; ``ValueError`` if it does not fill whole blocks.

    >>> row_nbytes(GGMLType.Q4_0, 64), row_nbytes(GGMLType.F16, 3)
    (36, 6)
    """
    block_size, type_size = BLOCK_FORMATS[GGMLType(ggml_type)]
    if n_per_row % block_size:
        raise ValueError(
            f"row of {n_per_row} elements is not a multiple of the "
            f"{GGMLType(ggml_type).short_name} block size {block_size}"
        )
    return n_per_row // block_size * type_size


def tensor_nbytes(ggml_type: GGMLType, shape: Sequence[int]) -> int:
    """Bytes of a tensor of NumPy ``shape`` (blocks run along the last axis)."""
    if not shape:
        raise ValueError("a tensor needs at least one dimension")
    n_rows = 1
    for dim in shape[:-1]:
        n_rows *= int(dim)
    return n_rows * row_nbytes(ggml_type, int(shape[-1]))


# Blocks handled per NumPy pass: big enough to hide the per-call overhead, small enough for the
# temporaries (a few times 1 MiB) to stay in cache.
_CHUNK_BLOCKS = 8192
_FLT_MAX = np.float32(np.finfo(np.float32).max)


def quantize(x: np.ndarray, ggml_type: GGMLType) -> np.ndarray:
    """Encode ``x`` (any float dtype, converted to float32 exactly as ggml reads it) as
    ``ggml_type``; returns ``uint8`` of shape ``(*x.shape[:-1], row_nbytes(ggml_type, x.shape[-1]))``.

    F32 and F16 are plain little-endian casts (F16 rounds to nearest even); the block types are
    bit-exact with ggml's reference quantizers.
    """
    ggml_type = GGMLType(ggml_type)
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("cannot quantize a scalar")
    out_shape = (*x.shape[:-1], row_nbytes(ggml_type, x.shape[-1]))
    if ggml_type is GGMLType.F32:
        return np.ascontiguousarray(x, dtype="<f4").view(np.uint8).reshape(out_shape)
    if ggml_type is GGMLType.F16:
        with np.errstate(over="ignore", invalid="ignore"):
            return (
                np.ascontiguousarray(x.astype(np.float32, copy=False).astype("<f2"))
                .view(np.uint8)
                .reshape(out_shape)
            )
    encode = _BLOCK_ENCODERS[ggml_type]
    blocks = x.reshape(-1, 32)
    out = np.empty((blocks.shape[0], BLOCK_FORMATS[ggml_type].type_size), dtype=np.uint8)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        for start in range(0, blocks.shape[0], _CHUNK_BLOCKS):
            stop = start + _CHUNK_BLOCKS
            encode(np.asarray(blocks[start:stop], dtype=np.float32), out[start:stop])
    return out.reshape(out_shape)


def dequantize(raw: np.ndarray, ggml_type: GGMLType, shape: Sequence[int]) -> np.ndarray:
    """Decode ``raw`` bytes (``uint8``, e.g. ``TensorInfo.data``) of ``ggml_type`` to float32 of
    NumPy ``shape``. F32 data comes back as a (possibly read-only) view when it can."""
    ggml_type = GGMLType(ggml_type)
    shape = tuple(int(dim) for dim in shape)
    raw = np.asarray(raw, dtype=np.uint8).reshape(-1)
    expected = tensor_nbytes(ggml_type, shape)
    if raw.size != expected:
        raise ValueError(f"{raw.size} bytes given, {ggml_type.short_name} {shape} needs {expected}")
    if ggml_type is GGMLType.F32:
        return raw.view("<f4").reshape(shape)
    if ggml_type is GGMLType.F16:
        return _dequantize_f16(raw.view(np.int16)).reshape(shape)
    blocks = raw.reshape(-1, BLOCK_FORMATS[ggml_type].type_size)
    out = np.empty((blocks.shape[0], 32), dtype=np.float32)
    scratch = Scratch()
    with np.errstate(invalid="ignore", over="ignore"):  # infinite scales give inf/NaN, as in C
        for start in range(0, blocks.shape[0], _CHUNK_BLOCKS):
            chunk = blocks[start : start + _CHUNK_BLOCKS]
            decoded = decode_block_rows(
                chunk, ggml_type, chunk.shape[0], scratch
            )  # [groups, n, 32 / groups]
            out[start : start + chunk.shape[0]].reshape(chunk.shape[0], decoded.shape[0], -1)[
                ...
            ] = decoded.transpose(1, 0, 2)
    return out.reshape(shape)


# ---------------------------------------------------------------------------------------------
# Encoders: ``blocks`` is float32 (n, 32); each writes its (n, type_size) bytes into ``out``.


def _fp16_bits(values: np.ndarray) -> np.ndarray:
    """ggml_compute_fp32_to_fp16 as little-endian bytes (n, 2): round to nearest even, overflow to
    infinity, and every NaN becomes 0x7E00 with its sign kept (NumPy would keep payload bits)."""
    bits = values.astype(np.float16).view(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        bits = np.where(nan, np.where(np.signbit(values), 0xFE00, 0x7E00).astype(np.uint16), bits)
    return bits.astype("<u2").view(np.uint8).reshape(-1, 2)


def _reciprocal_or_zero(d: np.ndarray) -> np.ndarray:
    # C: `id = d ? 1.0f/d : 0.0f` (NaN is truthy, so it stays NaN).
    inverse = np.float32(1) / d
    inverse[d == 0] = 0
    return inverse


def _truncate_to_int(values: np.ndarray, dtype) -> np.ndarray:
    """C's float -> integer conversion (truncation toward zero). Converting NaN or infinity is
    undefined in C; x86-64 (cvttss2si, then the low byte) yields 0, which is used here."""
    if not np.isfinite(values).all():
        values = np.where(np.isfinite(values), values, np.float32(0))
    return values.astype(dtype)


def _signed_max_by_magnitude(blocks: np.ndarray) -> np.ndarray:
    """q4_0/q5_0 scan: the signed value of the first element with the largest |x|, skipping NaN
    (a comparison with NaN is false in C), and +0.0 when no |x| exceeds 0."""
    magnitudes = np.abs(blocks)
    index = magnitudes.argmax(axis=1)
    rows = np.arange(blocks.shape[0])
    amax = magnitudes[rows, index]
    nan_blocks = np.isnan(amax)
    if nan_blocks.any():  # argmax stops at the first NaN; rescan those blocks ignoring NaN
        rescanned = np.where(
            np.isnan(magnitudes[nan_blocks]), np.float32(-1), magnitudes[nan_blocks]
        )
        index[nan_blocks] = rescanned.argmax(axis=1)
        amax = magnitudes[rows, index]
        amax[nan_blocks & np.isnan(amax)] = 0
    return np.where(amax > 0, blocks[rows, index], np.float32(0))


def _min_max(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """q4_1/q5_1 scan: min from FLT_MAX and max from -FLT_MAX with strict comparisons, so NaN is
    skipped and an all-infinite block keeps the starting value on one side."""
    low = np.minimum(blocks.min(axis=1), _FLT_MAX)
    high = np.maximum(blocks.max(axis=1), -_FLT_MAX)
    nan_blocks = np.isnan(low)
    if nan_blocks.any():
        low[nan_blocks] = np.fmin.reduce(blocks[nan_blocks], axis=1, initial=_FLT_MAX)
        high[nan_blocks] = np.fmax.reduce(blocks[nan_blocks], axis=1, initial=-_FLT_MAX)
    # +0.0 and -0.0 compare equal, so C keeps the first zero it meets as the minimum; its sign
    # reaches the stored m. (The sign of a zero maximum never changes d = max - min.)
    zero_low = low == 0
    if zero_low.any():
        zero_blocks = blocks[zero_low]
        first_zero = (zero_blocks == 0).argmax(axis=1)
        low[zero_low] = zero_blocks[np.arange(zero_blocks.shape[0]), first_zero]
    return low, high


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    # qs[j]: element j in the low nibble, element j + 16 in the high nibble
    return (q[:, :16] & np.uint8(0x0F)) | (q[:, 16:] << np.uint8(4))


def _fifth_bits(q: np.ndarray) -> np.ndarray:
    # qh: little-endian u32 whose bit j is bit 4 of element j
    return np.packbits((q >> np.uint8(4)) & np.uint8(1), axis=1, bitorder="little")


def _encode_q4_0(blocks: np.ndarray, out: np.ndarray) -> None:
    d = _signed_max_by_magnitude(blocks) / np.float32(-8)
    inverse = _reciprocal_or_zero(d)
    q = _truncate_to_int(blocks * inverse[:, None] + np.float32(8.5), np.uint8)
    out[:, 0:2] = _fp16_bits(d)
    out[:, 2:18] = _pack_nibbles(np.minimum(q, np.uint8(15)))


def _encode_q5_0(blocks: np.ndarray, out: np.ndarray) -> None:
    d = _signed_max_by_magnitude(blocks) / np.float32(-16)
    inverse = _reciprocal_or_zero(d)
    q = np.minimum(
        _truncate_to_int(blocks * inverse[:, None] + np.float32(16.5), np.uint8), np.uint8(31)
    )
    out[:, 0:2] = _fp16_bits(d)
    out[:, 2:6] = _fifth_bits(q)
    out[:, 6:22] = _pack_nibbles(q)


def _encode_q4_1(blocks: np.ndarray, out: np.ndarray) -> None:
    low, high = _min_max(blocks)
    d = (high - low) / np.float32(15)
    inverse = _reciprocal_or_zero(d)
    q = _truncate_to_int((blocks - low[:, None]) * inverse[:, None] + np.float32(0.5), np.uint8)
    out[:, 0:2] = _fp16_bits(d)
    out[:, 2:4] = _fp16_bits(low)
    out[:, 4:20] = _pack_nibbles(np.minimum(q, np.uint8(15)))


def _encode_q5_1(blocks: np.ndarray, out: np.ndarray) -> None:
    low, high = _min_max(blocks)
    d = (high - low) / np.float32(31)
    inverse = _reciprocal_or_zero(d)
    # no clamp in ggml: the largest value, about 31.5, truncates to 31
    q = _truncate_to_int((blocks - low[:, None]) * inverse[:, None] + np.float32(0.5), np.uint8)
    out[:, 0:2] = _fp16_bits(d)
    out[:, 2:4] = _fp16_bits(low)
    out[:, 4:8] = _fifth_bits(q)
    out[:, 8:24] = _pack_nibbles(q)


def _q8_0_amax(blocks: np.ndarray) -> np.ndarray:
    """``amax = MAX(amax, fabsf(v))`` with ``MAX(a, b) = a > b ? a : b``: a NaN element replaces
    the running value, and the next element replaces the NaN. So amax is the largest |x| after
    the last NaN of the block, or NaN when the last element is NaN."""
    magnitudes = np.abs(blocks)
    amax = magnitudes.max(axis=1)
    nan_blocks = np.isnan(amax)
    if nan_blocks.any():
        with_nan = magnitudes[nan_blocks]
        last_nan = 31 - np.isnan(with_nan)[:, ::-1].argmax(axis=1)
        after_last_nan = np.arange(32) > last_nan[:, None]
        folded = np.where(after_last_nan, with_nan, np.float32(0)).max(axis=1)
        folded[last_nan == 31] = np.nan
        amax[nan_blocks] = folded
    return amax


def _round_half_away(values: np.ndarray) -> np.ndarray:
    # C roundf. floor(|v| + 0.5) would be wrong for 0.49999997; |v| - floor(|v|) is exact.
    magnitude = np.abs(values)
    whole = np.floor(magnitude)
    return np.copysign(whole + np.floor(2 * (magnitude - whole)), values)


def _encode_q8_0(blocks: np.ndarray, out: np.ndarray) -> None:
    d = _q8_0_amax(blocks) / np.float32(127)
    inverse = _reciprocal_or_zero(d)
    q = _truncate_to_int(_round_half_away(blocks * inverse[:, None]), np.int8)
    out[:, 0:2] = _fp16_bits(d)
    out[:, 2:34] = q.view(np.uint8)


_BLOCK_ENCODERS: dict[GGMLType, Callable[[np.ndarray, np.ndarray], None]] = {
    GGMLType.Q4_0: _encode_q4_0,
    GGMLType.Q4_1: _encode_q4_1,
    GGMLType.Q5_0: _encode_q5_0,
    GGMLType.Q5_1: _encode_q5_1,
    GGMLType.Q8_0: _encode_q8_0,
}


# ---------------------------------------------------------------------------------------------
# Decoders. They work on whole contiguous arrays with in-place NumPy passes into reusable
# buffers (``Scratch``): the inference backend ``blocked-f16`` calls them on every evaluation.

F16_SCALE_EXPONENT = 112  # f16 exponent bias 15 -> f32 bias 127
_F16_SCALE = np.float32(2.0**F16_SCALE_EXPONENT)
_F16_SIGN_EXPONENT_MANTISSA = np.int32(-0x70002000)  # 0x8FFFE000
_F16_SPECIAL_SCALED = 2.0**-96  # decode_f16_scaled puts inf/NaN at |v| >= 2**16 * 2**-112
_CHUNK_ELEMENTS = 1 << 18  # f16 values per pass of ``dequantize``


class Scratch(threading.local):
    """Per-thread reusable buffers, keyed by use, dtype and shape: decoding into fresh arrays
    would map new pages for every block."""

    def __init__(self):
        self.buffers: dict[tuple, np.ndarray] = {}

    def array(self, use: str, dtype: type, shape: tuple) -> np.ndarray:
        key = (use, dtype, shape)
        buffer = self.buffers.get(key)
        if buffer is None:
            buffer = self.buffers[key] = np.empty(shape, dtype)
        return buffer

    def copy_of(self, array: np.ndarray, use: str = "copy") -> np.ndarray:
        buffer = self.array(use, array.dtype, array.shape)
        np.copyto(buffer, array)
        return buffer


def decode_f16_scaled(halves: np.ndarray, out: np.ndarray) -> np.ndarray:
    """f16 values (any array of 2-byte items, aligned or not) into ``out`` (int32, same shape),
    returned as float32 ``w * 2**-112``: exact for every finite f16 ``w``, subnormals included;
    infinities and NaN become finite values of magnitude ``2**16 .. 2**17`` once scaled back.

    NumPy's own ``float16 -> float32`` cast has no SIMD path and runs several times slower.

    >>> w = np.array([1.5, -2.0, 65504.0, 6e-08], dtype=np.float16)
    >>> (decode_f16_scaled(w, np.empty(4, np.int32)) * 2.0**112).tolist()
    [1.5, -2.0, 65504.0, 5.960464477539063e-08]
    """
    # Widening sign-extends: the sign fills bits 31..15. Shifted left by 13, exponent and
    # mantissa sit at float32's bits 27..13 and the sign still covers bits 31..28; the mask keeps
    # bit 31 and clears 30..28, which leaves the f16 exponent unbiased by 112 less than float32's.
    np.copyto(out, halves.view(np.int16), casting="unsafe")
    np.left_shift(out, 13, out=out)
    np.bitwise_and(out, _F16_SIGN_EXPONENT_MANTISSA, out=out)
    return out.view(np.float32)


def decoded_f16_specials(scaled: np.ndarray) -> bool:
    """Whether :func:`decode_f16_scaled` met infinities or NaN: they land at ``|v| >= 2**-96``,
    every finite f16 value below.

    >>> w = np.array([1.5, 65504.0, np.inf], dtype=np.float16)
    >>> decoded_f16_specials(decode_f16_scaled(w[:2], np.empty(2, np.int32)))
    False
    >>> decoded_f16_specials(decode_f16_scaled(w, np.empty(3, np.int32)))
    True
    """
    return scaled.size > 0 and bool(max(scaled.max(), -scaled.min()) >= _F16_SPECIAL_SCALED)


def _dequantize_f16(halves: np.ndarray) -> np.ndarray:
    """Exact float32 of 1-D f16 data through :func:`decode_f16_scaled`, pass by pass in chunks
    that stay in cache; a chunk holding infinities or NaN is converted by NumPy's cast instead."""
    out = np.empty(halves.shape, np.float32)
    bits = out.view(np.int32)
    for start in range(0, halves.size, _CHUNK_ELEMENTS):
        stop = start + _CHUNK_ELEMENTS
        _exact_f16(halves[start:stop], bits[start:stop])
    return out


def _exact_f16(halves: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """f16 ``halves`` into ``bits`` (int32, same shape) as exact float32: the integer path, or
    NumPy's cast when the data holds infinities or NaN."""
    values = decode_f16_scaled(halves, bits)
    if decoded_f16_specials(values):
        np.copyto(values, halves.view("<f2"))
    else:
        values *= _F16_SCALE
    return values


# Block formats: each decoder takes the raw blocks of ``n_rows`` rows, ``[n_rows * nb, bytes per
# block]``, and returns float32 ``[groups, n_rows, nb * 32 / groups]`` in a scratch buffer: q8_0
# one group in natural order; the 4/5-bit formats the low nibbles of the rows' blocks (elements
# 0..15 of each block, block after block) as group 0, the high nibbles (16..31) as group 1.

_LOW_NIBBLES = np.uint64(0x0F0F0F0F0F0F0F0F)
_BYTE_SIGN_BITS = np.uint64(0x8080808080808080)


@functools.cache
def _fifth_bit_table() -> np.ndarray:
    """16 bits of a q5 ``qh`` field -> the 16 bytes ``bit << 4`` they contribute: uint64 [65536, 2]."""
    bits = (np.arange(1 << 16, dtype=np.uint32)[:, None] >> np.arange(16, dtype=np.uint32)) & 1
    return (bits << 4).astype(np.uint8).view(np.uint64)


def _scales(blocks: np.ndarray, start: int) -> np.ndarray:
    """The f16 field at byte ``start`` of every block (``[..., type_size]``) as float32 ``[..., 1]``,
    to broadcast over the block's elements (a repeated full-size copy would cost one more pass). Converted by
    :func:`_exact_f16` (NumPy's f16 cast took a third of a q8_0 block's decoding time)."""
    fields = blocks[..., start : start + 2].view(np.int16)
    return _exact_f16(fields, np.empty(fields.shape, np.int32))


def _nibbles(blocks: np.ndarray, start: int, n_rows: int, scratch: Scratch) -> np.ndarray:
    """The 16 bytes of 4-bit pairs at ``start`` split into bytes: uint64 words [2, r, nb * 2]."""
    packed = (
        scratch.copy_of(blocks[:, start : start + 16], "packed").view(np.uint64).reshape(n_rows, -1)
    )
    values = scratch.array("nibbles", np.uint64, (2, *packed.shape))
    np.bitwise_and(packed, _LOW_NIBBLES, out=values[0])
    np.right_shift(packed, np.uint64(4), out=values[1])
    np.bitwise_and(values[1], _LOW_NIBBLES, out=values[1])
    return values


def _add_fifth_bits(
    values: np.ndarray, blocks: np.ndarray, start: int, n_rows: int, scratch: Scratch
) -> None:
    high = (
        scratch.copy_of(blocks[:, start : start + 4], "qh").view(np.uint32).reshape(n_rows, -1)
    )  # [r, nb]
    halves = scratch.array("qh halves", np.uint16, (2, *high.shape))
    np.bitwise_and(high, np.uint32(0xFFFF), out=halves[0], casting="unsafe")  # elements 0..15
    np.right_shift(high, np.uint32(16), out=halves[1], casting="unsafe")  # elements 16..31
    fifth = np.take(
        _fifth_bit_table(),
        halves.reshape(-1),
        axis=0,
        out=scratch.array("fifth", np.uint64, (halves.size, 2)),
    )
    np.bitwise_or(values, fifth.reshape(values.shape), out=values)


def _subtract_from_bytes(words: np.ndarray, amount: int) -> None:
    """Subtract ``amount`` from every byte of uint64 ``words`` modulo 256 (bytes become int8)."""
    np.bitwise_or(words, _BYTE_SIGN_BITS, out=words)  # no byte can borrow from the next
    np.subtract(words, np.uint64(int.from_bytes(bytes([amount]) * 8, "little")), out=words)
    np.bitwise_xor(words, _BYTE_SIGN_BITS, out=words)


def _scaled(
    values: np.ndarray,
    signed: bool,
    blocks: np.ndarray,
    n_rows: int,
    has_minimum: bool,
    scratch: Scratch,
    scale: bool,
) -> np.ndarray:
    """``q * d (+ m)`` from byte values [2, r, nb * 2 words] and the blocks' f16 ``d`` (and ``m``)."""
    shape = (2, n_rows, values.shape[2] * 8)
    out = scratch.array("decoded", np.float32, shape)
    np.copyto(out, values.view(np.int8 if signed else np.uint8).reshape(shape), casting="unsafe")
    if scale:
        per_block = out.reshape(2, blocks.shape[0], 16)  # rows' blocks in order, in both groups
        np.multiply(per_block, _scales(blocks, 0), out=per_block)
        if has_minimum:
            np.add(per_block, _scales(blocks, 2), out=per_block)
    return out


def _decode_q4_0(blocks, n_rows, scratch, scale):  # d, 16 bytes of nibbles; q - 8
    values = _nibbles(blocks, 2, n_rows, scratch)
    _subtract_from_bytes(values, 8)
    return _scaled(values, True, blocks, n_rows, False, scratch, scale)


def _decode_q4_1(blocks, n_rows, scratch, scale):  # d, m, 16 bytes of nibbles
    return _scaled(
        _nibbles(blocks, 4, n_rows, scratch), False, blocks, n_rows, True, scratch, scale
    )


def _decode_q5_0(blocks, n_rows, scratch, scale):  # d, 32 fifth bits, nibbles; q - 16
    values = _nibbles(blocks, 6, n_rows, scratch)
    _add_fifth_bits(values, blocks, 2, n_rows, scratch)
    _subtract_from_bytes(values, 16)
    return _scaled(values, True, blocks, n_rows, False, scratch, scale)


def _decode_q5_1(blocks, n_rows, scratch, scale):  # d, m, 32 fifth bits, nibbles
    values = _nibbles(blocks, 8, n_rows, scratch)
    _add_fifth_bits(values, blocks, 4, n_rows, scratch)
    return _scaled(values, False, blocks, n_rows, True, scratch, scale)


def _decode_q8_0(blocks, n_rows, scratch, scale):  # d, 32 int8
    out = scratch.array("decoded", np.float32, (1, n_rows, blocks.shape[0] // n_rows * 32))
    per_block = out.reshape(-1, 32)
    np.copyto(per_block, blocks[:, 2:].view(np.int8), casting="unsafe")
    if scale:
        np.multiply(per_block, _scales(blocks, 0), out=per_block)
    return out


_BLOCK_DECODERS: dict[GGMLType, Callable[[np.ndarray, int, Scratch, bool], np.ndarray]] = {
    GGMLType.Q4_0: _decode_q4_0,
    GGMLType.Q4_1: _decode_q4_1,
    GGMLType.Q5_0: _decode_q5_0,
    GGMLType.Q5_1: _decode_q5_1,
    GGMLType.Q8_0: _decode_q8_0,
}


def decode_block_rows(
    blocks: np.ndarray, ggml_type: GGMLType, n_rows: int, scratch: Scratch, scale: bool = True
) -> np.ndarray:
    """The raw blocks ``[n_rows * nb, type_size]`` of ``n_rows`` rows of a block format, decoded
    into ``scratch``: float32 ``[groups, n_rows, nb * 32 / groups]``, each row's columns in the
    order :func:`decoded_column_order` gives. Values equal :func:`dequantize`'s; with
    ``scale=False`` they are the quants before the scale: ``q - 8`` (q4_0), ``q - 16`` (q5_0),
    ``q`` (q8_0, q4_1, q5_1; the minimum ``m`` is not added either)."""
    return _BLOCK_DECODERS[ggml_type](blocks, n_rows, scratch, scale)


def block_scales(blocks: np.ndarray) -> np.ndarray:
    """The scale ``d`` (the f16 field every block format starts with) of each raw block ``[...,
    type_size]`` (any layout whose last axis is a block's bytes) as float32 ``[..., 1]``."""
    return _scales(blocks, 0)


def block_minimums(blocks: np.ndarray) -> np.ndarray:
    """The minimum ``m`` (the f16 field after ``d``) of each raw q4_1/q5_1 block ``[..., type_size]``
    as float32 ``[..., 1]``."""
    return _scales(blocks, 2)


def decoded_column_order(ggml_type: GGMLType, n_per_row: int) -> np.ndarray:
    """The columns of a row in the order :func:`decode_block_rows` lays them out (flattened groups).

    >>> decoded_column_order(GGMLType.Q4_0, 64)[14:18].tolist()
    [14, 15, 32, 33]
    """
    columns = np.arange(n_per_row)
    if GGMLType(ggml_type) is GGMLType.Q8_0:
        return columns
    return columns.reshape(-1, 2, 16).transpose(1, 0, 2).reshape(-1)
