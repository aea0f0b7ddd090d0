"""``ggml-py perplexity`` and ``ggml_py.compute_perplexity``: llama.cpp's chunking and statistics.

The perplexity of the shipped tiny GPT-J (random weights) is compared with transformers'
(``tests/fixtures/perplexity/tiny-gptj.json``, made by ``scripts/make_perplexity_fixtures.py``
with the same chunking); KL divergence, top-token agreement and the CLI are checked on small
random models written at test time.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import re

import numpy as np
import pytest
from conftest import REPO
from test_model import BYTE_VOCAB, byte_model_file, write_model_file

import ggml_py
from ggml_py.cli import main
from ggml_py.conformance import reference
from ggml_py.convert import convert_hf, quantize_file
from ggml_py.errors import GgmlPyError
from ggml_py.formats.quant import GGMLFileType, GGMLType
from ggml_py.perplexity import log_softmax, mean_and_error

FIXTURES = REPO / "tests" / "fixtures" / "perplexity"
N_CTX = 32
TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(8))


@pytest.fixture(scope="module")
def tiny_f32(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("tiny") / "ggml-model-f32.bin"
    return convert_hf(tiny_model_dir, GGMLFileType.ALL_F32, out)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A random 32-position GPT-J over bytes in f16, its q4_0 quantization, one with the same
    number of tokens spelled differently, and one with another n_vocab."""
    folder = tmp_path_factory.mktemp("models")
    paths = {name: folder / f"{name}.bin" for name in ("f16", "q4_0", "reversed", "other_n_vocab")}
    model_file = byte_model_file(n_ctx=N_CTX)
    write_model_file(paths["f16"], model_file)
    quantize_file(paths["f16"], paths["q4_0"], GGMLFileType.MOSTLY_Q4_0)
    write_model_file(
        paths["reversed"], dataclasses.replace(model_file, vocab=list(reversed(BYTE_VOCAB)))
    )
    other = reference.random_gptj(GGMLType.F16, n_vocab=300, n_ctx=N_CTX)
    write_model_file(
        paths["other_n_vocab"],
        dataclasses.replace(other, vocab=BYTE_VOCAB + [b"x%d" % i for i in range(43)]),
    )
    return paths


def test_tiny_f32_perplexity_matches_transformers(tiny_f32):
    golden = json.loads((FIXTURES / "tiny-gptj.json").read_text())
    model = ggml_py.load(tiny_f32)
    assert model.tokenizer.encode(golden["text"]) == golden["ids"]
    result = ggml_py.compute_perplexity(model, golden["ids"], golden["n_ctx"], n_batch=10)
    assert result.count == golden["count"]
    assert result.nll.sum() == pytest.approx(golden["nll_sum"], rel=1e-5)
    assert result.ppl.value == pytest.approx(golden["ppl"], rel=1e-4)
    assert result.ppl.error == pytest.approx(golden["ppl_error"], rel=1e-3)


def test_chunks_are_scored_on_their_second_half_whatever_the_batch(models):
    model = ggml_py.load(models["f16"])
    ids = model.tokenizer.encode(TEXT)  # 440 bytes: 13 chunks of 32, the rest dropped
    result = ggml_py.compute_perplexity(model, ids, N_CTX, n_batch=5)
    assert (result.n_chunks, result.count) == (13, 13 * 15)
    # the scored tokens of chunk 3, from the logits of an evaluation of that chunk alone
    chunk = ids[3 * N_CTX : 4 * N_CTX]
    log_p = log_softmax(model.eval(chunk, 0))[16:31]
    expected = -log_p[np.arange(15), chunk[17:]]
    np.testing.assert_allclose(result.nll[45:60], expected, rtol=1e-5)  # batches of 5 vs 32
    whole_batches = ggml_py.compute_perplexity(model, ids, N_CTX, n_batch=512)
    np.testing.assert_allclose(whole_batches.nll, result.nll, rtol=1e-5)


def test_a_model_against_itself_has_zero_kl_and_the_same_top_tokens(models):
    model, base = ggml_py.load(models["f16"]), ggml_py.load(models["f16"])
    ids = model.tokenizer.encode(TEXT)
    result = ggml_py.compute_perplexity(model, ids, N_CTX, kl_base=base)
    assert np.abs(result.kl).max() < 1e-12
    assert result.same_top_fraction.value == 1.0
    assert result.log_ppl_ratio.value == 0.0
    assert result.base_ppl == result.ppl


def test_quantized_model_kl_divergence_statistics(models):
    model, base = ggml_py.load(models["q4_0"]), ggml_py.load(models["f16"])
    ids = model.tokenizer.encode(TEXT)
    result = ggml_py.compute_perplexity(model, ids, N_CTX, kl_base=base)
    chunk = ids[:N_CTX]
    p = log_softmax(model.eval(chunk, 0))[16:31]
    q = log_softmax(base.eval(chunk, 0))[16:31]
    np.testing.assert_allclose(result.kl[:15], np.sum(np.exp(q) * (q - p), axis=-1), rtol=1e-9)
    assert result.kl.min() > 0  # q4_0 changes every distribution
    kl = np.sort(result.kl)
    assert result.kl_percentile(1.0) == kl[-1]
    assert result.kl_percentile(0.0) == kl[0]
    assert result.kl_percentile(0.5) == pytest.approx(np.median(kl))
    assert kl[0] < result.kl_percentile(0.9) < result.kl_percentile(0.99) <= kl[-1]
    agree = model_top = np.mean(result.same_top)
    assert result.same_top_fraction.value == model_top
    expected_error = math.sqrt(agree * (1 - agree) / (result.count - 1))
    assert result.same_top_fraction.error == pytest.approx(expected_error)
    ratio = result.log_ppl_ratio
    assert ratio.value == pytest.approx(np.mean(result.nll) - np.mean(result.base_nll))
    assert 0 < ratio.error < mean_and_error(result.nll).error  # correlated errors cancel


