"""A small random GPT-J through the real graph (``ggml_py.model``) on the backend under test,
against the float64 forward pass of ``reference.gptj_logits``.

Tolerance: ``|logits - ref| <= 1e-4`` for f32 and f16 weights; with block formats as well, since
the reference uses the same decoded weights. The context is 12 positions, so the limit is
reached.
"""

from __future__ import annotations

import numpy as np
import pytest

from ggml_py.conformance import reference
from ggml_py.errors import GgmlPyError
from ggml_py.formats.quant import QUANTIZED_TYPES, GGMLType
from ggml_py.model import GptJ

ALL_TYPES = (GGMLType.F32, GGMLType.F16, *QUANTIZED_TYPES)
IDS = [5, 17, 0, 95, 42, 42, 8, 3, 77, 1, 60, 23]  # 12 = the whole context


def _decoded_weights(model_file):
    return {name: reference.decoded(record) for name, record in model_file.tensors.items()}


@pytest.mark.parametrize("ggml_type", ALL_TYPES, ids=lambda t: t.short_name)
def test_whole_sequence_matches_float64(conformance_backend, ggml_type):
    model_file = reference.random_gptj(ggml_type)
    graph = GptJ(model_file, conformance_backend)
    logits = graph.eval(IDS, 0)
    assert logits.dtype == np.float32 and logits.shape == (len(IDS), model_file.hparams.n_vocab)
    expected = reference.gptj_logits(_decoded_weights(model_file), model_file.hparams, IDS)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("ggml_type", [GGMLType.F16, GGMLType.Q4_1], ids=lambda t: t.short_name)
def test_chunks_and_single_steps_match_one_pass_up_to_the_context_limit(
    conformance_backend, ggml_type
):
    model_file = reference.random_gptj(ggml_type, seed=1)
    graph = GptJ(model_file, conformance_backend)
    expected = reference.gptj_logits(_decoded_weights(model_file), model_file.hparams, IDS)
    rows = [graph.eval(IDS[:5], 0), graph.eval(IDS[5:8], 5)]
    rows += [graph.eval([token], position) for position, token in enumerate(IDS[8:], start=8)]
    np.testing.assert_allclose(np.concatenate(rows), expected, rtol=0, atol=1e-4)
    np.testing.assert_allclose(
        graph.eval(IDS[11:], 11, last_only=True), expected[11], rtol=0, atol=1e-4
    )
    with pytest.raises(GgmlPyError, match="exceed the context"):
        graph.eval([1], 12)
    with pytest.raises(GgmlPyError, match="exceed the context"):
        graph.eval(IDS[:3], 10)


def test_evaluating_again_from_an_earlier_position_overwrites_the_cache(conformance_backend):
    model_file = reference.random_gptj(GGMLType.F32, seed=2)
    graph = GptJ(model_file, conformance_backend)
    graph.eval([9, 9, 9, 9, 9, 9], 0)
    logits = graph.eval(IDS[2:4], 2)  # positions 2, 3 replaced
    assert graph.n_past == 4
    expected = reference.gptj_logits(
        _decoded_weights(model_file), model_file.hparams, [9, 9, *IDS[2:4]]
    )
    np.testing.assert_allclose(logits, expected[2:], rtol=0, atol=1e-4)
    with pytest.raises(GgmlPyError, match="n_past 5"):
        graph.eval([1], 5)  # would leave position 4 unset
