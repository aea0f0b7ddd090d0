#!/usr/bin/env python3
"""What each file type costs in quality: perplexity and KL divergence of the trained model.

    python benchmarks/perplexity_quality.py                  # pystdlib-gptj, all of heldout.txt (~2 min)
    python benchmarks/perplexity_quality.py --chunks 40      # its first 40 chunks only
    python benchmarks/perplexity_quality.py --folder DIR --text FILE -c 256

Converts the Hugging Face folder to every ggml file type (f32, f16 and the five quantized
types, quantized from the f16 file as ggml's gpt-j-quantize does) in a temporary folder, and
measures each with ``ggml_py.compute_perplexity`` on the first ``--chunks`` chunks of the text,
chunked as llama-perplexity does, with the f32 file as the KL base (evaluated once, its logits
kept for the seven comparisons) (the checkpoint is float16, so f32 and f16 files carry
the same weights and the f16 row shows what float16 storage alone costs: nothing). Prints a
Markdown table: file size, PPL ± error, ΔPPL against f32, mean and 99th-percentile KL
divergence from f32, and the share of tokens whose most likely next token is f32's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import ggml_py  # noqa: E402
from ggml_py.convert import convert_hf, quantize_file  # noqa: E402
from ggml_py.formats.quant import GGMLFileType  # noqa: E402

FILE_TYPES = ["f32", "f16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0"]


class CachedLogits:
    """A loaded model whose ``eval`` results are kept, so the KL base evaluates each chunk once
    for all the file types compared with it (the chunks' logits, 4 MB each for this model)."""

    def __init__(self, model):
        self.model = model
        self.cache: dict[tuple[bytes, int], object] = {}

    def __getattr__(self, name):
        return getattr(self.model, name)

    def eval(self, ids, n_past, **options):
        key = (bytes(memoryview(ids.astype("<i8"))), n_past)
        if key not in self.cache:
            self.cache[key] = self.model.eval(ids, n_past, **options)
        return self.cache[key]


def make_files(folder: Path, work: Path) -> dict[str, Path]:
    paths = {name: work / f"ggml-model-{name}.bin" for name in FILE_TYPES}
    convert_hf(folder, GGMLFileType.ALL_F32, paths["f32"])
    convert_hf(folder, GGMLFileType.MOSTLY_F16, paths["f16"])
    for name in FILE_TYPES[2:]:
        quantize_file(paths["f16"], paths[name], GGMLFileType.parse(name))
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=REPO / "examples" / "pystdlib-gptj")
    parser.add_argument("--text", type=Path, help="default: FOLDER/heldout.txt")
    parser.add_argument("-c", "--ctx-size", type=int, help="default: the model's context")
    parser.add_argument(
        "--chunks", type=int, default=0, help="chunks of the text to score, 0: all (default: 0)"
    )
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("--backend", default="numpy-blas")
    args = parser.parse_args()
    text = (args.text or args.folder / "heldout.txt").read_text(encoding="utf-8")

    with tempfile.TemporaryDirectory() as work:
        paths = make_files(args.folder, Path(work))
        base = CachedLogits(
            ggml_py.load(paths["f32"], backend=args.backend, n_threads=args.threads)
        )
        ids = base.tokenizer.encode(text)
        n_ctx = args.ctx_size or base.n_ctx
        if args.chunks:
            ids = ids[: args.chunks * n_ctx]
        rows, base_ppl = [], None
        for name in FILE_TYPES:
            started = time.perf_counter()
            model = ggml_py.load(paths[name], backend=args.backend, n_threads=args.threads)
            result = ggml_py.compute_perplexity(model, ids, n_ctx, kl_base=base)
            base_ppl = base_ppl or result.base_ppl.value
            rows.append(
                (
                    name,
                    f"{os.path.getsize(paths[name]) / 2**20:.2f}",
                    f"{result.ppl.value:.4f} ± {result.ppl.error:.4f}",
                    f"{result.ppl.value - base_ppl:+.4f}",
                    f"{result.mean_kl.value:.6f} ± {result.mean_kl.error:.6f}",
                    f"{result.kl_percentile(0.99):.6f}",
                    f"{100 * result.same_top_fraction.value:.2f} ± "
                    f"{100 * result.same_top_fraction.error:.2f}",
                )
            )
            print(f"{name}: {time.perf_counter() - started:.1f} s", file=sys.stderr)

    print(
        f"{args.folder.name} on the first {len(ids)} tokens of "
        f"{(args.text or args.folder / 'heldout.txt').name}: {result.n_chunks} chunks of "
        f"{result.n_ctx}, {result.count} tokens scored; KL base f32, backend {args.backend}\n"
    )
    print("| type | size (MiB) | PPL | ΔPPL | mean KL | KL 99% | same top % |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
