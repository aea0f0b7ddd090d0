"""The graph's own rules and the Python API (``ggml_py.load``, ``eval``, ``generate``, ``reset``).

Numerical agreement with Hugging Face and with a float64 forward pass is the conformance suite's
job (``ggml_py/conformance``, run for both shipped backends by ``test_backend.py``); here: the
rotary layout, argument checks, generation rules (stop strings, end of text, context limit),
and determinism.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

import ggml_py
from ggml_py.backend import create_backend
from ggml_py.conformance import reference
from ggml_py.errors import GgmlPyError, ModelFileError
from ggml_py.formats import ggml as ggml_format
from ggml_py.formats.model_file import OutputTensor
from ggml_py.formats.quant import GGMLType
from ggml_py.model import GptJ, Model, rotary_tables, rotate_pairs
from ggml_py.sampling import Sampler, SamplingSettings
from ggml_py.tokenizer import Tokenizer

EOS = 256
BYTE_VOCAB = [bytes([b]) for b in range(256)] + [b"<|endoftext|>"]


def byte_model_file(n_ctx: int = 12, eos_bias: float = 0.0, seed: int = 0):
    """A random GPT-J over single bytes plus ``<|endoftext|>`` (id 256); ``eos_bias`` is added
    to end-of-text's output bias."""
    model_file = reference.random_gptj(
        GGMLType.F16, n_vocab=len(BYTE_VOCAB), n_ctx=n_ctx, seed=seed
    )
    bias = reference.decoded(model_file.tensors["lm_head.bias"])
    bias[EOS] += eos_bias
    tensors = {
        **model_file.tensors,
        "lm_head.bias": reference.tensor_info("lm_head.bias", bias, GGMLType.F32),
    }
    return dataclasses.replace(model_file, vocab=BYTE_VOCAB, tensors=tensors)


def write_model_file(path, model_file) -> None:
    """Write a ``ModelFile`` as a legacy ggml GPT-J file."""
    records = [OutputTensor(t.name, t.type, t.shape, [t.data]) for t in model_file.tensors.values()]
    ggml_format.write_ggml(path, model_file.hparams, model_file.vocab, records)


def byte_model(backend: str = "numpy-blas", **kwargs) -> Model:
    model_file = byte_model_file(**kwargs)
    return Model(model_file, create_backend(backend), Tokenizer.from_vocab(model_file.vocab))


# --- rotary embedding --------------------------------------------------------------------------


def test_rotary_turns_adjacent_pairs_like_complex_numbers():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 10)).astype(np.float32)  # [T, H, D], R = 6 of D = 10
    cos, sin = rotary_tables(5, 6)
    out = rotate_pairs(x, cos, sin)
    pairs = x[..., 0:6:2] + 1j * x[..., 1:6:2]  # (x[2i], x[2i+1]) as x + iy
    angles = np.arange(5)[:, None] * 10000.0 ** (-np.arange(0, 6, 2) / 6)
    turned = pairs * np.exp(1j * angles)[:, None, :]
    np.testing.assert_allclose(out[..., 0:6:2], turned.real, atol=1e-6)
    np.testing.assert_allclose(out[..., 1:6:2], turned.imag, atol=1e-6)
    np.testing.assert_array_equal(out[..., 6:], x[..., 6:])  # channels past n_rot untouched


# --- checks on the model file and on eval's arguments -----------------------------------------


def test_missing_and_misshapen_tensors_are_model_file_errors():
    model_file = reference.random_gptj(GGMLType.F32)
    missing = dict(model_file.tensors)
    del missing["transformer.h.1.mlp.fc_out.bias"]
    with pytest.raises(ModelFileError, match="tensor transformer.h.1.mlp.fc_out.bias is missing"):
        GptJ(dataclasses.replace(model_file, tensors=missing), create_backend("numpy-blas"))
    wrong = dict(model_file.tensors)
    wrong["lm_head.bias"] = reference.tensor_info("lm_head.bias", np.zeros(5), GGMLType.F32)
    with pytest.raises(ModelFileError, match=r"lm_head.bias has shape \(5,\), expected \(96,\)"):
        GptJ(dataclasses.replace(model_file, tensors=wrong), create_backend("numpy-blas"))
    odd_heads = dataclasses.replace(model_file, hparams=model_file.hparams._replace(n_head=5))
    with pytest.raises(ModelFileError, match="not a multiple of n_head"):
        GptJ(odd_heads, create_backend("numpy-blas"))


def test_eval_rejects_bad_ids_and_positions_with_one_line_errors():
    graph = GptJ(reference.random_gptj(GGMLType.F32), create_backend("numpy-blas"))
    for ids, n_past, message in (
        ([], 0, "no tokens"),
        ([96], 0, "token id 96 is outside"),
        ([-1], 0, "token id -1"),
        ([1], 1, "n_past 1 is not in 0 .. 0"),
        (list(range(13)), 0, "exceed the context of 12"),
    ):
        with pytest.raises(GgmlPyError, match=message) as error:
            graph.eval(ids, n_past)
        assert "\n" not in str(error.value)


def test_last_only_is_the_last_row_and_reset_starts_over():
    model = byte_model()
    everything = model.eval([72, 105, 33], 0)
    model.reset()
    assert model.n_past == 0
    np.testing.assert_allclose(
        model.eval([72, 105, 33], 0, last_only=True), everything[-1], rtol=0, atol=1e-5
    )
    assert model.n_past == 3


# --- generation --------------------------------------------------------------------------------


