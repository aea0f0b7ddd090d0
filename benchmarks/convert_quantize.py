"""Time and peak memory of ``ggml-py convert`` and ``ggml-py quantize`` on GPT-J-shaped checkpoints.

Synthesizes a random f16 checkpoint (one ``model.safetensors`` written here with NumPy, no torch)
of the 1B shape (n_embd 2048, 16 layers, 16 heads, rotary 64, vocabulary 50400), runs each
command in a child process and prints a Markdown table of wall time, throughput (input bytes /
time) and the child's peak resident set size (``wait4`` rusage). ``--6b`` adds the GPT-J-6B shape
(about 25 GB of disk for the checkpoint and the f16 file; check ``df`` first). Everything is
written to a temporary folder that is deleted at the end.

    /work/venv/bin/python benchmarks/convert_quantize.py [--6b] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

import numpy as np

from ggml_py.formats.gptj import tensor_names, tensor_shapes
from ggml_py.tokenizer import bytes_to_token


class Shape(NamedTuple):
    name: str
    n_embd: int
    n_layer: int
    n_head: int
    n_rot: int
    n_vocab: int


SHAPES = {
    "1B": Shape("1B", 2048, 16, 16, 64, 50400),
    "6B": Shape("6B", 4096, 28, 16, 64, 50400),
}


def write_checkpoint(folder: str, shape: Shape) -> int:
    """A Hugging Face folder with random f16 weights; returns the safetensors file size."""
    config = {
        "model_type": "gptj",
        "n_embd": shape.n_embd,
        "n_layer": shape.n_layer,
        "n_head": shape.n_head,
        "rotary_dim": shape.n_rot,
        "n_positions": 2048,
        "vocab_size": shape.n_vocab,
        "n_inner": None,
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": False,
    }
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    # a distinct byte string per id; the benchmark is about tensors, not tokenization
    vocab = {bytes_to_token(f"tok{i}".encode()): i for i in range(shape.n_vocab)}
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    shapes = tensor_shapes(shape.n_vocab, shape.n_embd, shape.n_layer)
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in tensor_names(shape.n_layer):
        nbytes = 2 * int(np.prod(shapes[name]))
        header[name] = {
            "dtype": "F16",
            "shape": list(shapes[name]),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    rng = np.random.default_rng(0)
    with open(os.path.join(folder, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded)
        for name in tensor_names(shape.n_layer):
            rows, *rest = shapes[name]
            row_len = rest[0] if rest else rows
            n_rows = rows if rest else 1
            step = max(1, (1 << 22) // row_len)
            for start in range(0, n_rows, step):
                count = min(step, n_rows - start)
                block = rng.standard_normal((count, row_len), dtype=np.float32) * np.float32(0.02)
                f.write(block.astype("<f2").tobytes())
    return os.path.getsize(os.path.join(folder, "model.safetensors"))


def run_child(arguments: list[str]) -> tuple[float, float]:
    """Run ``python -m ggml_py ARGS``; returns (seconds, peak RSS in MiB) of that child alone."""
    start = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "ggml_py", *arguments])
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(
            f"ggml-py {' '.join(arguments)} failed with exit code {process.returncode}"
        )
    return seconds, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def benchmark(shape: Shape, workdir: str) -> list[str]:
    rows = []
    with tempfile.TemporaryDirectory(dir=workdir, prefix=f"ggml-py-bench-{shape.name}-") as folder:
        checkpoint_bytes = write_checkpoint(folder, shape)
        f16 = os.path.join(folder, "ggml-model-f16.bin")
        jobs = [
            (
                "convert f16",
                ["convert", folder, "--outtype", "f16", "--outfile", f16, "--quiet"],
                checkpoint_bytes,
                f16,
            ),
        ]
        for outtype in ("q8_0", "q4_0"):
            out = os.path.join(folder, f"direct-{outtype}.bin")
            jobs.append(
                (
                    f"convert {outtype}",
                    ["convert", folder, "--outtype", outtype, "--outfile", out, "--quiet"],
                    checkpoint_bytes,
                    out,
                )
            )
        for outtype in ("q8_0", "q4_0"):
            out = os.path.join(folder, f"quantized-{outtype}.bin")
            jobs.append(
                (
                    f"quantize f16 -> {outtype}",
                    ["quantize", "--quiet", f16, out, outtype],
                    None,
                    out,
                )
            )
        for label, arguments, input_bytes, output in jobs:
            seconds, peak_mib = run_child(arguments)
            input_bytes = input_bytes if input_bytes is not None else os.path.getsize(f16)
            output_bytes = os.path.getsize(output)
            if output != f16:
                os.unlink(output)  # keep the disk footprint to the checkpoint and the f16 file
            rows.append(
                f"| {shape.name} | {label} | {output_bytes:,} | {seconds:.1f} "
                f"| {input_bytes / seconds / 1e6:.0f} | {peak_mib:,.0f} |"
            )
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--6b",
        dest="six_b",
        action="store_true",
        help="also run the GPT-J-6B shape (~25 GB of disk)",
    )
    parser.add_argument(
        "--workdir", default=tempfile.gettempdir(), help="where the temporary files go"
    )
    args = parser.parse_args()
    shapes = [SHAPES["1B"]] + ([SHAPES["6B"]] if args.six_b else [])
    rows = []
    for shape in shapes:
        rows += benchmark(shape, args.workdir)
    print(f"{os.cpu_count()} CPUs, NumPy {np.__version__}\n")
    print("| shape | operation | output bytes | seconds | input MB/s | peak RSS MiB |")
    print("|---|---|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
