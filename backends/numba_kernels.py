"""The ``numba`` backend's compiled kernels: decode rows of any stored type, and fused
decode-and-dot matrix-vector products.

Weights arrive as the file's bytes (``uint8``, any alignment) and are read in place. numba has no
``float16`` on the CPU, so halves are read as 16-bit integers and widened by LLVM's ``fpext half
to float`` (one ``vcvtph2ps`` inside vectorised loops) through the small intrinsics below.

Two kinds of kernels, by design:

- **the plain loops** (:func:`decode_row`, :func:`matvec_reference`): one value at a time,
  straight from ``spec/quantization.md``; the test oracle of the fast kernels.
- **the fast kernels**, on explicit 16-wide vectors (``Vector16``): :func:`matvec` (one token's
  products) and :func:`decode_rows` (the row blocks of prompts, decoded for BLAS). For the
  32-element block formats each block is taken as two vectors of quants, multiplied with ``x``
  and scaled by the block's ``d`` into a 16-wide accumulator. Written as plain loops over each
  block the same source vectorised in one process and not in another (the prototype of issue
  12: q8_0 43 vs 76 ms per token); explicit vectors were stable and fastest (q4_0 2.3-2.8x of
  ggml's time plain, 1.04x with 8-wide vectors on an AVX2 machine). 16 lanes instead of 8 (two
  registers each with AVX2, one with AVX-512): q4_0 products 32 instead of 46 ms, q8_0 32
  instead of 34 (one thread, a [16384, 2048] matrix, AVX-512 VM). :func:`matvec` also asks for
  the bytes 4 KiB ahead (``PREFETCH_BYTES``) and :func:`attend` computes one token's attention.

``fastmath`` (reassociation, contraction) is what lets LLVM vectorise the sums at all (f16 without
it: 1824 instead of 58 ms for the prototype's products); the flags leave out ``nnan`` and ``ninf``
so that infinite and NaN weights come through as they are. The decoders use no fast-math flag at
all: ``q * d + m`` must be rounded twice, as ``dequantize`` does, not fused.
"""

from __future__ import annotations

import os
import threading

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from ggml_py.formats.quant import GGMLType

FASTMATH = {"contract", "reassoc", "arcp", "nsz", "afn"}  # not nnan/ninf: inf and NaN stay exact

# OpenMP's thread pool first: its threads spin a while for the next kernel before they sleep, so a
# launch costs 1-2 us, where numba's own 'workqueue' pool wakes a sleeping thread every time
# (110-125 us for an empty kernel: 11 ms of a token's 97 products). Without an OpenMP runtime
# numba moves on to TBB, then 'workqueue'; NUMBA_THREADING_LAYER overrides.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]
# ...but not GNU OpenMP's default spin (300,000 rounds, milliseconds): on a busy machine the
# spinning threads take the CPU from the ones with work. 1B q4_0 decode, 2 threads, ms/token,
# quiet / beside two busy processes: default 42 / 404, 50,000 rounds 41 / 143, passive waiting
# 46 / 153, 'workqueue' 71 / 111-134 (ggml's gpt-j: 63 / 870-1034). Read when OpenMP starts, so
# it is set before the first parallel kernel; a user's own setting wins.
if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "50000"

F32, F16 = int(GGMLType.F32), int(GGMLType.F16)
Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = (
    int(t) for t in (GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1, GGMLType.Q8_0)
)

# The fast kernels ask for the weights this many bytes ahead of the block they multiply. The
# hardware prefetcher alone left the quantized products waiting on memory: one token's products
# of the 1B shape, 2 threads, ms without -> with 1, 2, 4, 8 KiB ahead: q4_0 66 -> 39, 34, 34, 38;
# q8_0 63 -> 59, 51, 51, 51; q5_1 134 -> 56, 50, 49, 50. (f16 is bound by memory bandwidth, 65-67
# with or without.)
PREFETCH_BYTES = 4096

_FLOAT = ir.FloatType()
_V16 = ir.VectorType(_FLOAT, 16)
_I32 = ir.IntType(32)