def test_generation_stops_at_end_of_text_unless_told_to_ignore_it():
    model = byte_model(eos_bias=50.0)  # end-of-text always wins
    greedy = SamplingSettings(top_k=1)
    assert list(model.generate_ids([72, 105], 5, Sampler(greedy, 0))) == [EOS]
    assert (
        list(model.generate_ids([72, 105], 5, Sampler(greedy, 0), stop_at_eos=False)) == [EOS] * 5
    )
    assert "".join(model.generate("Hi", max_tokens=5, top_k=1)) == ""  # its text is not yielded
    assert (
        "".join(model.generate("Hi", max_tokens=2, top_k=1, ignore_eos=True)) == "<|endoftext|>" * 2
    )


def test_generation_stops_cleanly_at_the_context_limit():
    model = byte_model(n_ctx=12)
    ids = list(
        model.generate_ids(
            list(b"0123456789"), 100, Sampler(SamplingSettings(), 1), stop_at_eos=False
        )
    )
    assert len(ids) == 2  # 10 prompt tokens + 2 = 12 positions
    assert model.n_past == 11  # the last token is never evaluated
    with pytest.raises(GgmlPyError, match="the prompt has 13 tokens but the context holds 12"):
        model.generate_ids(list(b"0123456789abc"), 1, Sampler(SamplingSettings(), 1))
    with pytest.raises(GgmlPyError, match="prompt has no tokens"):
        model.generate_ids([], 1, Sampler(SamplingSettings(), 1))


def test_chunked_prompt_evaluation_gives_the_same_tokens():
    model = byte_model(n_ctx=40)
    prompt = list(b"The quick brown fox jumps")
    runs = [
        list(model.generate_ids(prompt, 8, Sampler(SamplingSettings(top_k=5), 7), n_batch=n_batch))
        for n_batch in (1, 4, 32)
    ]
    assert runs[0] == runs[1] == runs[2]


def test_same_seed_same_text_and_the_pieces_are_the_decoded_tokens():
    model = byte_model(n_ctx=40)
    first = list(model.generate("abc", max_tokens=20, seed=42, temperature=1.5))
    second = list(model.generate("abc", max_tokens=20, seed=42, temperature=1.5))
    assert first == second
    ids = model.generate_ids(list(b"abc"), 20, Sampler(SamplingSettings(temperature=1.5), 42))
    assert "".join(first) == model.tokenizer.decode(list(ids))
    assert "".join(model.generate("abc", max_tokens=20, seed=43, temperature=1.5)) != "".join(first)


def test_invalid_sampling_values_are_rejected_before_generating():
    model = byte_model()
    with pytest.raises(GgmlPyError, match="top_p must be in"):
        model.generate("abc", top_p=2.0)
    with pytest.raises(GgmlPyError, match="temperature must be a finite number"):
        model.generate("abc", temperature=float("nan"))


@pytest.fixture(scope="module")
def tiny_f16(peer):
    return ggml_py.load(
        peer / "tiny-gptj" / "ggml-model-f16.bin", backend="blocked-f16", n_threads=2
    )


def test_load_returns_a_model_with_tokenizer_eval_and_generate(tiny_f16, expected):
    prompt = expected["prompts"][0]
    assert tiny_f16.backend.name == "blocked-f16"
    assert tiny_f16.tokenizer.encode(prompt["text"]) == prompt["hf_prompt_ids"]
    logits = tiny_f16.eval(prompt["hf_prompt_ids"], 0)
    assert logits.shape == (5, 50400) and logits.dtype == np.float32
    pieces = list(tiny_f16.generate(prompt["text"], max_tokens=24, top_k=1))
    assert len(pieces) > 1 and "".join(pieces) == prompt["hf_greedy_text"]


def test_stop_strings_end_generation_before_them_even_across_tokens(tiny_f16, expected):
    prompt = expected["prompts"][0]  # continues "vs mergedars accustomed..."
    text = prompt["hf_greedy_text"]
    for stop in ["Butler", "ars acc", "vs"]:
        generated = "".join(
            tiny_f16.generate(prompt["text"], max_tokens=24, top_k=1, stop=[stop, "never"])
        )
        assert generated == text[: text.index(stop)]
    three = "".join(tiny_f16.generate(prompt["text"], max_tokens=3, top_k=1))
    assert three == tiny_f16.tokenizer.decode(prompt["hf_greedy_ids"][:3])


def test_load_picks_the_backend_from_the_environment(peer, monkeypatch):
    monkeypatch.setenv("GGML_PY_BACKEND", "blocked-f16")
    assert ggml_py.load(peer / "tiny-gptj" / "ggml-model-q4_0.bin").backend.name == "blocked-f16"
    monkeypatch.setenv("GGML_PY_BACKEND", "no-such-backend")
    with pytest.raises(ggml_py.BackendError, match="unknown backend 'no-such-backend'"):
        ggml_py.load(peer / "tiny-gptj" / "ggml-model-q4_0.bin")


# --- memory ------------------------------------------------------------------------------------


def _resident_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux's /proc/self/statm")
def test_kv_cache_memory_is_only_used_by_the_positions_evaluated():
    # 2 layers x 262144 positions x 64 floats: 128 MiB for keys and 128 MiB for values. Creating
    # the model and evaluating 3 tokens may touch the rotary tables (8 MiB) and the cache pages
    # of those positions (a 2 MiB huge page per layer and cache at most), never whole caches.
    model_file = reference.random_gptj(GGMLType.F32, n_ctx=1 << 18, n_embd=64, n_head=4, n_layer=2)
    before = _resident_mib()
    model = GptJ(model_file, create_backend("numpy-blas"))
    model.eval([1, 2, 3], 0)
    grown = _resident_mib() - before
    assert model.cache_k.nbytes + model.cache_v.nbytes == 256 * 2**20
    assert grown < 32, f"the model grew the resident memory by {grown:.0f} MiB"
