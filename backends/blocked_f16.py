"""``blocked-f16``: weights stay as stored in the file; decoded to float32 in row blocks on demand.

Every 2-D weight remains a view of the model file's memory map (f32, f16 or a quantized block
format). A matrix product walks the weight in blocks of rows small enough to stay in the CPU
cache: decode the block to float32, multiply it with the activations through BLAS, move on. The
rows are split between ``n_threads`` threads (NumPy ufuncs and BLAS release the GIL), the
calling thread taking one share. Resident memory is about the file size plus the KV cache, at
the cost of decoding the weights again on every evaluation.

Decoders may reorder a row's columns: a decoded block is ``[groups, rows, in / groups]`` where
group ``g`` holds the columns ``column_order[g * in/groups : (g + 1) * in/groups]``; the
activations are arranged the same way, the product is taken per group and the groups summed,
which leaves ``x @ W.T`` unchanged. This lets every decoding step run on whole contiguous arrays:

- f16: two halves are read as one ``uint32``. NumPy's ``float16 -> float32`` cast is slow; here
  integer shifts and masks put sign, exponent and mantissa at float32's positions, giving the
  even columns (group 0) and the odd columns (group 1) as ``w * 2**-112``, exact for every finite
  f16 value (subnormals included). The activations are multiplied by ``2**112`` instead of the
  weights, which saves a pass over the block and changes no rounding (powers of two);
- q4_0, q4_1, q5_0, q5_1: the 4-bit values of all blocks of the rows are split 8 bytes at a time
  into low nibbles (elements 0..15 of each block, group 0) and high nibbles (16..31, group 1);
  q5's fifth bits come from a table indexed by 16 bits of ``qh``; then float32 times the scale
  (plus the minimum). Values equal ``ggml_py.formats.quant.dequantize``'s exactly;
- q8_0 and f32: one group, natural order.
"""
from __future__ import annotations

import functools
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ggml_py.backend import Float32Ops, TensorRecord, default_thread_count, set_blas_threads
from ggml_py.formats.quant import BLOCK_FORMATS, GGMLType, dequantize

# float32 elements of one decoded block: 512 KiB, which with the staged input stays inside the
# 1 MiB L2 cache of current x86 cores; larger blocks also amortise NumPy's per-call overhead
BLOCK_ELEMENTS = 1 << 17

F16_SCALE_EXPONENT = 112                         # f16 exponent bias 15 -> f32 bias 127
_KEEP_SIGN_EXPONENT_MANTISSA = np.int32(-0x70000001)   # 0x8FFFFFFF
_KEEP_ODD_HALF = np.int32(-0x70002000)                 # 0x8FFFE000