# --- scalar loads from the file's bytes -------------------------------------------------------


def _byte_pointer(context, builder, array_type, array, offset):
    return builder.gep(context.make_array(array_type)(context, builder, array).data, [offset])


def _load(context, builder, signature, args, llvm_type):
    """The ``llvm_type`` value at byte ``offset`` of a ``uint8`` array, any alignment."""
    pointer = _byte_pointer(context, builder, signature.args[0], *args)
    return builder.load(builder.bitcast(pointer, llvm_type.as_pointer()), align=1)


@intrinsic
def load_f32(typingctx, data, offset):
    """The float32 at byte ``offset`` of a ``uint8`` array, any alignment."""
    return types.float32(data, types.intp), lambda *codegen: _load(*codegen, _FLOAT)


@intrinsic
def load_f16(typingctx, data, offset):
    """The float16 at byte ``offset`` of a ``uint8`` array, widened exactly to float32."""

    def codegen(context, builder, signature, args):
        return builder.fpext(_load(context, builder, signature, args, ir.HalfType()), _FLOAT)

    return types.float32(data, types.intp), codegen


@intrinsic
def load_u32(typingctx, data, offset):
    """The little-endian uint32 at byte ``offset`` of a ``uint8`` array (a q5 block's ``qh``)."""
    return types.uint32(data, types.intp), lambda *codegen: _load(*codegen, _I32)


@intrinsic
def prefetch(typingctx, data, offset):
    """A hint to bring the cache line at byte ``offset`` of a ``uint8`` array into the cache; an
    offset past the end is harmless (prefetches do not fault)."""

    def codegen(context, builder, signature, args):
        pointer = _byte_pointer(context, builder, signature.args[0], *args)
        function = builder.module.declare_intrinsic(  # llvmlite names it for its pointer kind
            "llvm.prefetch",
            [pointer.type],
            ir.FunctionType(ir.VoidType(), [pointer.type, _I32, _I32, _I32]),
        )
        read, keep_in_all_levels, data_cache = (ir.Constant(_I32, v) for v in (0, 3, 1))
        builder.call(function, [pointer, read, keep_in_all_levels, data_cache])
        return context.get_dummy_value()

    return types.none(data, types.intp), codegen


# --- the plain loops: decoding, and the reference product ---------------------------------------


