"""ggml's sampler against the real C++ standard library, and the repeat penalty.

``fixtures/sampling/libstdcxx.json`` comes from ``scripts/make_sampling_fixtures.cpp`` compiled
with g++ (libstdc++ 12): ``std::mt19937`` outputs, ``std::generate_canonical`` values,
``std::discrete_distribution`` draws, and ggml's top-k/top-p sampler run on fixed logits.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import REPO

from ggml_py.errors import GgmlPyError
from ggml_py.sampling import (
    MT19937,
    Sampler,
    SamplingSettings,
    apply_repeat_penalty,
    discrete_draw,
    sample_top_k_top_p,
)

GOLDEN = json.loads((REPO / "tests" / "fixtures" / "sampling" / "libstdcxx.json").read_text())


def test_mt19937_10000th_output_is_the_value_the_cpp_standard_requires():
    rng = MT19937(5489)
    rng.next_uint32(9999)
    assert int(rng.next_uint32()[0]) == 4123659995 == GOLDEN["mt19937_default_10000th"]


@pytest.mark.parametrize("seed", sorted(GOLDEN["mt19937_first_outputs"], key=int))
def test_mt19937_streams_match_libstdcxx(seed):
    assert MT19937(int(seed)).next_uint32(8).tolist() == GOLDEN["mt19937_first_outputs"][seed]


def test_canonical_doubles_match_generate_canonical():
    rng = MT19937(1)
    assert [rng.canonical() for _ in range(6)] == GOLDEN["canonical_seed_1"]


@pytest.mark.parametrize("case", GOLDEN["discrete"], ids=lambda c: f"{len(c['weights'])}-weights")
def test_discrete_draws_and_consumed_outputs_match_libstdcxx(case):
    rng = MT19937(case["seed"])
    assert [discrete_draw(case["weights"], rng) for _ in range(25)] == case["draws"]
    # the next raw output proves the same number of outputs was consumed (none for one weight)
    assert int(rng.next_uint32()[0]) == case["next_output"]


@pytest.mark.parametrize(
    "case", GOLDEN["sampler"], ids=lambda c: f"k{c['top_k']}-p{c['top_p']}-t{c['temp']}"
)
def test_sampler_picks_the_same_tokens_as_the_cpp_sampler(case):
    logits = np.array(GOLDEN["logits"], dtype=np.float32)
    rng = MT19937(case["seed"])
    ids = [
        sample_top_k_top_p(logits, case["top_k"], case["top_p"], case["temp"], rng)
        for _ in range(30)
    ]
    assert ids == case["ids"]
    assert int(rng.next_uint32()[0]) == case["next_output"]


def test_top_k_one_is_greedy_and_consumes_no_random_numbers():
    logits = np.array([0.5, 3.0, 2.9, -1.0], dtype=np.float32)
    rng = MT19937(99)
    assert [sample_top_k_top_p(logits, 1, 0.9, 0.8, rng) for _ in range(5)] == [1] * 5
    assert rng.next_uint32().tolist() == MT19937(99).next_uint32().tolist()


@pytest.mark.parametrize("temperature", [0.0, -0.7])
def test_temperature_zero_or_less_is_greedy_like_top_k_one(temperature):
    # llama.cpp's rule (ggml would divide by zero): the same id top_k=1 picks, no random number
    logits = np.array([0.5, 3.0, 3.0, -1.0], dtype=np.float32)  # a tie: the lower id, as top_k 1
    rng = MT19937(99)
    greedy = [sample_top_k_top_p(logits, 1, 0.9, 0.8, MT19937(99)) for _ in range(3)]
    assert [sample_top_k_top_p(logits, 40, 0.9, temperature, rng) for _ in range(3)] == greedy
    assert greedy == [1] * 3
    assert rng.next_uint32().tolist() == MT19937(99).next_uint32().tolist()
    SamplingSettings(temperature=temperature).check()


def test_top_p_keeps_the_shortest_prefix_reaching_it():
    # probabilities 0.5, 0.25, 0.125, ...: top_p 0.7 keeps two candidates, never the third
    logits = np.log(np.array([0.5, 0.25, 0.125, 0.0625, 0.0625])).astype(np.float32)
    rng = MT19937(3)
    drawn = {sample_top_k_top_p(logits, 5, 0.7, 1.0, rng) for _ in range(200)}
    assert drawn == {0, 1}


def test_repeat_penalty_divides_positive_and_multiplies_negative_logits_once_per_token():
    logits = np.array([2.0, -2.0, 1.0, 4.0], dtype=np.float32)
    out = apply_repeat_penalty(logits, [0, 1, 1, 1], 2.0)
    assert out.tolist() == [1.0, -4.0, 1.0, 4.0]
    assert logits.tolist() == [2.0, -2.0, 1.0, 4.0]  # the input is not modified
    assert apply_repeat_penalty(logits, [0], 1.0) is logits


def test_sampler_penalises_only_the_last_repeat_last_n_tokens():
    logits = np.array([3.0, 2.0, 0.0], dtype=np.float32)
    settings = SamplingSettings(top_k=1, repeat_last_n=2, repeat_penalty=10.0)
    sampler = Sampler(settings, seed=0)
    assert sampler.sample(logits, history=[0, 2, 2]) == 0  # token 0 is 3 tokens back: free
    assert sampler.sample(logits, history=[2, 0]) == 1  # token 0 penalised to 0.3
    no_penalty = Sampler(SamplingSettings(top_k=1, repeat_last_n=0, repeat_penalty=10.0), seed=0)
    assert no_penalty.sample(logits, history=[0]) == 0


@pytest.mark.parametrize(
    "settings, message",
    [
        (SamplingSettings(top_k=0), "top_k"),
        (SamplingSettings(top_p=0.0), "top_p"),
        (SamplingSettings(top_p=1.5), "top_p"),
        (SamplingSettings(temperature=float("inf")), "temperature"),
        (SamplingSettings(temperature=float("nan")), "temperature"),
        (SamplingSettings(repeat_last_n=-1), "repeat_last_n"),
        (SamplingSettings(repeat_penalty=0.0), "repeat_penalty"),
    ],
)
def test_invalid_settings_are_one_line_errors(settings, message):
    with pytest.raises(GgmlPyError, match=message) as error:
        settings.check()
    assert "\n" not in str(error.value)
