"""An optional larger data set: the shared tiny GPT-J (``tiny-gptj/`` of a golden data folder,
given by ``--ggml-py-golden-dir DIR`` or ``$GGML_PY_GOLDEN_DIR``) against Hugging Face and ggml.

This module is collected only when a folder is given. Its GPT-J has GPT-J's real vocabulary
(50400 tokens: an embedding table and lm_head of 50400 rows) and 256 positions. The data was
made by transformers' ``GPTJForCausalLM`` in float32 and by ggml's tools (its README.md says
how). Tolerances, max abs over all logits:

- ``ggml-model-f32.bin``: 1e-4 against Hugging Face at every position;
- ``ggml-model-f16.bin``: 5e-3 (its weights are the checkpoint's f16 values, so in practice it
  is as close as the f32 file);
- the five quantized files: 1e-3 at the last prompt position against Hugging Face run in
  float32 on the file's dequantized weights.

Greedy decoding (24 tokens) must give exactly the reference ids: Hugging Face's for every file,
and ggml's own for the f32 and f16 files, run from the prompt ids ggml used.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ggml_py.formats import open_model
from ggml_py.model import Model
from ggml_py.sampling import Sampler, SamplingSettings
from ggml_py.tokenizer import Tokenizer

FLOAT_FILES = ["f32", "f16"]
QUANTIZED_FILES = ["q8_0", "q5_1", "q5_0", "q4_1", "q4_0"]
LOGIT_TOLERANCE = {"f32": 1e-4, "f16": 5e-3}
N_GREEDY = 24


@pytest.fixture(scope="module")
def golden(conformance_golden_dir):
    folder = conformance_golden_dir / "tiny-gptj"
    return {
        "folder": folder,
        "expected": json.loads((folder / "expected.json").read_text()),
        "hf_logits": np.load(folder / "hf-logits.npz"),
        "dequantized_logits": np.load(folder / "hf-dequantized-logits.npz"),
    }


def _model(golden, file_type, backend) -> Model:
    model_file = open_model(golden["folder"] / f"ggml-model-{file_type}.bin")
    return Model(model_file, backend, Tokenizer.from_model(model_file))


def _greedy(model: Model, prompt_ids) -> list:
    return list(
        model.generate_ids(prompt_ids, N_GREEDY, Sampler(SamplingSettings(top_k=1), seed=0))
    )


@pytest.mark.parametrize("file_type", FLOAT_FILES)
def test_logits_at_every_position_match_hugging_face(golden, conformance_backend, file_type):
    model = _model(golden, file_type, conformance_backend)
    hf = golden["hf_logits"]
    for prompt in golden["expected"]["prompts"]:
        key = prompt["key"]
        logits = model.eval(hf[f"{key}_ids"], 0)
        difference = np.abs(logits - hf[key]).max()
        assert difference <= LOGIT_TOLERANCE[file_type], f"{key}: max |difference| {difference:.3g}"


@pytest.mark.parametrize("file_type", FLOAT_FILES)
def test_greedy_tokens_match_hugging_face_and_ggml(golden, conformance_backend, file_type):
    model = _model(golden, file_type, conformance_backend)
    for prompt in golden["expected"]["prompts"]:
        assert _greedy(model, prompt["hf_prompt_ids"]) == prompt["hf_greedy_ids"], prompt["key"]
        ggml = prompt["ggml"][file_type]
        if ggml["prompt_ids"] == prompt["hf_prompt_ids"]:
            assert ggml["greedy_ids"] == prompt["hf_greedy_ids"], prompt["key"]
        else:  # ggml's own tokenizer split the prompt differently: start from its ids
            assert _greedy(model, ggml["prompt_ids"]) == ggml["greedy_ids"], prompt["key"]


@pytest.mark.parametrize("file_type", QUANTIZED_FILES)
def test_quantized_files_match_hugging_face_on_their_dequantized_weights(
    golden, conformance_backend, file_type
):
    model = _model(golden, file_type, conformance_backend)
    reference = golden["dequantized_logits"]
    for prompt in golden["expected"]["prompts"]:
        key, ids = prompt["key"], prompt["hf_prompt_ids"]
        last = model.eval(ids, 0, last_only=True)
        difference = np.abs(last - reference[f"{file_type}_{key}_last_prompt_logits"]).max()
        assert difference <= 1e-3, f"{key}: max |difference| {difference:.3g}"
        expected = prompt["hf_float32_on_dequantized_weights"][file_type]["greedy_ids"]
        assert _greedy(model, ids) == expected, key