def test_mean_and_error_is_the_standard_error_of_the_mean():
    values = np.random.default_rng(0).normal(3.0, 2.0, 1000)
    estimate = mean_and_error(values)
    assert estimate.value == pytest.approx(values.mean())
    assert estimate.error == pytest.approx(values.std(ddof=1) / math.sqrt(1000))


def perplexity(capsys, *args, stdin: bytes | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    code = main(["perplexity", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_prints_llamas_running_estimates_and_final_line(capsys, models, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    code, out, err = perplexity(capsys, "-m", models["f16"], "-f", text, "-c", N_CTX, "-b", 8)
    assert code == 0
    model = ggml_py.load(models["f16"])
    expected = ggml_py.compute_perplexity(model, model.tokenizer.encode(TEXT), N_CTX)
    assert out == f"Final estimate: PPL = {expected.ppl.value:.4f} +/- {expected.ppl.error:.5f}\n"
    running = re.findall(r"\[(\d+)\](\d+\.\d{4}),", err)
    assert [int(i) for i, _ in running] == list(range(1, 14))
    assert float(running[-1][1]) == pytest.approx(expected.ppl.value, abs=1e-4)
    assert "calculating perplexity over 13 chunks, n_ctx=32, batch_size=8" in err
    assert re.search(r"seconds per pass - ETA \d+\.\d\d minutes", err)


def test_cli_reads_standard_input(capsys, models, monkeypatch, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    _, from_file, _ = perplexity(capsys, "-m", models["f16"], "-f", text, "-c", N_CTX)
    code, from_stdin, _ = perplexity(
        capsys,
        "-m",
        models["f16"],
        "-f",
        "-",
        "-c",
        N_CTX,
        stdin=TEXT.encode(),
        monkeypatch=monkeypatch,
    )
    assert code == 0 and from_stdin == from_file


def test_cli_kl_summary(capsys, models, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    args = ["-m", models["q4_0"], "-f", text, "-c", N_CTX, "--kl-base", models["f16"]]
    code, out, err = perplexity(capsys, *args)
    assert code == 0
    model, base = ggml_py.load(models["q4_0"]), ggml_py.load(models["f16"])
    result = ggml_py.compute_perplexity(model, model.tokenizer.encode(TEXT), N_CTX, kl_base=base)
    for line in (
        f"Mean    KLD: {result.mean_kl.value:10.6f} ± {result.mean_kl.error:10.6f}",
        f"Maximum KLD: {result.kl.max():10.6f}",
        f"99.0%   KLD: {result.kl_percentile(0.99):10.6f}",
        f"Median  KLD: {np.median(result.kl):10.6f}",
        f"Mean ln(PPL(Q)/PPL(base))     : {result.log_ppl_ratio.value:10.6f}",
        f"Same top p: {100 * result.same_top_fraction.value:6.3f}",
        f"Final estimate: PPL = {result.ppl}",
    ):
        assert line in out
    assert len(re.findall(r"^ +\d+ +\d+\.\d{4} ± ", err, re.MULTILINE)) == 13  # a row per chunk


@pytest.mark.parametrize(
    "text, flags, message",
    [
        (
            "",
            [],
            "text.txt: the text has 0 tokens; perplexity with a context of 32 needs at least 64",
        ),
        ("x" * 63, [], "the text has 63 tokens; perplexity with a context of 32 needs at least 64"),
        (TEXT, ["-c", "33"], "the context (-c) of 33 tokens is beyond the model's 32"),
        (TEXT, ["--kl-base", "other_n_vocab"], "other_n_vocab.bin: the base model has n_vocab 300"),
        (TEXT, ["--kl-base", "reversed"], "reversed.bin: the base model's vocabulary differs"),
    ],
)
def test_bad_input_is_a_one_line_error(capsys, models, tmp_path, text, flags, message):
    path = tmp_path / "text.txt"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    flags = [str(models[f]) if f in models else f for f in flags]
    code, out, err = perplexity(capsys, "-m", models["f16"], "-f", path, "-c", N_CTX, *flags)
    assert code == 1 and out == ""
    error = err.splitlines()[-1]
    assert error.startswith("ggml-py: error: ") and message in error, err


def test_usage_errors_exit_2_before_any_work(capsys, models, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    for flags, message in (
        (["-f", tmp_path / "absent.txt"], "absent.txt: no such file or folder"),
        (["-f", tmp_path], "is a folder"),
        (["-f", text, "-b", "0"], "must be at least 1, got 0"),
        (["-f", text, "--kl-base", REPO / "examples" / "tiny-gptj"], "convert it first"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            perplexity(capsys, "-m", models["f16"], *flags)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err, err


def test_api_errors_name_the_problem(models):
    model = ggml_py.load(models["f16"])
    with pytest.raises(GgmlPyError, match="at least 4 tokens"):
        ggml_py.compute_perplexity(model, list(range(100)), 2)
    with pytest.raises(GgmlPyError, match="need a base model"):
        _ = ggml_py.compute_perplexity(model, list(range(64)), N_CTX).mean_kl
