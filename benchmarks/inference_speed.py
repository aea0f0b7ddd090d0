"""Inference speed and memory of each backend on a GPT-J of realistic shape; prints Markdown.

A random GPT-J with the 1B-class shape of the targets (n_embd 2048, 16 layers, 16 heads, rotary
64, vocabulary 50400, context 2048) is written as a legacy ggml file (f16 by default) into a
temporary folder. Each backend then runs in its own process: load, a 32-token prompt in one
evaluation (prefill), and single-token decode steps. The table gives milliseconds per token and
peak resident memory, beside the targets relative to ggml's ~57 ms/token for 1B f16 decoding
(blocked-f16 within 3x, numpy-blas within 2x).

    python benchmarks/inference_speed.py                  # 1B f16, both backends
    python benchmarks/inference_speed.py --type q4_0 --layers 4 --threads 2
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

import numpy as np

GGML_DECODE_MS = 57.0
TARGET_FACTOR = {"numpy-blas": 2.0, "blocked-f16": 3.0}


def write_model(path: str, file_type: str, n_embd: int, n_layer: int, n_head: int, n_vocab: int, n_ctx: int) -> None:
    from ggml_py.formats import GptjHparams
    from ggml_py.formats.ggml import TensorRecord, write_ggml
    from ggml_py.formats.quant import GGMLFileType, GGMLType, quantize

    ftype = GGMLFileType.parse(file_type)
    rng = np.random.default_rng(0)

    def chunks(shape, matrix_type):
        rows_per_chunk = max(1, (1 << 22) // shape[-1])
        for start in range(0, shape[0], rows_per_chunk):
            rows = min(rows_per_chunk, shape[0] - start)
            values = rng.standard_normal((rows, *shape[1:]), dtype=np.float32) * np.float32(0.02)
            yield quantize(values, matrix_type)

    E, F = n_embd, 4 * n_embd
    shapes = [("transformer.wte.weight", (n_vocab, E))]
    for layer in range(n_layer):
        p = f"transformer.h.{layer}."
        shapes += [(p + "ln_1.weight", (E,)), (p + "ln_1.bias", (E,)),
                   (p + "attn.k_proj.weight", (E, E)), (p + "attn.v_proj.weight", (E, E)),
                   (p + "attn.q_proj.weight", (E, E)), (p + "attn.out_proj.weight", (E, E)),
                   (p + "mlp.fc_in.weight", (F, E)), (p + "mlp.fc_in.bias", (F,)),
                   (p + "mlp.fc_out.weight", (E, F)), (p + "mlp.fc_out.bias", (E,))]
    shapes += [("transformer.ln_f.weight", (E,)), ("transformer.ln_f.bias", (E,)),
               ("lm_head.weight", (n_vocab, E)), ("lm_head.bias", (n_vocab,))]
    records = []
    for name, shape in shapes:
        matrix_type = ftype.weight_type if len(shape) == 2 else GGMLType.F32
        records.append(TensorRecord(name, matrix_type, shape, chunks(shape, matrix_type)))
    hparams = GptjHparams(n_vocab, n_ctx, E, n_head, n_layer, 64, ftype)
    vocab = [bytes([i]) if i < 256 else b"t%d" % i for i in range(n_vocab)]  # no added tokens
    write_ggml(path, hparams, vocab, records, quantization_version=0 if ftype.weight_type < 2 else 2)


def measure(path: str, backend: str, threads: int, n_prompt: int, n_decode: int) -> dict:
    """Run in a child process: load, prefill, decode; report times and peak RSS."""
    import ggml_py

    start = time.perf_counter()
    model = ggml_py.load(path, backend=backend, n_threads=threads)
    load_s = time.perf_counter() - start
    prompt = list(range(1000, 1000 + n_prompt))
    model.eval(prompt[:4], 0, last_only=True)                     # warm up (page in, allocate)
    start = time.perf_counter()
    logits = model.eval(prompt, 0, last_only=True)
    prefill_s = time.perf_counter() - start
    token = int(np.argmax(logits))
    start = time.perf_counter()
    for step in range(n_decode):
        token = int(np.argmax(model.eval([token], n_prompt + step, last_only=True)))
    decode_s = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"load_s": load_s, "prefill_ms_per_token": 1000 * prefill_s / n_prompt,
            "decode_ms_per_token": 1000 * decode_s / n_decode, "peak_rss_mib": peak_kib / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--type", default="f16", help="weight type of the file (f32, f16, q4_0, ...)")
    parser.add_argument("--embd", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--prompt", type=int, default=32, help="prompt tokens evaluated at once")
    parser.add_argument("--decode", type=int, default=16, help="single-token steps")
    parser.add_argument("--backends", default="numpy-blas,blocked-f16")
    parser.add_argument("--child", nargs=2, metavar=("BACKEND", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[1], args.child[0], args.threads, args.prompt, args.decode)))
        return 0

    with tempfile.TemporaryDirectory(prefix="ggml-py-inference-") as folder:
        path = os.path.join(folder, f"model-{args.type}.bin")
        start = time.perf_counter()
        write_model(path, args.type, args.embd, args.layers, args.heads, 50400, 2048)
        size_mib = os.path.getsize(path) / 2**20
        print(f"model: n_embd {args.embd}, {args.layers} layers, {args.type}, {size_mib:.0f} MiB "
              f"(written in {time.perf_counter() - start:.0f} s); {args.threads} threads; "
              f"prompt {args.prompt} tokens, {args.decode} decode steps\n")
        print("| backend | load s | prefill ms/token | decode ms/token | target decode ms/token | peak RSS MiB |")
        print("|---|---|---|---|---|---|")
        for backend in args.backends.split(","):
            child = subprocess.run(
                [sys.executable, __file__, "--child", backend, path, "--threads", str(args.threads),
                 "--prompt", str(args.prompt), "--decode", str(args.decode)],
                capture_output=True, text=True)
            if child.returncode != 0:
                print(f"| {backend} | failed: {child.stderr.strip().splitlines()[-1]} | | | | |")
                continue
            r = json.loads(child.stdout)
            is_target_shape = (args.type, args.embd, args.layers, args.heads) == ("f16", 2048, 16, 16)
            target = (f"<= {GGML_DECODE_MS * TARGET_FACTOR[backend]:.0f}"
                      if is_target_shape and backend in TARGET_FACTOR else "-")
            print(f"| {backend} | {r['load_s']:.1f} | {r['prefill_ms_per_token']:.1f} | "
                  f"{r['decode_ms_per_token']:.1f} | {target} | {r['peak_rss_mib']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