@njit(nogil=True, cache=True)
def decode_row(kind, data, offset, out):
    """Row of ``out.size`` values of type ``kind`` starting at byte ``offset``, into ``out``:
    exactly ``dequantize``'s float32 values."""
    n = out.size
    if kind == F32:
        for i in range(n):
            out[i] = load_f32(data, offset + 4 * i)
    elif kind == F16:
        for i in range(n):
            out[i] = load_f16(data, offset + 2 * i)
    elif kind == Q8_0:  # d, 32 int8
        for b in range(n // 32):
            block = offset + 34 * b
            d = load_f16(data, block)
            for j in range(32):
                out[32 * b + j] = np.float32(np.int8(data[block + 2 + j])) * d
    else:  # the 4- and 5-bit formats
        size, has_minimum, has_fifth_bit = _block_layout(kind)
        zero = 0 if has_minimum else (16 if has_fifth_bit else 8)  # q - 8 (q4_0), q - 16 (q5_0)
        for b in range(n // 32):
            block = offset + size * b
            d = load_f16(data, block)
            m = load_f16(data, block + 2) if has_minimum else np.float32(0)
            qh = (
                load_u32(data, block + (4 if has_minimum else 2)) if has_fifth_bit else np.uint32(0)
            )
            qs = block + size - 16
            for j in range(32):
                q = (data[qs + j % 16] >> (4 * (j // 16))) & 15  # low nibbles 0..15, high 16..31
                q |= ((qh >> j) & 1) << 4
                value = np.float32(np.int32(q) - zero) * d
                out[32 * b + j] = value + m if has_minimum else value


@njit(inline="always")
def _block_layout(kind):
    """(bytes per block, has a minimum ``m``, has fifth bits ``qh``) of a 4/5-bit format."""
    if kind == Q4_0:
        return 18, False, False
    if kind == Q4_1:
        return 20, True, False
    if kind == Q5_0:
        return 22, False, True
    return 24, True, True  # Q5_1


@njit(nogil=True, cache=True)
def decode_rows(kind, data, row_bytes, start, out):
    """Rows ``start .. start + len(out)`` of a matrix, decoded into ``out [rows, in]``, exactly
    ``dequantize``'s values: the row blocks of prompt evaluation (blocked-f16's threads call it,
    then BLAS). The block formats are decoded 16 values at a time (``decode_row``, one at a time,
    is their test oracle): q4_0 0.32 instead of 1.32 ms per million values, and a 256-token prompt
    of the 1B shape 9.8 instead of 11.2 ms per token."""
    for r in range(out.shape[0]):
        offset, row = (start + r) * row_bytes, out[r]
        if kind == Q8_0:
            for b in range(row.size // 32):
                block = offset + 34 * b
                d = load_f16(data, block)
                v_store(row, 32 * b, v_scale(v_int8(data, block + 2), d))
                v_store(row, 32 * b + 16, v_scale(v_int8(data, block + 18), d))
        elif kind == Q4_0:
            _decode_nibble_row(data, offset, row, 18, False, False)
        elif kind == Q4_1:
            _decode_nibble_row(data, offset, row, 20, True, False)
        elif kind == Q5_0:
            _decode_nibble_row(data, offset, row, 22, False, True)
        elif kind == Q5_1:
            _decode_nibble_row(data, offset, row, 24, True, True)
        else:  # f32, f16: plain loops that LLVM vectorises
            decode_row(kind, data, offset, row)


@njit(inline="always")
def _decode_nibble_row(data, offset, row, size, has_minimum, has_fifth_bit):
    """One row of a 4/5-bit format whose blocks are ``size`` bytes (layouts in ``decode_row``)."""
    zero = np.float32(0 if has_minimum else (16 if has_fifth_bit else 8))
    for b in range(row.size // 32):
        block = offset + size * b
        d = load_f16(data, block)
        qh = load_u32(data, block + (4 if has_minimum else 2)) if has_fifth_bit else np.uint32(0)
        qs = block + size - 16  # low nibbles: elements 0..15, high nibbles: 16..31
        low = v_scale(v_nibbles(data, qs, 0, qh & 0xFFFF, zero), d)
        high = v_scale(v_nibbles(data, qs, 4, qh >> 16, zero), d)
        if has_minimum:  # q * d + m, rounded twice as dequantize does
            low, high = (
                v_shift(low, load_f16(data, block + 2)),
                v_shift(high, load_f16(data, block + 2)),
            )
        v_store(row, 32 * b, low)
        v_store(row, 32 * b + 16, high)


@njit(cache=True)
def matvec_reference(kind, data, row_bytes, x, out):
    """``out = W @ x`` the plain way, row by row: decode the row, then a float64 dot product.
    The oracle of :func:`matvec`."""
    row = np.empty(x.size, np.float32)
    for r in range(out.size):
        decode_row(kind, data, r * row_bytes, row)
        total = 0.0
        for i in range(x.size):
            total += np.float64(row[i]) * np.float64(x[i])
        out[r] = total


# --- 16-wide vectors for the block formats -------------------------------------------------------


class Vector16Type(types.Type):
    """Sixteen float32 lanes, held in one LLVM ``<16 x float>`` (one zmm register with AVX-512,
    two ymm registers with AVX2): half of a 32-element block."""

    def __init__(self):
        super().__init__(name="Vector16")


Vector16 = Vector16Type()
register_model(Vector16Type)(lambda dmm, fe_type: models.PrimitiveModel(dmm, fe_type, _V16))


def _splat(builder, value, vector_type):
    lanes = builder.insert_element(
        ir.Constant(vector_type, ir.Undefined), value, ir.Constant(_I32, 0)
    )
    return builder.shuffle_vector(
        lanes, lanes, ir.Constant(ir.VectorType(_I32, vector_type.count), [0] * vector_type.count)
    )


def _fma(builder, a, b, c):
    fma = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_V16, [_V16] * 3), "llvm.fma.v16f32"
    )
    return builder.call(fma, [a, b, c])


def _load_bytes16(context, builder, signature, data, offset):
    return _load(context, builder, signature, (data, offset), ir.VectorType(ir.IntType(8), 16))


@intrinsic
def v_zero(typingctx):
    return Vector16(), lambda context, builder, signature, args: ir.Constant(_V16, [0.0] * 16)


@intrinsic
def v_load(typingctx, x, index):
    """``x[index : index + 16]`` of a float32 array."""

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        pointer = builder.gep(array.data, [args[1]])
        return builder.load(builder.bitcast(pointer, _V16.as_pointer()), align=4)

    return Vector16(x, types.intp), codegen


@intrinsic
def v_f32(typingctx, data, offset):
    """Sixteen float32 at byte ``offset`` of a ``uint8`` array, any alignment."""
    return Vector16(data, types.intp), lambda *codegen: _load(*codegen, _V16)


@intrinsic
def v_f16(typingctx, data, offset):
    """Sixteen float16 at byte ``offset`` of a ``uint8`` array, widened exactly to float32."""

    def codegen(context, builder, signature, args):
        halves = _load(context, builder, signature, args, ir.VectorType(ir.HalfType(), 16))
        return builder.fpext(halves, _V16)

    return Vector16(data, types.intp), codegen


@intrinsic
def v_int8(typingctx, data, offset):
    """Sixteen int8 at byte ``offset`` as float32 (q8_0's quants)."""

    def codegen(context, builder, signature, args):
        return builder.sitofp(_load_bytes16(context, builder, signature, *args), _V16)

    return Vector16(data, types.intp), codegen


@intrinsic
def v_nibbles(typingctx, data, offset, shift, qh, zero):
    """Sixteen 4/5-bit quants minus ``zero`` as float32: ``(byte >> shift) & 15`` of the sixteen
    bytes at ``offset``, with bit ``k`` of ``qh`` as bit 4 of lane ``k`` (``qh`` 0 for q4)."""

    def codegen(context, builder, signature, args):
        data_, offset_, shift_, qh_, zero_ = args
        vi32 = ir.VectorType(_I32, 16)
        words = builder.zext(_load_bytes16(context, builder, signature, data_, offset_), vi32)
        words = builder.lshr(words, _splat(builder, builder.trunc(shift_, _I32), vi32))
        quants = builder.and_(words, ir.Constant(vi32, [15] * 16))
        lanes = ir.Constant(vi32, list(range(16)))
        fifth = builder.and_(
            builder.lshr(_splat(builder, qh_, vi32), lanes), ir.Constant(vi32, [1] * 16)
        )
        quants = builder.or_(quants, builder.shl(fifth, ir.Constant(vi32, [4] * 16)))
        return builder.fsub(builder.sitofp(quants, _V16), _splat(builder, zero_, _V16))

    return Vector16(data, types.intp, types.intp, types.uint32, types.float32), codegen


@intrinsic
def v_scale(typingctx, vector, d):
    """``vector * d`` (decoding: no fast-math flag, so never fused with a following add)."""

    def codegen(context, builder, signature, args):
        return builder.fmul(args[0], _splat(builder, args[1], _V16))

    return Vector16(Vector16, types.float32), codegen


@intrinsic
def v_shift(typingctx, vector, m):
    """``vector + m``."""

    def codegen(context, builder, signature, args):
        return builder.fadd(args[0], _splat(builder, args[1], _V16))

    return Vector16(Vector16, types.float32), codegen


@intrinsic
def v_store(typingctx, out, index, vector):
    """``out[index : index + 16] = vector`` for a float32 array."""

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        pointer = builder.gep(array.data, [args[1]])
        builder.store(args[2], builder.bitcast(pointer, _V16.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.none(out, types.intp, Vector16), codegen


@intrinsic
def v_dot2(typingctx, a0, x0, a1, x1):
    """``a0 * x0 + a1 * x1`` lane by lane (a block's two halves)."""

    def codegen(context, builder, signature, args):
        return _fma(builder, args[0], args[1], builder.fmul(args[2], args[3]))

    return Vector16(Vector16, Vector16, Vector16, Vector16), codegen


@intrinsic
def v_fma(typingctx, a, b, accumulator):
    """``accumulator + a * b`` lane by lane (one fused multiply-add)."""
    return Vector16(Vector16, Vector16, Vector16), lambda context, builder, sig, args: _fma(
        builder, *args
    )


@intrinsic
def v_add(typingctx, a, b):
    """``a + b`` lane by lane."""
    return Vector16(Vector16, Vector16), lambda context, builder, sig, args: builder.fadd(*args)


@intrinsic
def v_scale_add(typingctx, scale, vector, accumulator):
    """``accumulator + scale * vector`` (one fused multiply-add)."""

    def codegen(context, builder, signature, args):
        return _fma(builder, _splat(builder, args[0], _V16), args[1], args[2])

    return Vector16(types.float32, Vector16, Vector16), codegen


@intrinsic
def v_sum(typingctx, vector):
    """The sum of the sixteen lanes."""

    def codegen(context, builder, signature, args):
        reduce = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(_FLOAT, [_FLOAT, _V16]),
            "llvm.vector.reduce.fadd.v16f32",
        )
        return builder.call(reduce, [ir.Constant(_FLOAT, 0.0), args[0]])

    return types.float32(Vector16), codegen


# --- the fast matrix-vector product -------------------------------------------------------------


@njit(fastmath=FASTMATH, inline="always")
def _row_dot(kind, data, offset, x, block_sums):
    """One row of ``W @ x``: the row's weights decoded in registers and multiplied with ``x``."""
    n = x.size
    if kind == F32:
        return _float_row_dot(data, offset, x, 4)
    if kind == F16:
        return _float_row_dot(data, offset, x, 2)
    acc = v_zero()
    if kind == Q8_0:
        for b in range(n // 32):
            block, i = offset + 34 * b, 32 * b
            prefetch(data, block + PREFETCH_BYTES)
            products = v_dot2(
                v_int8(data, block + 2), v_load(x, i), v_int8(data, block + 18), v_load(x, i + 16)
            )
            acc = v_scale_add(load_f16(data, block), products, acc)
        return v_sum(acc)
    # one loop per format, its layout constant: a shared loop tested the layout in every block and
    # computed q5's fifth bits for q4 too (one thread, [8192, 2048]: q4_0 17.4 -> 8.8 ms, q4_1
    # 23.0 -> 13.5 ms)
    if kind == Q4_0:
        return _nibble_row_dot(data, offset, x, block_sums, 18, False, False)
    if kind == Q4_1:
        return _nibble_row_dot(data, offset, x, block_sums, 20, True, False)
    if kind == Q5_0:
        return _nibble_row_dot(data, offset, x, block_sums, 22, False, True)
    return _nibble_row_dot(data, offset, x, block_sums, 24, True, True)


@njit(fastmath=FASTMATH, inline="always")
def _float_row_dot(data, offset, x, width):
    """One row of float32 (``width`` 4) or float16 (2) weights: 32 values a step into two 16-wide
    accumulators, the last ``n % 32`` one by one. (A plain loop, which LLVM vectorises too, took
    74-85 instead of 65-67 ms for one token's f16 products of the 1B shape, 2 threads.)"""
    n = x.size
    low, high = v_zero(), v_zero()
    for b in range(n // 32):
        chunk, i = offset + 32 * width * b, 32 * b
        for line in range(0, 32 * width, 64):
            prefetch(data, chunk + line + PREFETCH_BYTES)
        if width == 2:
            low = v_fma(v_f16(data, chunk), v_load(x, i), low)
            high = v_fma(v_f16(data, chunk + 32), v_load(x, i + 16), high)
        else:
            low = v_fma(v_f32(data, chunk), v_load(x, i), low)
            high = v_fma(v_f32(data, chunk + 64), v_load(x, i + 16), high)
    total = v_sum(v_add(low, high))
    for i in range(n - n % 32, n):
        weight = load_f16(data, offset + 2 * i) if width == 2 else load_f32(data, offset + 4 * i)
        total += weight * x[i]
    return total


@njit(fastmath=FASTMATH, inline="always")
def _nibble_row_dot(data, offset, x, block_sums, size, has_minimum, has_fifth_bit):
    """One row of a 4/5-bit format whose blocks are ``size`` bytes (layouts in ``decode_row``)."""
    zero = np.float32(0 if has_minimum else (16 if has_fifth_bit else 8))
    acc = v_zero()
    minimums = np.float32(0)  # sum over blocks of m * sum(x over the block)
    for b in range(x.size // 32):
        block, i = offset + size * b, 32 * b
        prefetch(data, block + PREFETCH_BYTES)
        qh = load_u32(data, block + (4 if has_minimum else 2)) if has_fifth_bit else np.uint32(0)
        qs = block + size - 16  # low nibbles: elements 0..15, high nibbles: 16..31
        products = v_dot2(
            v_nibbles(data, qs, 0, qh & 0xFFFF, zero),
            v_load(x, i),
            v_nibbles(data, qs, 4, qh >> 16, zero),
            v_load(x, i + 16),
        )
        acc = v_scale_add(load_f16(data, block), products, acc)
        if has_minimum:
            minimums += load_f16(data, block + 2) * block_sums[b]
    return v_sum(acc) + minimums


@njit(fastmath=FASTMATH, parallel=True, cache=True)
def matvec(kind, data, row_bytes, x, block_sums, out):
    """``out = W @ x`` for a matrix of ``out.size`` rows of type ``kind`` stored in ``data``
    (``row_bytes`` per row), threaded over rows. ``block_sums``: ``x``'s sum over each block of 32
    (used by q4_1 and q5_1, whose values are ``q * d + m``)."""
    for r in prange(out.size):
        out[r] = _row_dot(kind, data, r * row_bytes, x, block_sums)


# attention may reorder its sums, but exp and the division are exact as NumPy's (no 'afn', 'arcp')
# and infinities and NaN propagate
ATTENTION_FASTMATH = {"contract", "reassoc", "nsz"}


@njit(fastmath=ATTENTION_FASTMATH, parallel=True, cache=True)
def attend(q, keys, values, out):
    """One query per head over every cached position, threaded over heads: q ``[H, D]``, keys
    and values ``[S, H, D]`` (the model's cache layout) -> ``out [H, D]``, as
    ``softmax(q k / sqrt(D)) v``. Reading the cache is most of it: 1B shape, 270 positions, 0.29
    ms per layer for 4.4 MB (NumPy's matrix products: 0.41; threads taking the heads in two
    shares, so that each reads half of every position's row in one piece: 0.26)."""
    n_keys, n_head, head_dim = keys.shape
    scale = np.float32(1.0 / np.sqrt(head_dim))
    for h in prange(n_head):
        scores = np.empty(n_keys, np.float32)
        top = np.float32(-np.inf)
        for s in range(n_keys):
            total = np.float32(0)
            for d in range(head_dim):
                total += q[h, d] * keys[s, h, d]
            scores[s] = total * scale
            if scores[s] > top or np.isnan(scores[s]):  # NaN once one is NaN, as NumPy's max
                top = scores[s]
        weight_sum = np.float32(0)
        for s in range(n_keys):
            scores[s] = np.exp(scores[s] - top)
            weight_sum += scores[s]
        out[h] = 0
        for s in range(n_keys):
            weight = scores[s] / weight_sum
            for d in range(head_dim):
                out[h, d] += weight * values[s, h, d]


def set_threads(count: int) -> None:
    """Threads of the next parallel kernels on this thread (at most numba's pool size)."""
    count = max(1, min(count, numba.config.NUMBA_NUM_THREADS))
    # numba's setting is per thread, and setting it costs ~10 us (0.5-0.7 ms of a token)
    if getattr(_thread_count, "value", None) != count:
        numba.set_num_threads(count)
        _thread_count.value = count


_thread_count = threading.local()  # what set_threads last set on each thread
