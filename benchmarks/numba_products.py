"""One token's matrix-vector products through the ``numba`` backend's kernel, by matrix shape;
prints Markdown.

The 97 products of a 1B-shape GPT-J token (per layer q, k, v and out ``[2048, 2048]``, fc_in
``[8192, 2048]``, fc_out ``[2048, 8192]``; then lm_head ``[50400, 2048]``), each matrix in its own
memory so that every product reads its weights from RAM as in a real token, random normal weights
quantized by the project's quantizer. Each line: median time of ``--rounds`` passes over all
matrices of that shape, and the bytes read per second. This isolates the kernels from the rest
of a token (attention, norms, Python), for comparing kernel ideas in the same minutes.

    python benchmarks/numba_products.py [--types f16,q8_0,q4_0] [--threads 2] [--rounds 5]

Needs numba and about 5 GB of RAM for the f16 matrices.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

# (label, shape, how many in one token) of the 1B shape
SHAPES = [
    ("q, k, v, out [2048, 2048]", (2048, 2048), 64),
    ("fc_in [8192, 2048]", (8192, 2048), 16),
    ("fc_out [2048, 8192]", (2048, 8192), 16),
    ("lm_head [50400, 2048]", (50400, 2048), 1),
]


def one_pass(kernel, arguments: list[tuple]) -> float:
    """Seconds to run ``kernel`` once on each argument tuple."""
    start = time.perf_counter()
    for args in arguments:
        kernel(*args)
    return time.perf_counter() - start


def measure(type_name: str, threads: int, rounds: int) -> list[str]:
    from ggml_py_backends import numba_kernels as kernels
    from ggml_py_backends.numba_backend import _read_only as read_only

    from ggml_py.formats.quant import GGMLType, quantize, row_nbytes

    ggml_type = GGMLType[type_name.upper()]
    rng = np.random.default_rng(0)
    kernels.set_threads(threads)
    lines, total_ms, total_bytes = [], 0.0, 0
    for label, (n_out, n_in), count in SHAPES:
        weights = rng.standard_normal((n_out, n_in), dtype=np.float32) * np.float32(0.02)
        raw = np.ascontiguousarray(quantize(weights, ggml_type)).reshape(-1).view(np.uint8)
        matrices = [read_only(raw.copy()) for _ in range(count)]  # each its own memory
        x = read_only(rng.standard_normal(n_in, dtype=np.float32))
        block_sums = read_only(x.reshape(-1, 32).sum(axis=1))
        out = np.empty(n_out, np.float32)
        row_bytes = row_nbytes(ggml_type, n_in)

        arguments = [(int(ggml_type), data, row_bytes, x, block_sums, out) for data in matrices]
        one_pass(kernels.matvec, arguments)  # compiles or loads the kernel, faults the pages in
        ms = 1000 * statistics.median(one_pass(kernels.matvec, arguments) for _ in range(rounds))
        nbytes = raw.nbytes * count
        total_ms, total_bytes = total_ms + ms, total_bytes + nbytes
        lines.append(f"| {type_name} | {label} x {count} | {ms:.1f} | {nbytes / ms / 1e6:.1f} |")
    lines.append(
        f"| {type_name} | **one token** | **{total_ms:.1f}** | {total_bytes / total_ms / 1e6:.1f} |"
    )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", default="f16,q8_0,q4_0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    lines = ["| type | matrices | ms | GB/s |", "|---|---|---|---|"]
    for type_name in args.types.split(","):
        lines += measure(type_name, args.threads, args.rounds)
    print(f"{args.threads} threads, median of {args.rounds} passes\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
