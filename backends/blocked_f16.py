"""``blocked-f16``: weights stay as stored in the file; decoded to float32 in row blocks on demand.

Every 2-D weight remains a view of the model file's memory map (f32, f16 or a quantized block
format). A matrix product walks the weight in blocks of rows small enough to stay in the CPU
cache: decode the block to float32, multiply it with the activations through BLAS, move on. The
rows are split between ``n_threads`` worker threads (NumPy ufuncs and BLAS release the GIL). So
resident memory is about the file size plus the KV cache, at the cost of decoding the weights
again on every evaluation.

f16 decoding avoids NumPy's slow ``float16 -> float32`` cast: two adjacent f16 values are read as
one ``uint32``; integer shifts and masks move sign, exponent and mantissa into float32 position
and a multiplication by 2**112 rebiases the exponent. That is exact for every finite f16 value
(subnormals included). The even-indexed columns come out first and the odd-indexed ones second,
so the activations are permuted the same way before the product, which leaves it unchanged.

The block formats (q4_0, q4_1, q5_0, q5_1, q8_0) are decoded with whole-array integer operations
on 8 bytes at a time rather than per 32-element block: the 4-bit values of every block of a row
are split into all low nibbles, then all high nibbles (again a column permutation), the fifth bits
of q5 come from a lookup table indexed by 16 bits at a time, and the scales multiply the result
once converted to float32. The values are exactly those of ``ggml_py.formats.quant.dequantize``.
"""
from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np

from ggml_py.backend import Float32Ops, TensorRecord, default_thread_count, set_blas_threads
from ggml_py.formats.quant import BLOCK_FORMATS, GGMLType, dequantize

# float32 elements of one decoded block: 512 KiB, which with the staged input stays inside the
# 1 MiB L2 cache of current x86 cores; larger blocks also amortise NumPy's per-call overhead
BLOCK_ELEMENTS = 1 << 17

_HIGH_HALF = np.uint32(0xFFFF0000)
_CLEAR_SIGN_COPIES = np.int32(-0x70000001)      # 0x8FFFFFFF
_EXPONENT_REBIAS = np.float32(2.0 ** 112)        # f16 exponent bias 15 -> f32 bias 127


