"""Where one decode step spends its time, per backend: prints a Markdown table.

Every operation of the backend (linear, attention, layer_norm, gelu, embedding) is timed by
wrapping it on the loaded backend; for ``blocked-f16`` the weight conversion inside ``linear`` is
measured separately by decoding every matrix a step reads (on the backend's own threads, the same
row ranges) without the products, and BLAS is the rest of ``linear`` (for the block formats the
one-token path decodes the quants only: reading and applying the block scales counts as BLAS).
Sampling is ggml's top-k 40 / top-p 0.9 sampler on the step's logits. "Python and graph" is the
step's wall time minus all of the above: rotary embedding, KV-cache writes, reshapes, residual
adds, call overhead.

    python benchmarks/decode_profile.py MODEL.bin [--backends numpy-blas,blocked-f16] [--threads 2]

Use a file written by ``benchmarks/inference_speed.py``'s ``write_model`` (or any GPT-J file).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

import numpy as np

OPS = ("linear", "attention", "layer_norm", "gelu", "embedding")


def conversion_seconds(backend, weights: dict, names) -> float:
    """Decode (without multiplying) the ``blocked-f16`` matrices ``names`` as ``linear`` would."""
    start = time.perf_counter()
    for name in names:
        weight = weights[name]

        # one token of a block format decodes the quants only (their scales come after the products)
        decode = weight._unscaled_quants if weight._folds_scales else weight._decode

        def decode_rows(a: int, b: int, weight=weight, decode=decode) -> None:
            for begin in range(a, b, weight.block_rows):
                decode(begin, min(begin + weight.block_rows, b), backend._scratch)

        backend.on_row_ranges(decode_rows, weight.shape[0], weight.block_rows)
    return time.perf_counter() - start


def profile(
    path: str, backend_name: str, threads: int, n_prompt: int, n_steps: int
) -> dict[str, float]:
    import ggml_py
    from ggml_py.sampling import Sampler, SamplingSettings

    model = ggml_py.load(path, backend=backend_name, n_threads=threads)
    backend = model.backend
    spent: dict[str, float] = defaultdict(float)

    def timed(op, method):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            result = method(*args, **kwargs)
            spent[op] += time.perf_counter() - start
            return result

        return wrapper

    for op in OPS:
        setattr(backend, op, timed(op, getattr(backend, op)))
    sampler = Sampler(SamplingSettings(40, 0.9, 0.9, 64, 1.0), 1)
    prompt = [int(i) for i in np.random.default_rng(1).integers(256, model.n_vocab, n_prompt)]
    logits = model.eval(prompt, 0, last_only=True)
    spent.clear()
    history = list(prompt)
    total = 0.0
    for step in range(n_steps):
        start = time.perf_counter()
        logits = model.eval([history[-1]], n_prompt + step, last_only=True)
        total += time.perf_counter() - start
        start = time.perf_counter()
        history.append(sampler.sample(logits, history))
        spent["sampling"] += time.perf_counter() - start
    row = {op: 1000 * spent[op] / n_steps for op in (*OPS, "sampling")}
    row["eval"] = 1000 * total / n_steps
    row["python"] = row["eval"] - sum(row[op] for op in OPS)
    if backend_name == "blocked-f16":
        matrices = [
            name
            for name, handle in model.weights.items()
            if hasattr(handle, "block_rows") and name != "transformer.wte.weight"
        ]
        row["conversion"] = 1000 * min(
            conversion_seconds(backend, model.weights, matrices) for _ in range(3)
        )
    else:
        row["conversion"] = 0.0
    row["blas"] = row["linear"] - row["conversion"]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--backends", default="numpy-blas,blocked-f16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args()
    with open("/proc/loadavg") as f:
        print(
            f"{args.model}: {args.threads} threads, decode after a {args.prompt}-token prompt, "
            f"mean of {args.steps} steps, ms per token; load average {f.read().split()[0]}\n"
        )
    print(
        "| backend | eval | weight conversion | BLAS | attention | layer norm + gelu | embedding "
        "| Python and graph | sampling |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.backends.split(","):
        r = profile(args.model, name, args.threads, args.prompt, args.steps)
        print(
            f"| {name} | {r['eval']:.1f} | {r['conversion']:.1f} | {r['blas']:.1f} | {r['attention']:.1f} "
            f"| {r['layer_norm'] + r['gelu']:.1f} | {r['embedding']:.2f} | {r['python']:.1f} | {r['sampling']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
