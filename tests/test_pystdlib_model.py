"""The trained GPT-J that ships in ``examples/pystdlib-gptj`` against transformers.

Golden data: ``tests/fixtures/perplexity/pystdlib-gptj*.{json,npz}``, made by
``scripts/make_perplexity_fixtures.py`` with ``GPTJForCausalLM`` in float32 on the float16
checkpoint. The files are converted at test time:

- f32 file: logits at every position of the prompts within 1e-4 (the tolerance of the tiny
  model's conformance tests), perplexity of the first chunks of ``heldout.txt`` within 1e-4
  relative of transformers' with the same chunking;
- f32 and f16 files: greedy continuations token for token equal to transformers';
- the folder's tokenizer and the ggml file's vocabulary give transformers' ids.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import REPO

import ggml_py
from ggml_py.convert import convert_hf
from ggml_py.formats.quant import GGMLFileType
from ggml_py.sampling import Sampler, SamplingSettings

FOLDER = REPO / "examples" / "pystdlib-gptj"
FIXTURES = REPO / "tests" / "fixtures" / "perplexity"


@pytest.fixture(scope="module")
def golden():
    return json.loads((FIXTURES / "pystdlib-gptj.json").read_text())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pystdlib")
    return {
        name: convert_hf(FOLDER, file_type, folder / f"ggml-model-{name}.bin")
        for name, file_type in (("f32", GGMLFileType.ALL_F32), ("f16", GGMLFileType.MOSTLY_F16))
    }


def test_folder_and_file_tokenize_like_transformers(files, golden):
    text = (FOLDER / "heldout.txt").read_text(encoding="utf-8")
    ids = golden["heldout_slice"]["ids"]
    sliced = text[: len(text) // 4]  # ample for the slice's tokens
    for tokenizer in (
        ggml_py.Tokenizer.from_pretrained(FOLDER),
        ggml_py.load(files["f16"]).tokenizer,
    ):
        assert tokenizer.encode(sliced)[: len(ids)] == ids
        for prompt in golden["prompts"]:
            assert tokenizer.encode(prompt["text"]) == prompt["ids"]


def test_f32_logits_match_transformers_at_every_position(files, golden):
    model = ggml_py.load(files["f32"])
    logits = np.load(FIXTURES / "pystdlib-gptj-logits.npz")
    for index, prompt in enumerate(golden["prompts"]):
        difference = np.abs(model.eval(prompt["ids"], 0) - logits[f"p{index}"]).max()
        assert difference <= 1e-4, f"{prompt['text']!r}: max |difference| {difference:.3g}"


def test_f32_perplexity_of_heldout_text_matches_transformers(files, golden):
    expected = golden["heldout_slice"]
    model = ggml_py.load(files["f32"])
    result = ggml_py.compute_perplexity(model, expected["ids"], expected["n_ctx"])
    assert result.count == expected["count"]
    assert result.ppl.value == pytest.approx(expected["ppl"], rel=1e-4)
    assert result.ppl.error == pytest.approx(expected["ppl_error"], rel=1e-3)


@pytest.mark.parametrize("file_type", ["f32", "f16"])
def test_greedy_continuations_match_transformers(files, golden, file_type):
    model = ggml_py.load(files[file_type])
    for prompt in golden["prompts"]:
        greedy = model.generate_ids(
            prompt["ids"],
            len(prompt["greedy_ids"]),
            Sampler(SamplingSettings(top_k=1), seed=0),
            stop_at_eos=False,
        )
        assert list(greedy) == prompt["greedy_ids"], prompt["text"]