def decode_f16_pairs(pairs: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Decode f16 rows read as ``uint32`` pairs ``[r, n/2]`` into ``out`` (int32 ``[2, r, n/2]``),
    returned as float32: the even columns, then the odd columns, each value times ``2**-112``.

    >>> w = np.array([[1.5, -2.0, 65504.0, 6e-08]], dtype=np.float16)
    >>> (decode_f16_pairs(w.view(np.uint32), np.empty((2, 1, 2), np.int32)) * 2.0**112).tolist()
    [[[1.5, 65504.0]], [[-2.0, 5.960464477539063e-08]]]
    """
    words = pairs.view(np.int32)
    even, odd = out[0], out[1]
    # Halves s eeeee mmmmmmmmmm: shifted to bits 31..16 then right by 3 (arithmetic), exponent
    # and mantissa land at float32's bits 27..13 and the sign is smeared over 31..28; the masks
    # keep bit 31 and clear 30..28 (and, for the odd half, the even half's bits below 13).
    np.left_shift(words, 16, out=even)
    np.right_shift(even, 3, out=even)
    np.bitwise_and(even, _KEEP_SIGN_EXPONENT_MANTISSA, out=even)
    np.right_shift(words, 3, out=odd)
    np.bitwise_and(odd, _KEEP_ODD_HALF, out=odd)
    return out.view(np.float32)


class BlockedMatrix:
    """A 2-D weight ``[out, in]`` left in the file, decoded ``block_rows`` rows at a time."""

    def __init__(self, record: TensorRecord):
        self.name = record.name
        self.type = GGMLType(record.type)
        self.shape = tuple(record.shape)
        n_out, n_in = self.shape
        # a plain ndarray view: slicing np.memmap runs Python code for every block
        self.rows = np.asarray(record.data).reshape(n_out, -1)    # [out, bytes per row]
        self.block_rows = max(1, min(n_out, BLOCK_ELEMENTS // n_in))
        self.column_order: Optional[np.ndarray] = None            # x's columns in decoded order
        self.groups = 1
        self.input_exponent = 0                                   # x is multiplied by 2**this
        self._decode: Callable[[int, int, "_Scratch"], np.ndarray]
        if self.type == GGMLType.F16 and n_in % 2 == 0:
            self._pairs = self.rows.view(np.uint32)
            self.column_order = np.concatenate([np.arange(0, n_in, 2), np.arange(1, n_in, 2)])
            self.groups, self.input_exponent = 2, F16_SCALE_EXPONENT
            self._decode = self._decode_f16
        elif self.type == GGMLType.F32:
            self._values = self.rows.view(np.float32)
            self._decode = self._decode_f32 if self._values.flags.aligned else self._decode_f32_unaligned
        elif self.type in _BLOCK_DECODERS:
            self._decode_block_format = _BLOCK_DECODERS[self.type]
            if self.type != GGMLType.Q8_0:
                self.column_order = np.arange(n_in).reshape(-1, 2, 16).transpose(1, 0, 2).reshape(-1)
                self.groups = 2
            self._decode = self._decode_blocks
        else:                                                     # f16 rows of odd length
            self._decode = self._decode_any

    def rows_f32(self, ids: np.ndarray) -> np.ndarray:
        """Selected rows, decoded in natural column order: float32 ``[len(ids), in]``."""
        raw = self.rows[ids]
        return dequantize(raw.reshape(-1), self.type, (len(ids), self.shape[1]))

    def arrange(self, x: np.ndarray) -> Tuple[np.ndarray, float]:
        """``x [T, in]`` as this matrix's products need it: ``[groups, in / groups, T]``, scaled
        by ``2**input_exponent``; and the factor the products must be multiplied by afterwards.

        The scale is lowered when large activations would overflow float32 (then the output
        factor restores it); results are the same either way.
        """
        if self.column_order is not None:
            x = x[:, self.column_order]
        exponent, output_factor = self.input_exponent, 1.0
        if exponent:
            largest = float(np.abs(x).max())
            if math.isfinite(largest) and largest >= 2.0**14:
                excess = math.frexp(largest)[1] - 14              # keep |x| * 2**exponent < 2**126
                exponent, output_factor = exponent - excess, 2.0**excess
            x = x * np.float32(2.0**exponent)
        arranged = np.ascontiguousarray(x.T.reshape(self.groups, -1, x.shape[0]))
        return arranged, output_factor

    def product_rows(self, x_groups: np.ndarray, out_t: np.ndarray, start: int, stop: int,
                     scratch: "_Scratch") -> None:
        """``out_t[start:stop] = W[start:stop] @ x`` block by block; ``x_groups`` from :meth:`arrange`."""
        for begin in range(start, stop, self.block_rows):
            end = min(begin + self.block_rows, stop)
            block = self._decode(begin, end, scratch)             # float32 [groups, r, in / groups]
            if self.groups == 1:
                np.matmul(block[0], x_groups[0], out=out_t[begin:end])
            else:                                                 # groups == 2
                partial = np.matmul(block, x_groups, out=scratch.array("partial", np.float32,
                                                                        (2, end - begin, out_t.shape[1])))
                np.add(partial[0], partial[1], out=out_t[begin:end])

    def _decode_f16(self, begin: int, end: int, scratch: "_Scratch") -> np.ndarray:
        pairs = self._pairs[begin:end]
        if not pairs.flags.aligned:
            pairs = scratch.copy_of(pairs)
        return decode_f16_pairs(pairs, scratch.array("f16", np.int32, (2, end - begin, self.shape[1] // 2)))

    def _decode_f32(self, begin: int, end: int, scratch: "_Scratch") -> np.ndarray:
        return self._values[None, begin:end]

    def _decode_f32_unaligned(self, begin: int, end: int, scratch: "_Scratch") -> np.ndarray:
        return scratch.copy_of(self._values[begin:end])[None]

    def _decode_any(self, begin: int, end: int, scratch: "_Scratch") -> np.ndarray:
        return dequantize(self.rows[begin:end].reshape(-1), self.type, (1, end - begin, self.shape[1]))

    def _decode_blocks(self, begin: int, end: int, scratch: "_Scratch") -> np.ndarray:
        blocks = self.rows[begin:end].reshape(-1, BLOCK_FORMATS[self.type].type_size)  # [r * nb, bytes]
        return self._decode_block_format(blocks, end - begin, scratch)


# --- block formats ----------------------------------------------------------------------------
# Each decoder takes a row block's raw blocks [r * nb, bytes per block] and returns float32
# [groups, r, nb * 32 / groups]: q8_0 one group in natural order; the 4/5-bit formats the low
# nibbles of the rows' blocks (elements 0..15 of each) as group 0, the high nibbles as group 1.

_LOW_NIBBLES = np.uint64(0x0F0F0F0F0F0F0F0F)
_BYTE_SIGN_BITS = np.uint64(0x8080808080808080)


@functools.lru_cache(maxsize=None)
def _fifth_bit_table() -> np.ndarray:
    """16 bits of a q5 ``qh`` field -> the 16 bytes ``bit << 4`` they contribute: uint64 [65536, 2]."""
    bits = (np.arange(1 << 16, dtype=np.uint32)[:, None] >> np.arange(16, dtype=np.uint32)) & 1
    return (bits << 4).astype(np.uint8).view(np.uint64)


def _scales(blocks: np.ndarray, start: int, n_rows: int, repeat: int) -> np.ndarray:
    """The f16 field at byte ``start`` of every block as float32, repeated per element: [r, nb * repeat]."""
    scale = np.ascontiguousarray(blocks[:, start:start + 2]).view("<f2").astype(np.float32)
    return np.repeat(scale.reshape(n_rows, -1), repeat, axis=1)


def _nibbles(blocks: np.ndarray, start: int, n_rows: int, scratch: "_Scratch") -> np.ndarray:
    """The 16 bytes of 4-bit pairs at ``start`` split into bytes: uint64 words [2, r, nb * 2]."""
    packed = scratch.copy_of(blocks[:, start:start + 16], "packed").view(np.uint64).reshape(n_rows, -1)
    values = scratch.array("nibbles", np.uint64, (2, *packed.shape))
    np.bitwise_and(packed, _LOW_NIBBLES, out=values[0])
    np.right_shift(packed, np.uint64(4), out=values[1])
    np.bitwise_and(values[1], _LOW_NIBBLES, out=values[1])
    return values


def _add_fifth_bits(values: np.ndarray, blocks: np.ndarray, start: int, n_rows: int, scratch: "_Scratch") -> None:
    high = scratch.copy_of(blocks[:, start:start + 4], "qh").view(np.uint32).reshape(n_rows, -1)  # [r, nb]
    halves = scratch.array("qh halves", np.uint16, (2, *high.shape))
    np.bitwise_and(high, np.uint32(0xFFFF), out=halves[0], casting="unsafe")   # elements 0..15
    np.right_shift(high, np.uint32(16), out=halves[1], casting="unsafe")       # elements 16..31
    fifth = np.take(_fifth_bit_table(), halves.reshape(-1), axis=0,
                    out=scratch.array("fifth", np.uint64, (halves.size, 2)))
    np.bitwise_or(values, fifth.reshape(values.shape), out=values)


def _subtract_from_bytes(words: np.ndarray, amount: int) -> None:
    """Subtract ``amount`` from every byte of uint64 ``words`` modulo 256 (bytes become int8)."""
    np.bitwise_or(words, _BYTE_SIGN_BITS, out=words)          # no byte can borrow from the next
    np.subtract(words, np.uint64(int.from_bytes(bytes([amount]) * 8, "little")), out=words)
    np.bitwise_xor(words, _BYTE_SIGN_BITS, out=words)


def _scaled(values: np.ndarray, signed: bool, blocks: np.ndarray, n_rows: int, has_minimum: bool,
            scratch: "_Scratch") -> np.ndarray:
    """``q * d (+ m)`` from byte values [2, r, nb * 2 words] and the blocks' f16 ``d`` (and ``m``)."""
    shape = (2, n_rows, values.shape[2] * 8)
    out = scratch.array("decoded", np.float32, shape)
    np.copyto(out, values.view(np.int8 if signed else np.uint8).reshape(shape), casting="unsafe")
    np.multiply(out, _scales(blocks, 0, n_rows, 16), out=out)
    if has_minimum:
        np.add(out, _scales(blocks, 2, n_rows, 16), out=out)
    return out


def _decode_q4_0(blocks, n_rows, scratch):                    # d, 16 bytes of nibbles; q - 8
    values = _nibbles(blocks, 2, n_rows, scratch)
    _subtract_from_bytes(values, 8)
    return _scaled(values, True, blocks, n_rows, False, scratch)


def _decode_q4_1(blocks, n_rows, scratch):                    # d, m, 16 bytes of nibbles
    return _scaled(_nibbles(blocks, 4, n_rows, scratch), False, blocks, n_rows, True, scratch)


def _decode_q5_0(blocks, n_rows, scratch):                    # d, 32 fifth bits, nibbles; q - 16
    values = _nibbles(blocks, 6, n_rows, scratch)
    _add_fifth_bits(values, blocks, 2, n_rows, scratch)
    _subtract_from_bytes(values, 16)
    return _scaled(values, True, blocks, n_rows, False, scratch)


def _decode_q5_1(blocks, n_rows, scratch):                    # d, m, 32 fifth bits, nibbles
    values = _nibbles(blocks, 8, n_rows, scratch)
    _add_fifth_bits(values, blocks, 4, n_rows, scratch)
    return _scaled(values, False, blocks, n_rows, True, scratch)


def _decode_q8_0(blocks, n_rows, scratch):                    # d, 32 int8
    out = scratch.array("decoded", np.float32, (1, n_rows, blocks.shape[0] // n_rows * 32))
    np.copyto(out.reshape(-1, 32), blocks[:, 2:].view(np.int8), casting="unsafe")
    np.multiply(out[0], _scales(blocks, 0, n_rows, 32), out=out[0])
    return out


_BLOCK_DECODERS = {GGMLType.Q4_0: _decode_q4_0, GGMLType.Q4_1: _decode_q4_1, GGMLType.Q5_0: _decode_q5_0,
                   GGMLType.Q5_1: _decode_q5_1, GGMLType.Q8_0: _decode_q8_0}


class _Scratch(threading.local):
    """Per-thread reusable buffers: allocating 512 KiB per block would map fresh pages each time."""

    def __init__(self):
        self.buffers: Dict[tuple, np.ndarray] = {}

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


class BlockedF16Backend(Float32Ops):
    name = "blocked-f16"
    description = ("weights stay memory-mapped as stored (f32, f16, quantized) and are decoded "
                   "to float32 in cache-sized row blocks on a thread pool")

    def __init__(self, n_threads: Optional[int] = None):
        self.n_threads = n_threads or default_thread_count()
        # the calling thread takes one share of every product, the pool the others
        self._pool = ThreadPoolExecutor(max(1, self.n_threads - 1), thread_name_prefix="blocked-f16")
        self._scratch = _Scratch()

    def prepare(self, path: str, tensors: Mapping[str, TensorRecord]) -> Dict[str, Any]:
        # vectors (norms, biases) are tiny: decode them once; matrices stay in the file
        return {name: BlockedMatrix(t) if len(t.shape) == 2
                else np.require(dequantize(t.data, t.type, t.shape), np.float32, ["C", "A", "O"])
                for name, t in tensors.items()}

    def embedding(self, table: BlockedMatrix, ids: np.ndarray) -> np.ndarray:
        return table.rows_f32(np.asarray(ids))

    def linear(self, x: np.ndarray, weight: BlockedMatrix, bias: Optional[np.ndarray] = None) -> np.ndarray:
        x_groups, output_factor = weight.arrange(x)                # [groups, in / groups, T]
        set_blas_threads(1)                                        # the threads here are the parallelism
        n_out = weight.shape[0]
        out_t = np.empty((n_out, x.shape[0]), dtype=np.float32)   # [out, T]: row blocks contiguous
        (start, stop), *others = _split_rows(n_out, weight.block_rows, self.n_threads)
        jobs = [self._pool.submit(weight.product_rows, x_groups, out_t, a, b, self._scratch) for a, b in others]
        weight.product_rows(x_groups, out_t, start, stop, self._scratch)
        for job in jobs:
            job.result()
        y = np.ascontiguousarray(out_t.T)                          # [T, out]
        if output_factor != 1.0:
            y *= np.float32(output_factor)
        if bias is not None:
            y += bias
        return y


def _split_rows(n_rows: int, block_rows: int, n_parts: int) -> List[tuple]:
    """``n_parts`` contiguous ranges covering ``0 .. n_rows``, cut at multiples of ``block_rows``.

    >>> _split_rows(10, 3, 2)
    [(0, 6), (6, 10)]
    """
    n_blocks = -(-n_rows // block_rows)
    cuts = [min(n_rows, (n_blocks * part // n_parts) * block_rows) for part in range(n_parts + 1)]
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]
