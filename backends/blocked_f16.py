"""``blocked-f16``: weights stay as stored in the file; decoded to float32 in row blocks on demand.

Every 2-D weight remains a view of the model file's memory map (f32, f16 or a quantized block
format). A matrix product walks the weight in blocks of rows (4 MiB of float32, in the CPU's
caches): decode the block to float32, multiply it with the activations through BLAS, move on. The
rows are split between ``n_threads`` threads (NumPy ufuncs and BLAS release the GIL), the
calling thread taking one share. Resident memory is about the file size plus the KV cache, at
the cost of decoding the weights again on every evaluation.

Decoders may reorder a row's columns: a decoded block is ``[groups, rows, in / groups]`` where
group ``g`` holds the columns ``column_order[g * in/groups : (g + 1) * in/groups]``; the
activations are arranged the same way, the product is taken per group and the groups summed,
which leaves ``x @ W.T`` unchanged. This lets every decoding step run on whole contiguous arrays:

- f16: ``ggml_py.formats.quant.decode_f16_scaled`` widens the halves to int32 and moves sign,
  exponent and mantissa to float32's positions with a shift and a mask (NumPy's own
  ``float16 -> float32`` cast is several times slower), giving ``w * 2**-112``, exact for every
  finite f16 value. The activations are multiplied by ``2**112`` instead of the weights, which
  saves a pass over the block and changes no rounding (powers of two);
- q4_0, q4_1, q5_0, q5_1, q8_0: ``ggml_py.formats.quant.decode_block_rows`` (two groups, low and
  high nibbles, for the 4/5-bit formats; one for q8_0);
- f32: one group, the rows themselves.

One token (decoding) through a block format skips the scaling pass: the products are taken per
block on the unscaled quants (for q8_0, q4_0 and q4_1 read in place from the raw rows), and each
block's dot product is multiplied by its ``d`` (plus ``m`` times the block's sum of ``x``) after.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import Any, NamedTuple

import numpy as np

from ggml_py.backend import Float32Ops, WeightTensor, default_thread_count, set_blas_threads
from ggml_py.formats.quant import (
    BLOCK_FORMATS,
    F16_SCALE_EXPONENT,
    QUANTIZED_TYPES,
    GGMLType,
    Scratch,
    block_minimums,
    block_scales,
    decode_block_rows,
    decode_f16_scaled,
    decoded_column_order,
    decoded_f16_specials,
    dequantize,
)

# float32 elements of one decoded block (4 MiB): each block costs about five NumPy calls of a few
# microseconds, so blocks must be large; on a quiet machine, 1B decoding with 2 threads, 2**20
# beat 2**19 by ~20% (f16) and ~5% (q8_0), and 2**21 was slower again (benchmarks/README.md)
BLOCK_ELEMENTS = 1 << 20

# block formats whose quants one token's product reads straight from the raw rows; the 5-bit
# formats are decoded to their quants first
RAW_QUANTS = (GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q8_0)


class PerBlockActivations(NamedTuple):
    """One token's ``x`` as :meth:`BlockedMatrix._product_scaling_sums` needs it."""

    blocks: np.ndarray  # [groups, nb, width, 1], laid out like the quants
    offsets: np.ndarray | None  # [nb]: taken off each block's dot product (q4_0: 8 * sum)
    totals: np.ndarray | None  # [nb]: sum of x over each block, times m (q4_1, q5_1)


