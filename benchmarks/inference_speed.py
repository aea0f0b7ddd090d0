"""Inference speed and memory of every backend on random GPT-J files, beside ggml; prints Markdown.

Random-weight GPT-J files of the 1B shape (n_embd 2048, 16 layers, 16 heads, rotary 64,
vocabulary 50400, context 2048) and, with ``--6b``, of the 6B shape (n_embd 4096, 28 layers) are
written with the project's own quantizer and ggml writer into a temporary folder (deleted at the
end). Each (backend, file) pair runs in a fresh child process: load, a 256-token prompt evaluated
at once (prefill), then 32 greedy single-token steps (decode); the child reports the times and
its peak resident memory. In the same run, ggml's ``gpt-j`` binary is measured on the same files
when ``GGML_GPTJ_BIN`` names one, and ctransformers when it is importable.

The table gives every figure with its ratio to ggml (measured in this run, else the figures of
issue 7 for this machine class) and PASS/FAIL for the issue's targets:

- decode, f16: blocked-f16 <= 3.0x ggml, numpy-blas <= 2.0x; q8_0 and q4_0 (blocked-f16) <= 4.0x;
  6B f16 (blocked-f16) <= 3.0x with peak RSS <= 13.5 GB;
- prefill, 1B f16, both backends: <= 0.5x ggml's ms/token (at most 15 ms/token);
- load, blocked-f16 (the memory-mapped backend): <= 0.2x ggml's.

    python benchmarks/inference_speed.py                        # 1B f16, q8_0, q4_0
    python benchmarks/inference_speed.py --types f16 --6b      # adds the 6B f16 rows
    GGML_GPTJ_BIN=~/ggml/build/bin/gpt-j python benchmarks/inference_speed.py
    python benchmarks/inference_speed.py --layers 2 --prompt 16 --decode 4   # a quick smoke run
    python benchmarks/inference_speed.py --repeat 3    # medians of 3 alternating rounds (noisy VMs)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

import numpy as np

SHAPES = {
    "1B": dict(n_embd=2048, n_layer=16, n_head=16),
    "6B": dict(n_embd=4096, n_layer=28, n_head=16),
}
N_VOCAB, N_CTX, N_ROT = 50400, 2048, 64


class Reference(NamedTuple):
    """ggml's gpt-j on this machine class (issue 7: medians of the measured ranges, 2 threads)."""

    decode_ms: float
    prefill_ms: float | None
    load_s: float
    peak_rss_mib: float


ISSUE_FIGURES = {
    ("1B", "f16"): Reference(57.0, 29.0, 1.1, 2.25 * 1024),
    ("1B", "q8_0"): Reference(37.0, 19.0, 1.1, 2.25 * 1024),
    ("1B", "q4_0"): Reference(33.0, 21.0, 1.1, 2.25 * 1024),
    ("6B", "f16"): Reference(272.0, None, 12.7, 12.6 * 1024),
}

# Issue 12's targets for the compiled backend, and for auto, which picks it where numba works
COMPILED = ("numba", "auto")
# (shape, type, backend) -> largest allowed decode ratio to ggml
DECODE_TARGETS = {
    ("1B", "f16", "blocked-f16"): 3.0,  # issue 7
    ("1B", "f16", "numpy-blas"): 2.0,
    ("1B", "q8_0", "blocked-f16"): 4.0,
    ("1B", "q4_0", "blocked-f16"): 4.0,
    ("6B", "f16", "blocked-f16"): 3.0,
    **{
        (shape, file_type, backend): limit
        for backend in COMPILED
        for shape, file_type, limit in [
            ("1B", "f16", 1.15),
            ("1B", "q8_0", 1.3),
            ("1B", "q4_0", 1.3),
            ("1B", "q4_1", 1.6),
            ("1B", "q5_0", 1.6),
            ("1B", "q5_1", 1.6),
            ("6B", "f16", 1.15),
        ]
    },
}
PREFILL_TARGETS = {
    ("1B", "f16", "blocked-f16"): 0.5,
    ("1B", "f16", "numpy-blas"): 0.5,
    **{("1B", t, backend): 0.5 for backend in COMPILED for t in ("f16", "q4_0")},
}
PREFILL_LIMIT_MS = 15.0
LOAD_TARGETS = {
    (shape, "f16", backend): 0.2 for backend in ("blocked-f16", *COMPILED) for shape in ("1B", "6B")
}
# peak RSS limits in MiB: a fixed figure (issue 7), or the file size plus this much (issue 12)
RSS_LIMITS_MIB = {("6B", "f16", "blocked-f16"): 13.5 * 1000**3 / 2**20}
RSS_OVER_FILE_MIB = {("6B", "f16", backend): 1.5 * 1000**3 / 2**20 for backend in COMPILED}
# first-ever compile of the numba kernels, and start-up with them cached (seconds)
FIRST_COMPILE_LIMIT_S, CACHED_START_LIMIT_S = 10.0, 1.0


