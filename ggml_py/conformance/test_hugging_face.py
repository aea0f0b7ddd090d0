"""A small GPT-J's files of every type through the real graph against Hugging Face's logits.

The golden data ships in ``ggml_py/conformance/data`` (made by
``scripts/make_conformance_fixtures.py``: transformers' ``GPTJForCausalLM`` in float32 with
random weights; 500 tokens, 288 positions, 2 layers, n_embd 64, 4 heads, rotary_dim 8). Every
file type (f32, f16, q8_0, q5_1, q5_0, q4_1, q4_0) is compared with Hugging Face run on the
weights that file holds, on token-id prompts of 5, 70 and 288 tokens (the whole context).

Tolerance: ``max |logits - ref| <= 1e-4`` (logits reach about 10; a correct float32 backend is
within about 1e-5). Greedy continuations must be Hugging Face's exactly: the fixture checked that
the best logit beats the second by at least 0.01 at every step.
"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from ggml_py.formats import open_model
from ggml_py.model import GptJ, Model
from ggml_py.sampling import Sampler, SamplingSettings
from ggml_py.tokenizer import Tokenizer

DATA = Path(__file__).resolve().parent / "data"
FILE_TYPES = ["f32", "f16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0"]
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def golden():
    expected = json.loads((DATA / "expected.json").read_text())
    return {"expected": expected, "logits": dict(np.load(DATA / "hf-logits.npz"))}


def _weight_set(golden, file_type: str) -> str:
    return next(
        name for name, types in golden["expected"]["weight_sets"].items() if file_type in types
    )


def _graph(golden, file_type: str, backend) -> GptJ:
    return GptJ(open_model(DATA / golden["expected"]["files"][file_type]), backend)


def _assert_logits(out, golden, file_type, key, positions, what):
    """``out``: the graph's logits at ``positions`` of prompt ``key``."""
    logits = golden["logits"]
    kept = list(logits[f"{key}_positions"])
    expected = logits[f"{_weight_set(golden, file_type)}_{key}"][[kept.index(p) for p in positions]]
    error = np.abs(out - expected)
    worst = np.unravel_index(np.argmax(error), error.shape)
    assert error.max() <= TOLERANCE, (
        f"{file_type} file, {what}, prompt of {len(logits[f'{key}_ids'])} tokens: max |logits - Hugging Face| "
        f"{error.max():.3g} at position {positions[worst[0]]}, token {worst[1]} (tolerance {TOLERANCE})"
    )


@pytest.mark.parametrize("file_type", FILE_TYPES)
def test_whole_prompts_match_hugging_face(golden, conformance_backend, file_type):
    graph = _graph(golden, file_type, conformance_backend)
    for key in golden["expected"]["prompts"]:
        ids, positions = golden["logits"][f"{key}_ids"], list(golden["logits"][f"{key}_positions"])
        logits = graph.eval(ids, 0)
        assert logits.shape == (len(ids), golden["expected"]["config"]["vocab_size"])
        _assert_logits(
            logits[positions], golden, file_type, key, positions, f"{len(ids)} tokens in one call"
        )


@pytest.mark.parametrize("file_type", FILE_TYPES)
def test_chunks_and_single_tokens_up_to_the_full_context_match_hugging_face(
    golden, conformance_backend, file_type
):
    # chunks of 33, 37 and 187 tokens over a growing cache, then one token at a time up to the
    # last position of the context; then the context is full
    graph = _graph(golden, file_type, conformance_backend)
    ids, kept = golden["logits"]["p288_ids"], set(golden["logits"]["p288_positions"].tolist())
    cuts = [0, 33, 70, 257, *range(258, len(ids) + 1)]
    for start, stop in pairwise(cuts):
        logits = graph.eval(ids[start:stop], start)
        positions = [p for p in range(start, stop) if p in kept]
        if positions:
            what = f"{stop - start} tokens after {start} cached"
            _assert_logits(
                logits[[p - start for p in positions]], golden, file_type, "p288", positions, what
            )
    assert graph.n_past == graph.n_ctx


@pytest.mark.parametrize("file_type", FILE_TYPES)
def test_greedy_tokens_match_hugging_face(golden, conformance_backend, file_type):
    model_file = open_model(DATA / golden["expected"]["files"][file_type])
    model = Model(model_file, conformance_backend, Tokenizer.from_model(model_file))
    greedy = golden["expected"]["greedy"]
    prompt = golden["logits"][f"{greedy['prompt']}_ids"].tolist()
    expected = greedy["ids"][_weight_set(golden, file_type)]
    generated = list(
        model.generate_ids(prompt, len(expected), Sampler(SamplingSettings(top_k=1), seed=0))
    )
    assert generated == expected, f"{file_type} file: greedy tokens differ from Hugging Face's"