class BlockedMatrix:
    """A 2-D weight ``[out, in]`` left in the file, decoded ``block_rows`` rows at a time."""

    def __init__(self, record: WeightTensor):
        self.name = record.name
        self.type = GGMLType(record.type)
        self.shape = tuple(record.shape)
        n_out, n_in = self.shape
        # a plain ndarray view: slicing np.memmap runs Python code for every block
        self.rows = np.asarray(record.data).reshape(n_out, -1)  # [out, bytes per row]
        self.block_rows = max(1, min(n_out, BLOCK_ELEMENTS // n_in))
        self.column_order: np.ndarray | None = None  # x's columns in decoded order
        self.groups = 1
        self.input_exponent = 0  # x is multiplied by 2**this
        self._decode: Callable[[int, int, Scratch], np.ndarray]
        if self.type == GGMLType.F16:
            self._halves = self.rows.view(np.int16)
            self.input_exponent = F16_SCALE_EXPONENT
            self._decode = self._decode_f16
            # per row block: unknown (None) until first decoded, then whether it holds
            # infinities or NaN, which the fast decoding turns into finite values
            self._f16_specials: list[bool | None] = [None] * -(-n_out // self.block_rows)
        elif self.type == GGMLType.F32:
            self._values = self.rows.view(np.float32)
            self._decode = (
                self._decode_f32 if self._values.flags.aligned else self._decode_f32_unaligned
            )
        else:
            if self.type != GGMLType.Q8_0:
                self.column_order = decoded_column_order(self.type, n_in)
                self.groups = 2
            self._decode = self._decode_blocks
        # block formats (q * d, or q * d + m): one token's product takes d and m after the dot products
        self._folds_scales = self.type in QUANTIZED_TYPES

    def rows_f32(self, ids: np.ndarray) -> np.ndarray:
        """Selected rows, decoded in natural column order: float32 ``[len(ids), in]``."""
        raw = self.rows[ids]
        return dequantize(raw.reshape(-1), self.type, (len(ids), self.shape[1]))

    def arrange(self, x: np.ndarray) -> tuple[Any, float]:
        """``x [T, in]`` as this matrix's products need it: ``[groups, in / groups, T]``, scaled
        by ``2**input_exponent``; and the factor the products must be multiplied by afterwards.
        One token through a block format gets :meth:`_arrange_per_block`'s form instead.

        The scale is lowered when large activations would overflow float32 (then the output
        factor restores it); results are the same either way.
        """
        if self._folds_scales and x.shape[0] == 1:
            return self._arrange_per_block(x[0]), 1.0
        if self.column_order is not None:
            x = x[:, self.column_order]
        exponent, output_factor = self.input_exponent, 1.0
        if exponent:
            largest = float(np.abs(x).max())
            if math.isfinite(largest) and largest >= 2.0**14:
                excess = math.frexp(largest)[1] - 14  # keep |x| * 2**exponent < 2**126
                exponent, output_factor = exponent - excess, 2.0**excess
            x = x * np.float32(2.0**exponent)
        arranged = np.ascontiguousarray(x.T.reshape(self.groups, -1, x.shape[0]))
        return arranged, output_factor

    def product_rows(
        self, x_arranged: Any, out_t: np.ndarray, start: int, stop: int, scratch: Scratch
    ) -> None:
        """``out_t[start:stop] = W[start:stop] @ x`` block by block; ``x_arranged`` from :meth:`arrange`."""
        for begin in range(start, stop, self.block_rows):
            end = min(begin + self.block_rows, stop)
            if self._folds_scales and out_t.shape[1] == 1:
                self._product_scaling_sums(x_arranged, out_t, begin, end, scratch)
                continue
            block = self._decode(begin, end, scratch)  # float32 [groups, r, in / groups]
            if self.groups == 1:
                np.matmul(block[0], x_arranged[0], out=out_t[begin:end])
            else:  # groups == 2
                partial = np.matmul(
                    block,
                    x_arranged,
                    out=scratch.array("partial", np.float32, (2, end - begin, out_t.shape[1])),
                )
                np.add(partial[0], partial[1], out=out_t[begin:end])

    def _arrange_per_block(self, x: np.ndarray) -> PerBlockActivations:
        """One token's ``x [in]`` for :meth:`_product_scaling_sums`, block by block in the layout
        of :meth:`_unscaled_quants`' values.

        q8_0, q4_0 and q4_1 are read in place, whole blocks at a time, header bytes (``d``, ``m``)
        included: the activations get zeros under those bytes, so they add nothing to the dot products.
        """
        n_blocks = self.shape[1] // 32
        per_block = x.reshape(n_blocks, 32)
        totals = per_block.sum(axis=1) if self.type in (GGMLType.Q4_1, GGMLType.Q5_1) else None
        if self.type not in RAW_QUANTS:  # q5: decoded quants, column order
            return PerBlockActivations(
                x[self.column_order].reshape(2, n_blocks, 16, 1), None, totals
            )
        type_size = BLOCK_FORMATS[self.type].type_size
        if self.type == GGMLType.Q8_0:  # d, then 32 int8 quants
            arranged = np.zeros((1, n_blocks, type_size, 1), np.float32)
            arranged[0, :, 2:, 0] = per_block
            return PerBlockActivations(arranged, None, None)
        header = type_size - 16  # d (and m), then 16 bytes of nibbles
        arranged = np.zeros((2, n_blocks, type_size, 1), np.float32)
        arranged[0, :, header:, 0] = per_block[:, :16]  # low nibbles: elements 0..15
        arranged[1, :, header:, 0] = per_block[:, 16:]  # high nibbles: 16..31
        offsets = 8 * per_block.sum(axis=1) if self.type == GGMLType.Q4_0 else None  # (q - 8) * d
        return PerBlockActivations(arranged, offsets, totals)

    def _unscaled_quants(self, begin: int, end: int, scratch: Scratch) -> np.ndarray:
        """Rows ``begin:end`` as float32 quants before ``d`` and ``m``, ``[groups, r, nb * width]``."""
        raw = self.rows[begin:end]  # [r, nb * type_size] bytes
        if self.type not in RAW_QUANTS:
            blocks = raw.reshape(-1, BLOCK_FORMATS[self.type].type_size)
            return decode_block_rows(blocks, self.type, end - begin, scratch, scale=False)
        groups = 1 if self.type == GGMLType.Q8_0 else 2
        values = scratch.array("quants", np.float32, (groups, *raw.shape))
        if self.type == GGMLType.Q8_0:
            np.copyto(values[0], raw.view(np.int8), casting="unsafe")
        else:  # nibbles, split and cast in one pass each
            np.bitwise_and(raw, np.uint8(0x0F), out=values[0], casting="unsafe")
            np.right_shift(raw, np.uint8(4), out=values[1], casting="unsafe")
        return values

    def _product_scaling_sums(
        self,
        x_arranged: PerBlockActivations,
        out_t: np.ndarray,
        begin: int,
        end: int,
        scratch: Scratch,
    ) -> None:
        """One token (``T == 1``) through rows ``begin:end`` of a block format: dot products of
        each block's unscaled quants with its part of ``x``, then times the block's ``d`` (plus
        ``m`` times the block's sum of ``x``) and summed per row. Scaling ``r * nb`` sums instead
        of the ``r * nb * 32`` decoded values saves a pass over the block (benchmarks/README.md)."""
        n_rows, (groups, n_blocks, width, _) = end - begin, x_arranged.blocks.shape
        quants = self._unscaled_quants(begin, end, scratch)  # [g, r, nb * width]
        per_block = quants.reshape(groups, n_rows, n_blocks, width).transpose(
            0, 2, 1, 3
        )  # [g, nb, r, width]
        sums = np.matmul(
            per_block,
            x_arranged.blocks,
            out=scratch.array("block sums", np.float32, (groups, n_blocks, n_rows, 1)),
        )
        block_sums = (
            sums[0, :, :, 0] + sums[1, :, :, 0] if groups == 2 else sums[0, :, :, 0]
        )  # [nb, r]
        if x_arranged.offsets is not None:
            block_sums -= x_arranged.offsets[:, None]
        # the scales read in [nb, r] order like the sums: a transposed product costs ~5x more
        blocks = (
            self.rows[begin:end].reshape(n_rows, n_blocks, -1).transpose(1, 0, 2)
        )  # [nb, r, bytes]
        out_rows = out_t[begin:end, 0]
        np.einsum("br,br->r", block_sums, block_scales(blocks)[..., 0], out=out_rows)
        if x_arranged.totals is not None:
            out_rows += np.einsum("br,b->r", block_minimums(blocks)[..., 0], x_arranged.totals)

    def _decode_f16(self, begin: int, end: int, scratch: Scratch) -> np.ndarray:
        halves = self._halves[None, begin:end]
        block = decode_f16_scaled(
            halves, scratch.array("f16", np.int32, (1, end - begin, self.shape[1]))
        )
        index = begin // self.block_rows  # blocks start at multiples of block_rows
        if self._f16_specials[index] is None:  # looked for once: real checkpoints have none
            self._f16_specials[index] = decoded_f16_specials(block)
        if self._f16_specials[index]:  # NumPy's exact cast, scaled like the fast path's values
            np.copyto(block, halves.view("<f2"))
            block *= np.float32(2.0**-F16_SCALE_EXPONENT)
        return block

    def _decode_f32(self, begin: int, end: int, scratch: Scratch) -> np.ndarray:
        return self._values[None, begin:end]

    def _decode_f32_unaligned(self, begin: int, end: int, scratch: Scratch) -> np.ndarray:
        return scratch.copy_of(self._values[begin:end])[None]

    def _decode_blocks(self, begin: int, end: int, scratch: Scratch) -> np.ndarray:
        blocks = self.rows[begin:end].reshape(
            -1, BLOCK_FORMATS[self.type].type_size
        )  # [r * nb, bytes]
        return decode_block_rows(blocks, self.type, end - begin, scratch)


class BlockedF16Backend(Float32Ops):
    name = "blocked-f16"
    description = (
        "weights stay memory-mapped as stored (f32, f16, quantized) and are decoded "
        "to float32 in cache-sized row blocks on a thread pool"
    )

    def __init__(self, n_threads: int | None = None):
        self.n_threads = n_threads or default_thread_count()
        # the calling thread takes one share of every product, the pool the others
        self._pool = ThreadPoolExecutor(
            max(1, self.n_threads - 1), thread_name_prefix="blocked-f16"
        )
        self._scratch = Scratch()

    def prepare(self, path: str, tensors: Mapping[str, WeightTensor]) -> dict[str, Any]:
        # vectors (norms, biases) are tiny: decode them once; matrices stay in the file
        return {
            name: BlockedMatrix(t)
            if len(t.shape) == 2
            else np.require(dequantize(t.data, t.type, t.shape), np.float32, ["C", "A", "O"])
            for name, t in tensors.items()
        }

    def embedding(self, table: BlockedMatrix, ids: np.ndarray) -> np.ndarray:
        return table.rows_f32(np.asarray(ids))

    def linear(
        self, x: np.ndarray, weight: BlockedMatrix, bias: np.ndarray | None = None
    ) -> np.ndarray:
        x_groups, output_factor = weight.arrange(x)  # [groups, in / groups, T]
        set_blas_threads(1)  # the threads here are the parallelism
        n_out = weight.shape[0]
        out_t = np.empty((n_out, x.shape[0]), dtype=np.float32)  # [out, T]: row blocks contiguous
        self.on_row_ranges(
            lambda start, stop: weight.product_rows(x_groups, out_t, start, stop, self._scratch),
            n_out,
            weight.block_rows,
        )
        y = np.ascontiguousarray(out_t.T)  # [T, out]
        if output_factor != 1.0:
            y *= np.float32(output_factor)
        if bias is not None:
            y += bias
        return y

    def on_row_ranges(self, work: Callable[[int, int], None], n_rows: int, block_rows: int) -> None:
        """``work(start, stop)`` over rows ``0 .. n_rows``, cut into ``n_threads`` contiguous
        ranges at multiples of ``block_rows``: the calling thread takes the first, the pool the
        others; returns when all are done."""
        (start, stop), *others = _split_rows(n_rows, block_rows, self.n_threads)
        jobs = [self._pool.submit(work, a, b) for a, b in others]
        work(start, stop)
        for job in jobs:
            job.result()


def _split_rows(n_rows: int, block_rows: int, n_parts: int) -> list[tuple]:
    """``n_parts`` contiguous ranges covering ``0 .. n_rows``, cut at multiples of ``block_rows``.

    >>> _split_rows(10, 3, 2)
    [(0, 6), (6, 10)]
    """
    n_blocks = -(-n_rows // block_rows)
    cuts = [min(n_rows, (n_blocks * part // n_parts) * block_rows) for part in range(n_parts + 1)]
    return [(a, b) for a, b in pairwise(cuts) if b > a]
