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
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ggml_py.backend import Float32Ops, TensorRecord, default_thread_count, set_blas_threads
from ggml_py.formats.quant import (BLOCK_FORMATS, F16_SCALE_EXPONENT, GGMLType, Scratch, block_scales,
                                   decode_block_rows, decode_f16_scaled, decoded_column_order, dequantize)

# float32 elements of one decoded block (4 MiB): each block costs about five NumPy calls of a few
# microseconds, so blocks must be large; on a quiet machine, 1B decoding with 2 threads, 2**20
# beat 2**19 by ~20% (f16) and ~5% (q8_0), and 2**21 was slower again (benchmarks/README.md)
BLOCK_ELEMENTS = 1 << 20


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
        self._decode: Callable[[int, int, Scratch], np.ndarray]
        if self.type == GGMLType.F16:
            self._halves = self.rows.view(np.int16)
            self.input_exponent = F16_SCALE_EXPONENT
            self._decode = self._decode_f16
        elif self.type == GGMLType.F32:
            self._values = self.rows.view(np.float32)
            self._decode = self._decode_f32 if self._values.flags.aligned else self._decode_f32_unaligned
        else:
            if self.type != GGMLType.Q8_0:
                self.column_order = decoded_column_order(self.type, n_in)
                self.groups = 2
            self._decode = self._decode_blocks
        # formats whose values are q * d: one token's product can take d after the dot products
        self._folds_scales = self.type in (GGMLType.Q4_0, GGMLType.Q5_0, GGMLType.Q8_0)

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
                     scratch: Scratch) -> None:
        """``out_t[start:stop] = W[start:stop] @ x`` block by block; ``x_groups`` from :meth:`arrange`."""
        for begin in range(start, stop, self.block_rows):
            end = min(begin + self.block_rows, stop)
            if self._folds_scales and out_t.shape[1] == 1:
                self._product_scaling_sums(x_groups, out_t, begin, end, scratch)
                continue
            block = self._decode(begin, end, scratch)             # float32 [groups, r, in / groups]
            if self.groups == 1:
                np.matmul(block[0], x_groups[0], out=out_t[begin:end])
            else:                                                 # groups == 2
                partial = np.matmul(block, x_groups, out=scratch.array("partial", np.float32,
                                                                        (2, end - begin, out_t.shape[1])))
                np.add(partial[0], partial[1], out=out_t[begin:end])

    def _product_scaling_sums(self, x_groups: np.ndarray, out_t: np.ndarray, begin: int, end: int,
                              scratch: Scratch) -> None:
        """One token (``T == 1``) through rows ``begin:end`` of a q * d format: dot products of
        each block's unscaled quants with its part of ``x``, then times the block's ``d`` and
        summed per row. Scaling ``r * nb`` sums instead of the ``r * nb * 32`` decoded values
        saves a pass over the block (q8_0 decode ~16% faster, benchmarks/README.md)."""
        n_rows = end - begin
        blocks = self.rows[begin:end].reshape(-1, BLOCK_FORMATS[self.type].type_size)  # [r * nb, bytes]
        n_blocks, width = blocks.shape[0] // n_rows, 32 // self.groups
        quants = decode_block_rows(blocks, self.type, n_rows, scratch, scale=False)   # [g, r, nb * width]
        per_block = quants.reshape(self.groups, n_rows, n_blocks, width).transpose(0, 2, 1, 3)  # [g, nb, r, width]
        sums = np.matmul(per_block, x_groups.reshape(self.groups, n_blocks, width, 1),
                         out=scratch.array("block sums", np.float32, (self.groups, n_blocks, n_rows, 1)))
        block_sums = sums[0, :, :, 0] + sums[1, :, :, 0] if self.groups == 2 else sums[0, :, :, 0]  # [nb, r]
        scaled = block_sums.T * block_scales(blocks).reshape(n_rows, n_blocks)   # [r, nb]
        np.sum(scaled, axis=1, out=out_t[begin:end, 0])

    def _decode_f16(self, begin: int, end: int, scratch: Scratch) -> np.ndarray:
        return decode_f16_scaled(self._halves[None, begin:end], scratch.array("f16", np.int32, (1, end - begin, self.shape[1])))

    def _decode_f32(self, begin: int, end: int, scratch: Scratch) -> np.ndarray:
        return self._values[None, begin:end]

    def _decode_f32_unaligned(self, begin: int, end: int, scratch: Scratch) -> np.ndarray:
        return scratch.copy_of(self._values[begin:end])[None]

    def _decode_blocks(self, begin: int, end: int, scratch: Scratch) -> np.ndarray:
        blocks = self.rows[begin:end].reshape(-1, BLOCK_FORMATS[self.type].type_size)  # [r * nb, bytes]
        return decode_block_rows(blocks, self.type, end - begin, scratch)


class BlockedF16Backend(Float32Ops):
    name = "blocked-f16"
    description = ("weights stay memory-mapped as stored (f32, f16, quantized) and are decoded "
                   "to float32 in cache-sized row blocks on a thread pool")

    def __init__(self, n_threads: Optional[int] = None):
        self.n_threads = n_threads or default_thread_count()
        # the calling thread takes one share of every product, the pool the others
        self._pool = ThreadPoolExecutor(max(1, self.n_threads - 1), thread_name_prefix="blocked-f16")
        self._scratch = Scratch()

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