# --- random model files ----------------------------------------------------------------------


def write_model(path: str, file_type: str, n_embd: int, n_layer: int, n_head: int) -> None:
    """A GPT-J file of random weights (normal, sigma 0.02) in ``file_type`` through ``write_ggml``."""
    from ggml_py.formats import GptjHparams
    from ggml_py.formats.ggml import write_ggml
    from ggml_py.formats.model_file import OutputTensor
    from ggml_py.formats.quant import QNT_VERSION, GGMLFileType, GGMLType, quantize

    ftype = GGMLFileType.parse(file_type)
    rng = np.random.default_rng(0)

    def chunks(shape, tensor_type):
        rows_per_chunk = max(1, (1 << 22) // shape[-1])
        for start in range(0, shape[0], rows_per_chunk):
            rows = min(rows_per_chunk, shape[0] - start)
            values = rng.standard_normal((rows, *shape[1:]), dtype=np.float32) * np.float32(0.02)
            yield quantize(values, tensor_type)

    E, F = n_embd, 4 * n_embd
    shapes = [("transformer.wte.weight", (N_VOCAB, E))]
    for layer in range(n_layer):
        p = f"transformer.h.{layer}."
        shapes += [
            (p + "ln_1.weight", (E,)),
            (p + "ln_1.bias", (E,)),
            (p + "attn.k_proj.weight", (E, E)),
            (p + "attn.v_proj.weight", (E, E)),
            (p + "attn.q_proj.weight", (E, E)),
            (p + "attn.out_proj.weight", (E, E)),
            (p + "mlp.fc_in.weight", (F, E)),
            (p + "mlp.fc_in.bias", (F,)),
            (p + "mlp.fc_out.weight", (E, F)),
            (p + "mlp.fc_out.bias", (E,)),
        ]
    shapes += [
        ("transformer.ln_f.weight", (E,)),
        ("transformer.ln_f.bias", (E,)),
        ("lm_head.weight", (N_VOCAB, E)),
        ("lm_head.bias", (N_VOCAB,)),
    ]
    records = [
        OutputTensor(
            name,
            ftype.weight_type if len(shape) == 2 else GGMLType.F32,
            shape,
            chunks(shape, ftype.weight_type if len(shape) == 2 else GGMLType.F32),
        )
        for name, shape in shapes
    ]
    hparams = GptjHparams(N_VOCAB, N_CTX, E, n_head, n_layer, N_ROT, ftype)
    # single bytes, then words: ggml's greedy tokenizer reads a prompt of letters byte by byte
    vocab = [bytes([i]) if i < 256 else b"t%d" % i for i in range(N_VOCAB)]
    write_ggml(
        path,
        hparams,
        vocab,
        records,
        quantization_version=QNT_VERSION
        if ftype.weight_type not in (GGMLType.F32, GGMLType.F16)
        else 0,
    )


# --- measurements ----------------------------------------------------------------------------


def measure_backend(path: str, backend: str, threads: int, n_prompt: int, n_decode: int) -> dict:
    """In the child process: load, prefill, greedy decode; times and peak RSS."""
    import ggml_py

    start = time.perf_counter()
    model = ggml_py.load(path, backend=backend, n_threads=threads)
    load_s = time.perf_counter() - start
    prompt = [int(i) for i in np.random.default_rng(1).integers(256, N_VOCAB, n_prompt)]
    model.eval(prompt[:4], 0, last_only=True)  # warm-up, as ggml does
    start = time.perf_counter()
    logits = model.eval(prompt, 0, last_only=True)
    prefill_s = time.perf_counter() - start
    token = int(np.argmax(logits))
    start = time.perf_counter()
    for step in range(n_decode):
        token = int(np.argmax(model.eval([token], n_prompt + step, last_only=True)))
    decode_s = time.perf_counter() - start
    return {
        "load_s": load_s,
        "prefill_ms": 1000 * prefill_s / n_prompt,
        "decode_ms": 1000 * decode_s / n_decode,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure_ctransformers(path: str, threads: int, n_prompt: int, n_decode: int) -> dict:
    """In the child process: the same steps through ctransformers' low-level API."""
    from ctransformers import AutoModelForCausalLM

    start = time.perf_counter()
    llm = AutoModelForCausalLM.from_pretrained(
        path, model_type="gptj", threads=threads, context_length=N_CTX, batch_size=n_prompt
    )
    load_s = time.perf_counter() - start
    prompt = [int(i) for i in np.random.default_rng(1).integers(256, N_VOCAB, n_prompt)]
    llm.eval(prompt[:4], threads=threads)
    llm.reset()
    start = time.perf_counter()
    llm.eval(prompt, threads=threads)
    prefill_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(n_decode):
        llm.eval([llm.sample(top_k=1)], threads=threads)
    decode_s = time.perf_counter() - start
    return {
        "load_s": load_s,
        "prefill_ms": 1000 * prefill_s / n_prompt,
        "decode_ms": 1000 * decode_s / n_decode,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_ggml_binary(binary: str, path: str, threads: int, n_prompt: int, n_decode: int) -> dict:
    """ggml's gpt-j twice: a 256-letter prompt and 1 new token (prefill), a 1-letter prompt and
    ``n_decode`` tokens (decode). Its "ms per token" divides the predict time by all evaluated
    positions; with a 1-token prompt that is the decode figure."""

    def run(prompt: str, n_predict: int) -> tuple:
        process = subprocess.Popen(
            [
                binary,
                "-m",
                path,
                "-t",
                str(threads),
                "-p",
                prompt,
                "-n",
                str(n_predict),
                "--top_k",
                "1",
                "-s",
                "1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise RuntimeError(
                f"{binary} exited with {process.returncode}: {output.strip()[-200:]}"
            )
        per_token = float(
            re.search(r"predict time = .*?/\s*([\d.]+) ms per token", output).group(1)
        )
        load_ms = float(re.search(r"load time =\s*([\d.]+) ms", output).group(1))
        return per_token, load_ms / 1000, usage.ru_maxrss / 1024

    prefill_ms, load_s, rss_prefill = run("a" * n_prompt, 1)
    decode_ms, _, rss_decode = run("a", n_decode)
    return {
        "load_s": load_s,
        "prefill_ms": prefill_ms,
        "decode_ms": decode_ms,
        "peak_rss_mib": max(rss_prefill, rss_decode),
    }


def in_child(system: str, path: str, args: argparse.Namespace) -> dict:
    """Measure ``system`` on ``path`` in a fresh interpreter; an ``error`` entry when it fails."""
    command = [
        sys.executable,
        __file__,
        "--child",
        system,
        path,
        "--threads",
        str(args.threads),
        "--prompt",
        str(args.prompt),
        "--decode",
        str(args.decode),
    ]
    child = subprocess.run(command, capture_output=True, text=True)
    if child.returncode != 0:
        return {"error": (child.stderr.strip().splitlines() or [f"exit {child.returncode}"])[-1]}
    return json.loads(child.stdout)


# --- the table -------------------------------------------------------------------------------


def median_result(runs: list[dict]) -> dict:
    """Each figure's median over the rounds that succeeded (the first error when none did).

    >>> median_result([{"decode_ms": 3.0}, {"error": "x"}, {"decode_ms": 1.0}, {"decode_ms": 2.0}])
    {'decode_ms': 2.0}
    """
    good = [run for run in runs if "error" not in run]
    if not good:
        return runs[0]
    return {key: float(np.median([run[key] for run in good])) for key in good[0]}


def verdict(value: float | None, reference: float | None, limit: float | None) -> str:
    """``value (ratio x)`` and, when ``limit`` is a ratio target, PASS/FAIL."""
    if value is None:
        return "-"
    if not reference:
        return f"{value:.1f}"
    ratio = value / reference
    text = f"{value:.1f} ({ratio:.2f}x)" if value >= 1 else f"{value:.2f} ({ratio:.2f}x)"
    if limit is not None:
        text += f" **{'PASS' if ratio <= limit else 'FAIL'}** (<= {limit}x)"
    return text


def table_rows(
    shape: str, file_type: str, results: dict[str, dict], ggml: Reference, file_mib: float
) -> list[str]:
    rows = []
    for system, r in results.items():
        if "error" in r:
            rows.append(f"| {shape} {file_type} | {system} | failed: {r['error']} | | | |")
            continue
        key = (shape, file_type, system)
        prefill = verdict(r["prefill_ms"], ggml.prefill_ms, PREFILL_TARGETS.get(key))
        if key in PREFILL_TARGETS and ggml.prefill_ms is None:
            prefill += f" **{'PASS' if r['prefill_ms'] <= PREFILL_LIMIT_MS else 'FAIL'}**"
        rss = verdict(r["peak_rss_mib"], ggml.peak_rss_mib, None)
        if key in RSS_LIMITS_MIB:
            rss += f" **{'PASS' if r['peak_rss_mib'] <= RSS_LIMITS_MIB[key] else 'FAIL'}** (<= 13.5 GB)"
        if key in RSS_OVER_FILE_MIB:
            limit = file_mib + RSS_OVER_FILE_MIB[key]
            rss += f" **{'PASS' if r['peak_rss_mib'] <= limit else 'FAIL'}** (<= file + 1.5 GB)"
        rows.append(
            f"| {shape} {file_type} | {system} | {verdict(r['decode_ms'], ggml.decode_ms, DECODE_TARGETS.get(key))} "
            f"| {prefill} | {verdict(r['load_s'], ggml.load_s, LOAD_TARGETS.get(key))} | {rss} |"
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", default="f16,q8_0,q4_0", help="weight types of the 1B files")
    parser.add_argument(
        "--6b", dest="six_b", action="store_true", help="also the 6B f16 file (~13 GB disk and RAM)"
    )
    parser.add_argument("--backends", default="numba,auto,numpy-blas,blocked-f16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt", type=int, default=256, help="prompt tokens evaluated at once")
    parser.add_argument("--decode", type=int, default=32, help="greedy single-token steps")
    parser.add_argument(
        "--layers", type=int, help="override the layer count (quick runs; no targets apply)"
    )
    parser.add_argument(
        "--folder", default=None, help="where the temporary files go (default: $TMPDIR)"
    )
    parser.add_argument(
        "--keep-files",
        metavar="DIR",
        help="write the model files into DIR and keep them; files already there are reused",
    )
    parser.add_argument(
        "--pause-pid",
        type=int,
        help="a background job (a process id) to stop during each timed round and resume after",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds over all systems per file, alternating; the table gives medians",
    )
    parser.add_argument("--child", nargs=2, metavar=("SYSTEM", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        system, path = args.child
        if system == "numba-start-up":
            result = measure_numba_start_up()
        elif system == "ctransformers":
            result = measure_ctransformers(path, args.threads, args.prompt, args.decode)
        else:
            result = measure_backend(path, system, args.threads, args.prompt, args.decode)
        print(json.dumps(result))
        return 0

    binary = os.environ.get("GGML_GPTJ_BIN")
    try:
        import ctransformers  # noqa: F401  (only whether it is there)

        has_ctransformers = True
    except ImportError:
        has_ctransformers = False
    runs = [("1B", t) for t in args.types.split(",")] + ([("6B", "f16")] if args.six_b else [])
    with open("/proc/loadavg") as f:
        load_average = f.read().split()[0]
    print(
        f"{args.threads} threads, prompt {args.prompt} tokens, {args.decode} decode steps; "
        f"load average at start {load_average}; ggml: "
        f"{binary or 'not given (GGML_GPTJ_BIN), ratios are to the figures of issue 7'}; "
        f"ctransformers: {'yes' if has_ctransformers else 'not installed'}\n"
    )
    lines = [
        "| file | system | decode ms/token | prefill ms/token | load s | peak RSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="ggml-py-bench-", dir=args.folder) as temporary:
        folder = args.keep_files or temporary
        for shape, file_type in runs:
            dims = dict(SHAPES[shape], **({"n_layer": args.layers} if args.layers else {}))
            path = os.path.join(folder, f"gptj-{shape}{args.layers or ''}-{file_type}.bin")
            if not os.path.exists(path):
                start = time.perf_counter()
                write_model(path, file_type, **dims)
                print(
                    f"wrote {shape} {file_type}: {os.path.getsize(path) / 2**20:.0f} MiB in "
                    f"{time.perf_counter() - start:.0f} s",
                    file=sys.stderr,
                )
            rounds: dict[str, list[dict]] = {}
            for _ in range(args.repeat):  # alternating, so a slow minute hits every system
                with paused(args.pause_pid):
                    measure_round(path, args, binary, has_ctransformers, rounds)
            results = {system: median_result(runs) for system, runs in rounds.items()}
            measured = results.get("ggml gpt-j", {})
            if "decode_ms" in measured:
                ggml = Reference(
                    measured["decode_ms"],
                    measured["prefill_ms"],
                    measured["load_s"],
                    measured["peak_rss_mib"],
                )
            else:
                ggml = ISSUE_FIGURES.get((shape, file_type), Reference(0, None, 0, 0))
            if args.layers:
                ggml = Reference(0, None, 0, 0)
            label = f"{shape}-{args.layers}-layers" if args.layers else shape  # no targets then
            lines += table_rows(label, file_type, results, ggml, os.path.getsize(path) / 2**20)
            if not args.keep_files:
                os.remove(path)
    if "numba" in args.backends.split(","):
        with paused(args.pause_pid):
            start_up = in_child("numba-start-up", "-", args)
        lines += ["", *start_up_rows(start_up)]
    print("\n".join(lines))
    return 0


def measure_round(path: str, args: argparse.Namespace, binary, has_ctransformers, rounds) -> None:
    """One round on ``path``: ggml, ctransformers, then every backend; appended to ``rounds``."""
    if binary:
        try:
            result = run_ggml_binary(binary, path, args.threads, args.prompt, args.decode)
        except (OSError, RuntimeError, AttributeError) as error:
            result = {"error": str(error)}
        rounds.setdefault("ggml gpt-j", []).append(result)
    if has_ctransformers:
        rounds.setdefault("ctransformers", []).append(in_child("ctransformers", path, args))
    for backend in args.backends.split(","):
        rounds.setdefault(backend, []).append(in_child(backend, path, args))
    for system, runs in rounds.items():
        print(f"  {system}: {runs[-1]}", file=sys.stderr)


@contextlib.contextmanager
def paused(pid: int | None):
    """Stop process ``pid`` (SIGSTOP) for the duration, and always resume it (SIGCONT)."""
    if pid is None:
        yield
        return
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def measure_numba_start_up() -> dict:
    """In the child process: the numba backend created with an empty kernel cache (the first-ever
    compile, numba's import included), then again in a fresh process with that cache."""
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
        code = "from ggml_py.backend import create_backend; create_backend('numba')"
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        seconds = []
        for _ in range(2):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
            seconds.append(time.perf_counter() - start)
        # the same interpreter start and imports without the backend: what is not numba's
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import ggml_py.backend"], check=True)
        baseline = time.perf_counter() - start
    return {
        "first_s": seconds[0] - baseline,
        "cached_s": seconds[1] - baseline,
        "python_s": baseline,
    }


def start_up_rows(result: dict) -> list[str]:
    """The numba start-up targets as a small table."""
    if "error" in result:
        return [f"numba start-up: failed: {result['error']}"]
    first, cached = result["first_s"], result["cached_s"]
    return [
        "| numba start-up (beyond Python and ggml_py's imports, "
        f"{result['python_s']:.2f} s) | seconds | target |",
        "|---|---|---|",
        f"| first-ever compile | {first:.2f} | **{'PASS' if first <= FIRST_COMPILE_LIMIT_S else 'FAIL'}**"
        f" (<= {FIRST_COMPILE_LIMIT_S:.0f} s) |",
        f"| cached start-up | {cached:.2f} | **{'PASS' if cached <= CACHED_START_LIMIT_S else 'FAIL'}**"
        f" (<= {CACHED_START_LIMIT_S:.0f} s) |",
    ]


if __name__ == "__main__":
    sys.exit(main())
