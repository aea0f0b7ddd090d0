"""Time and memory of streaming a ~2 GB float16 torch checkpoint through ``open_checkpoint``.

Writes a ``pytorch_model.bin`` laid out like ``torch.save``'s zip archive (pickle and zip built
here without torch, by tests/torch_pickles.py) with random float16 tensors of GPT-J-6B's layer
shapes, then, in a child process, opens it and reads every tensor the way a converter does:
``numpy()``, touch every byte, drop the array. Prints a Markdown table of the time to open, the
time to read, and the child's resident set size at the start and at its peak (target: the peak
within ~300 MB of the start; each tensor's memory map is released when its array is dropped, so
the peak follows the largest tensor, 128 MiB here). The file is just written, so it is read from
the page cache. The temporary folder is deleted at the end.

    /work/venv/bin/python benchmarks/checkpoint_read.py [--gib 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from torch_pickles import state_dict, tensor, torch_zip  # noqa: E402

N_EMBD = 4096
LAYER_SHAPES = {
    "attn.q_proj.weight": (N_EMBD, N_EMBD),
    "attn.k_proj.weight": (N_EMBD, N_EMBD),
    "attn.v_proj.weight": (N_EMBD, N_EMBD),
    "attn.out_proj.weight": (N_EMBD, N_EMBD),
    "mlp.fc_in.weight": (4 * N_EMBD, N_EMBD),
    "mlp.fc_in.bias": (4 * N_EMBD,),
    "mlp.fc_out.weight": (N_EMBD, 4 * N_EMBD),
    "mlp.fc_out.bias": (N_EMBD,),
    "ln_1.weight": (N_EMBD,),
    "ln_1.bias": (N_EMBD,),
}
CHUNK_ELEMENTS = 1 << 22


def layer_count(gib: float) -> int:
    layer_bytes = sum(int(np.prod(shape)) * 2 for shape in LAYER_SHAPES.values())
    return max(1, round(gib * 2**30 / layer_bytes))


def random_f16(count: int, rng: np.random.Generator) -> Iterator[bytes]:
    for start in range(0, count, CHUNK_ELEMENTS):
        yield (
            rng.standard_normal(min(CHUNK_ELEMENTS, count - start), dtype=np.float32)
            .astype(np.float16)
            .tobytes()
        )


def write_checkpoint(path: Path, n_layer: int) -> dict[str, tuple[int, ...]]:
    shapes = {
        f"transformer.h.{layer}.{name}": shape
        for layer in range(n_layer)
        for name, shape in LAYER_SHAPES.items()
    }
    entries = {}
    for key, (name, shape) in enumerate(shapes.items()):
        strides = tuple(int(np.prod(shape[axis + 1 :])) for axis in range(len(shape)))
        entries[name] = tensor("HalfStorage", str(key), int(np.prod(shape)), shape, strides)
    rng = np.random.default_rng(0)
    records = {
        str(key): random_f16(int(np.prod(shape)), rng) for key, shape in enumerate(shapes.values())
    }
    torch_zip(path, state_dict(entries), records, prefix="pytorch_model")
    return shapes


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def read_all(path: str) -> dict[str, float]:
    """Runs in the child: open, then read and drop every tensor."""
    import ggml_py

    start_rss = rss_bytes()
    began = time.perf_counter()
    checkpoint = ggml_py.open_checkpoint(path)
    opened = time.perf_counter()
    checksum = 0
    for name in checkpoint:
        array = checkpoint[name].numpy()
        checksum += int(array.view(np.uint16).sum(dtype=np.uint64))
        del array
    done = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {
        "open_s": opened - began,
        "read_s": done - opened,
        "start_rss": start_rss,
        "peak_rss": peak,
        "tensors": len(checkpoint),
        "checksum": checksum,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0, help="checkpoint size in GiB (default 2)")
    parser.add_argument(
        "--workdir", help="folder for the temporary checkpoint (default: the system's)"
    )
    parser.add_argument("--read", help=argparse.SUPPRESS)  # the child process's mode
    args = parser.parse_args()
    if args.read:
        print(json.dumps(read_all(args.read)))
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        path = Path(folder) / "pytorch_model.bin"
        began = time.perf_counter()
        shapes = write_checkpoint(path, layer_count(args.gib))
        written = time.perf_counter() - began
        size = path.stat().st_size
        child = subprocess.run(
            [sys.executable, __file__, "--read", str(path)],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(child.stdout)
    largest = max(int(np.prod(shape)) * 2 for shape in shapes.values())
    mib = 2**20
    print(
        f"checkpoint: {size / 2**30:.2f} GiB torch zip, {result['tensors']} float16 tensors, "
        f"largest {largest / mib:.0f} MiB (written in {written:.1f} s)\n"
    )
    print("| open | read all tensors | read speed | RSS at start | peak RSS | peak - start |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {result['open_s'] * 1000:.1f} ms | {result['read_s']:.2f} s | {size / result['read_s'] / 2**30:.2f} GiB/s "
        f"| {result['start_rss'] / mib:.0f} MiB | {result['peak_rss'] / mib:.0f} MiB "
        f"| {(result['peak_rss'] - result['start_rss']) / mib:.0f} MiB |"
    )


if __name__ == "__main__":
    main()
