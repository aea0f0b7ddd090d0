"""Encoding speed of ggml-py's tokenizer beside Hugging Face `tokenizers` and `tiktoken` (gpt2).

    python benchmarks/tokenizer_speed.py [--megabytes 4]

Prints a Markdown table. The prose is English text that ships with Python (the reference-manual
topics in ``pydoc_data`` and the docstrings of some standard modules), so the benchmark needs no
network. All three tokenizers run on one thread over the same paragraphs with GPT-2's files from
examples/tiny-gptj (tiktoken's "gpt2" encoding is rebuilt from them, since tiktoken would
download its own copy). "cold" encodes the distinct paragraphs once with a freshly loaded
tokenizer (empty caches); "warm" then encodes --megabytes of prose that repeats them.
The other libraries are measured only when importable (e.g. run this with a Python that has
transformers installed); ids are compared with ours, and a mismatch is shown in the table.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # keep Hugging Face tokenizers on one core
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from ggml_py.tokenizer import ENDOFTEXT, Tokenizer  # noqa: E402

MODEL = REPO / "examples" / "tiny-gptj"
DOCSTRING_MODULES = [
    "argparse",
    "collections",
    "json",
    "textwrap",
    "logging",
    "unittest",
    "email",
    "subprocess",
    "threading",
    "asyncio",
    "functools",
    "itertools",
    "os",
    "pathlib",
    "decimal",
    "fractions",
    "datetime",
    "calendar",
    "difflib",
    "pickle",
    "csv",
    "zipfile",
    "tarfile",
    "shutil",
    "tempfile",
    "random",
    "statistics",
    "inspect",
    "dataclasses",
    "enum",
    "socket",
    "ssl",
    "string",
]


def english_paragraphs() -> list:
    """Distinct prose paragraphs (no indented code) with their line breaks joined."""
    from pydoc_data.topics import topics

    documents = list(topics.values())
    for name in DOCSTRING_MODULES:
        module = importlib.import_module(name)
        documents += [
            obj.__doc__
            for obj in [module, *vars(module).values()]
            if isinstance(getattr(obj, "__doc__", None), str)
        ]
    paragraphs = {}
    for document in documents:
        for paragraph in document.split("\n\n"):
            stripped = paragraph.strip()
            if (
                len(stripped) > 80
                and not paragraph.startswith(" ")
                and not stripped.startswith(">>>")
            ):
                paragraphs[" ".join(stripped.split())] = None
    return list(paragraphs)


def seconds_to_encode(encode, paragraphs: list) -> tuple[list, float]:
    start = time.perf_counter()
    ids = [encode(paragraph) for paragraph in paragraphs]
    return ids, time.perf_counter() - start


def tiktoken_gpt2():
    import tiktoken

    ours = Tokenizer.from_pretrained(MODEL)
    ranks = {ours.token_bytes(token_id): token_id for token_id in range(ours.eos_id)}
    pattern = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    encoding = tiktoken.Encoding(
        "gpt2", pat_str=pattern, mergeable_ranks=ranks, special_tokens={ENDOFTEXT: ours.eos_id}
    )
    return encoding.encode_ordinary


def hugging_face_tokenizers():
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.decoders import ByteLevel as ByteLevelDecoder
    from tokenizers.models import BPE
    from tokenizers.pre_tokenizers import ByteLevel

    backend = HFTokenizer(BPE.from_file(str(MODEL / "vocab.json"), str(MODEL / "merges.txt")))
    backend.pre_tokenizer = ByteLevel(add_prefix_space=False)
    backend.decoder = ByteLevelDecoder()
    return lambda text: backend.encode(text).ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--megabytes", type=float, default=4.0, help="size of the warm text (default 4)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per measurement; the fastest counts"
    )
    args = parser.parse_args()

    distinct = english_paragraphs()
    distinct_mb = sum(len(paragraph.encode()) for paragraph in distinct) / 1e6
    warm = distinct * max(1, round(args.megabytes / distinct_mb))
    warm_mb = distinct_mb * len(warm) / len(distinct)

    def ours():
        tokenizer = Tokenizer.from_pretrained(MODEL)
        return tokenizer.encode

    candidates = [
        ("ggml-py (pure Python)", ours),
        ("Hugging Face tokenizers (Rust)", hugging_face_tokenizers),
        ("tiktoken gpt2 (Rust)", tiktoken_gpt2),
    ]
    print(
        f"English prose: {len(distinct)} distinct paragraphs ({distinct_mb:.2f} MB); warm text {warm_mb:.2f} MB; "
        f"each paragraph encoded by its own call; fastest of {args.repeat} runs; "
        f"Python {sys.version.split()[0]}, one thread\n"
    )
    print("| tokenizer | load s | cold MB/s | warm MB/s | ids equal ggml-py's |")
    print("|---|---:|---:|---:|---|")
    reference_ids = None
    for name, make in candidates:
        try:
            load_seconds, cold_seconds, warm_seconds = float("inf"), float("inf"), float("inf")
            for _ in range(args.repeat):
                start = time.perf_counter()
                encode = make()
                load_seconds = min(load_seconds, time.perf_counter() - start)
                cold_ids, seconds = seconds_to_encode(encode, distinct)
                cold_seconds = min(cold_seconds, seconds)
                warm_ids, seconds = seconds_to_encode(encode, warm)
                warm_seconds = min(warm_seconds, seconds)
        except ImportError as error:
            print(f"| {name} | - | - | - | not installed ({error.name}) |")
            continue
        ids = [list(paragraph_ids) for paragraph_ids in cold_ids + warm_ids]
        reference_ids = reference_ids or ids
        same = "yes" if ids == reference_ids else "**no**"
        print(
            f"| {name} | {load_seconds:.2f} | {distinct_mb / cold_seconds:.1f} "
            f"| {warm_mb / warm_seconds:.1f} | {same} |"
        )


if __name__ == "__main__":
    main()