def decode_f16_pairs(pairs: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Decode f16 rows read as ``uint32`` pairs ``[r, n/2]`` into float32 ``[r, n]`` held by ``out``
    (an int32 scratch array), columns ordered even indices first, then odd indices.

    >>> w = np.array([[1.5, -2.0, 65504.0, 6e-08]], dtype=np.float16)
    >>> decode_f16_pairs(w.view(np.uint32), np.empty((1, 4), np.int32)).tolist()
    [[1.5, 65504.0, -2.0, 5.960464477539063e-08]]
    """
    half = pairs.shape[1]
    np.left_shift(pairs, np.uint32(16), out=out[:, :half].view(np.uint32))  # even value -> high half
    np.bitwise_and(pairs, _HIGH_HALF, out=out[:, half:].view(np.uint32))    # odd value is already there
    # f16 bits s eeeee mmmmmmmmmm sit at 31..16; an arithmetic shift by 3 puts exponent and
    # mantissa at float32's positions and smears the sign over bits 31..28; clear 30..28.
    np.right_shift(out, 3, out=out)
    np.bitwise_and(out, _CLEAR_SIGN_COPIES, out=out)
    values = out.view(np.float32)
    values *= _EXPONENT_REBIAS
    return values


class BlockedMatrix:
    """A 2-D weight ``[out, in]`` left in the file, decoded ``block_rows`` rows at a time."""

    def __init__(self, record: TensorRecord):
        self.name = record.name
        self.type = GGMLType(record.type)
        self.shape = tuple(record.shape)
        n_out, n_in = self.shape
        self.rows = record.data.reshape(n_out, -1)                # [out, bytes per row]
        self.block_rows = max(1, min(n_out, BLOCK_ELEMENTS // n_in))
        self.column_order: Optional[np.ndarray] = None            # permutation of x's columns
        self._decode: Callable[[int, int, "_Scratch"], np.ndarray]
        if self.type == GGMLType.F16 and n_in % 2 == 0:
            self._pairs = self.rows.view(np.uint32)
            self.column_order = np.concatenate([np.arange(0, n_in, 2), np.arange(1, n_in, 2)])
            self._decode = self._decode_f16
        elif self.type == GGMLType.F32:
            self._values = self.rows.view(np.float32)
            self._decode = self._decode_f32 if self._values.flags.aligned else self._decode_f32_unaligned
        elif self.type in _BLOCK_DECODERS:
            self._decode_block_format = _BLOCK_DECODERS[self.type]
            if self.type != GGMLType.Q8_0:
                self.column_order = _nibble_split_order(n_in)
            self._decode = self._decode_blocks
        else:                                                     # f16 rows of odd length
            self._decode = self._decode_any

    def rows_f32(self, ids: np.ndarray) -> np.ndarray:
        """Selected rows, decoded in natural column order: float32 ``[len(ids), in]``."""
        raw = self.rows[ids]
        return dequantize(raw.reshape(-1), self.type, (len(ids), self.shape[1]))

    def product_rows(self, x_t: np.ndarray, out_t: np.ndarray, start: int, stop: int, scratch: "_Scratch") -> None:
        """``out_t[start:stop] = W[start:stop] @ x_t`` block by block (x_t: ``[in, T]``, permuted)."""
        for begin in range(start, stop, self.block_rows):
            end = min(begin + self.block_rows, stop)
            block = self._decode(begin, end, scratch)             # float32 [end - begin, in]
            np.matmul(block, x_t, out=out_t[begin:end])

    def _decode_f16(self, begin: int, end: int, scratch: "_Scratch") -> np.ndarray:
        pairs = self._pairs[begin:end]
        if not pairs.flags.aligned:
            pairs = scratch.copy_of(pairs)
        return decode_f16_pairs(pairs, scratch.array("f16", np.int32, (end - begin, self.shape[1])))

    def _decode_f32(self, begin: int, end: int, scratch: "_Scratch") -> np.ndarray:
        return self._values[begin:end]

    def _decode_f32_unaligned(self, begin: int, end: int, scratch: "_Scratch") -> np.ndarray:
        return scratch.copy_of(self._values[begin:end])

    def _decode_any(self, begin: int, end: int, scratch: "_Scratch") -> np.ndarray:
        return dequantize(self.rows[begin:end].reshape(-1), self.type, (end - begin, self.shape[1]))

    def _decode_blocks(self, begin: int, end: int, scratch: "_Scratch") -> np.ndarray:
        blocks = self.rows[begin:end].reshape(-1, BLOCK_FORMATS[self.type].type_size)  # [r * nb, bytes]
        return self._decode_block_format(blocks, end - begin, scratch)

# --- block formats ----------------------------------------------------------------------------
# Each decoder takes a row block's raw blocks [r * nb, bytes per block] and returns float32
# [r, nb * 32]: q8_0 in natural column order, the 4/5-bit formats as all low nibbles of the row
# (elements 0..15 of each block) followed by all high nibbles (elements 16..31).

_LOW_NIBBLES = np.uint64(0x0F0F0F0F0F0F0F0F)
_BYTE_SIGN_BITS = np.uint64(0x8080808080808080)


def _nibble_split_order(n_in: int) -> np.ndarray:
    """Column order of a decoded 4/5-bit row: low halves of every block, then high halves.

    >>> _nibble_split_order(64)[[0, 15, 16, 31, 32, 63]].tolist()
    [0, 15, 32, 47, 16, 63]
    """
    return np.arange(n_in).reshape(-1, 2, 16).transpose(1, 0, 2).reshape(-1)


@functools.lru_cache(maxsize=None)
def _fifth_bit_table() -> np.ndarray:
    """16 bits of a q5 ``qh`` field -> the 16 bytes ``bit << 4`` they contribute: uint64 [65536, 2]."""
    bits = (np.arange(1 << 16, dtype=np.uint32)[:, None] >> np.arange(16, dtype=np.uint32)) & 1
    return (bits << 4).astype(np.uint8).view(np.uint64)


def _scales(blocks: np.ndarray, start: int, n_rows: int, repeat: int) -> np.ndarray:
    """The f16 field at byte ``start`` of every block, as float32 repeated per element: [r, 1, nb * repeat]."""
    scale = np.ascontiguousarray(blocks[:, start:start + 2]).view("<f2").astype(np.float32)
    return np.repeat(scale.reshape(n_rows, 1, -1), repeat, axis=2)


def _nibbles(blocks: np.ndarray, start: int, n_rows: int, scratch: "_Scratch") -> np.ndarray:
    """The 16 bytes of 4-bit pairs at ``start`` split into bytes: uint64 words [r, 2, nb * 2]."""
    packed = scratch.copy_of(blocks[:, start:start + 16], "packed").view(np.uint64).reshape(n_rows, 1, -1)
    values = scratch.array("nibbles", np.uint64, (n_rows, 2, packed.shape[2]))
    np.bitwise_and(packed, _LOW_NIBBLES, out=values[:, :1])
    np.right_shift(packed, np.uint64(4), out=values[:, 1:])
    np.bitwise_and(values[:, 1:], _LOW_NIBBLES, out=values[:, 1:])
    return values


def _add_fifth_bits(values: np.ndarray, blocks: np.ndarray, start: int, n_rows: int, scratch: "_Scratch") -> None:
    high = scratch.copy_of(blocks[:, start:start + 4], "qh").view(np.uint32).reshape(n_rows, 1, -1)  # [r, 1, nb]
    halves = scratch.array("qh halves", np.uint16, (n_rows, 2, high.shape[2]))
    np.bitwise_and(high, np.uint32(0xFFFF), out=halves[:, :1], casting="unsafe")   # elements 0..15
    np.right_shift(high, np.uint32(16), out=halves[:, 1:], casting="unsafe")       # elements 16..31
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
    """``q * d (+ m)`` from byte values [r, 2, nb * 2 words] and the block's f16 ``d`` (and ``m``)."""
    shape = (n_rows, 2, values.shape[2] * 8)
    out = scratch.array("decoded", np.float32, shape)
    np.copyto(out, values.view(np.int8 if signed else np.uint8).reshape(shape), casting="unsafe")
    np.multiply(out, _scales(blocks, 0, n_rows, 16), out=out)
    if has_minimum:
        np.add(out, _scales(blocks, 2, n_rows, 16), out=out)
    return out.reshape(n_rows, -1)


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
    out = scratch.array("decoded", np.float32, (n_rows, 1, blocks.shape[0] // n_rows * 32))
    np.copyto(out.reshape(-1, 32), blocks[:, 2:].view(np.int8), casting="unsafe")
    np.multiply(out, _scales(blocks, 0, n_rows, 32), out=out)
    return out.reshape(n_rows, -1)


_BLOCK_DECODERS = {GGMLType.Q4_0: _decode_q4_0, GGMLType.Q4_1: _decode_q4_1, GGMLType.Q5_0: _decode_q5_0,
                   GGMLType.Q5_1: _decode_q5_1, GGMLType.Q8_0: _decode_q8_0}


class _Scratch(threading.local):
    """Per-thread reusable buffers: allocating 256 KiB per block would map fresh pages each time."""

    def __init__(self):
        self.buffers: Dict[tuple, np.ndarray] = {}

    def array(self, use: str, dtype: type, shape: tuple) -> np.ndarray:
        key = (use, np.dtype(dtype).str, shape)
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
        if weight.column_order is not None:
            x = x[:, weight.column_order]
        x_t = np.ascontiguousarray(x.T)                            # [in, T]
        set_blas_threads(1)                                        # the workers are the parallelism
        n_out = weight.shape[0]
        out_t = np.empty((n_out, x.shape[0]), dtype=np.float32)   # [out, T]: row blocks contiguous
        (start, stop), *others = _split_rows(n_out, weight.block_rows, self.n_threads)
        jobs = [self._pool.submit(weight.product_rows, x_t, out_t, a, b, self._scratch) for a, b in others]
        weight.product_rows(x_t, out_t, start, stop, self._scratch)
        for job in jobs:
            job.result()
        y = np.ascontiguousarray(out_t.T)                          # [T, out]
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
