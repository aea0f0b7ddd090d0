"""Choosing the next token: ggml's top-k / top-p sampler, bit for bit, plus a repeat penalty.

ggml's ``gpt_sample_top_k_top_p`` draws from C++'s ``std::mt19937`` through libstdc++'s
``std::discrete_distribution``. Both are reproduced here, so the same seed picks the same token
as ggml's ``gpt-j`` from the same logits:

1. scale every logit by ``1 / temp`` in double precision (``temp`` is a C ``float``);
2. keep the ``top_k`` largest (ties: lower id first; C++ leaves that order unspecified);
3. softmax over them in double, after subtracting the maximum;
4. if ``top_p < 1``: keep the shortest prefix whose cumulative probability reaches ``top_p``
   and rescale it by ``1 / cumulative``;
5. draw: normalise, cumulative sums with the last forced to 1.0, ``u`` from two 32-bit outputs
   (``(r1 + r2 * 2**32) / 2**64``), pick the first index whose cumulative sum is ``>= u``.
   With a single candidate no random number is consumed, as in libstdc++.

A temperature of 0 or less means greedy, as in llama.cpp: the largest logit, the same token
``top_k = 1`` picks (ggml would divide by zero).

The repeat penalty (llama.cpp's rule; ggml parses the flag but ignores it) divides positive and
multiplies negative logits of every token seen in the last ``repeat_last_n`` tokens.

>>> rng = MT19937(5489)
>>> [int(x) for x in rng.next_uint32(3)]
[3499211612, 581869302, 3890346734]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ggml_py.errors import GgmlPyError


class MT19937:
    """C++'s ``std::mt19937`` seeded with ``init_genrand(seed)``, on NumPy's MT19937 generator.

    NumPy's own integer seeding goes through ``SeedSequence``; here the 624-word state is built
    with the reference recurrence and handed over through the public ``state`` property.
    """

    def __init__(self, seed: int):
        key = np.empty(624, dtype=np.uint32)
        key[0] = value = seed & 0xFFFFFFFF
        for i in range(1, 624):
            value = (1812433253 * (value ^ (value >> 30)) + i) & 0xFFFFFFFF
            key[i] = value
        self._bits = np.random.MT19937()
        self._bits.state = {"bit_generator": "MT19937", "state": {"key": key, "pos": 624}}

    def next_uint32(self, count: int = 1) -> np.ndarray:
        """The next ``count`` raw 32-bit outputs, as ``std::mt19937::operator()`` returns them."""
        return self._bits.random_raw(count).astype(np.uint32)

    def canonical(self) -> float:
        """``std::generate_canonical<double, 53>``: two outputs, low word first, in [0, 1)."""
        low, high = (int(x) for x in self.next_uint32(2))
        u = (low + high * 2.0**32) / 2.0**64
        return u if u < 1.0 else math.nextafter(1.0, 0.0)


def discrete_draw(weights: Sequence[float], rng: MT19937) -> int:
    """libstdc++'s ``std::discrete_distribution<int>(weights)(rng)``."""
    if len(weights) < 2:
        return 0  # a single outcome: libstdc++ draws nothing
    probabilities = np.asarray(weights, dtype=np.float64)
    probabilities = (
        probabilities / np.cumsum(probabilities)[-1]
    )  # sequential sum, as std::accumulate
    cumulative = np.cumsum(probabilities)
    cumulative[-1] = 1.0
    return int(np.searchsorted(cumulative, rng.canonical(), side="left"))


@dataclass(frozen=True)
class SamplingSettings:
    """ggml's defaults; ``repeat_penalty = 1`` leaves the logits alone."""

    top_k: int = 40
    top_p: float = 0.9
    temperature: float = 0.9
    repeat_last_n: int = 64
    repeat_penalty: float = 1.0

    def check(self) -> None:
        """Raise ``GgmlPyError`` for values the sampler cannot use."""
        problems = []
        if not 1 <= self.top_k:
            problems.append(f"top_k must be at least 1, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if not math.isfinite(self.temperature):
            problems.append(
                f"temperature must be a finite number (0 or less: greedy), got {self.temperature}"
            )
        if self.repeat_last_n < 0:
            problems.append(f"repeat_last_n must be at least 0, got {self.repeat_last_n}")
        if not (self.repeat_penalty > 0.0 and math.isfinite(self.repeat_penalty)):
            problems.append(f"repeat_penalty must be a positive number, got {self.repeat_penalty}")
        if problems:
            raise GgmlPyError(None, "; ".join(problems))


class Sampler:
    """Picks token ids from logits with fixed settings and its own ``std::mt19937`` stream,
    ``rng``, seeded with ``seed`` (ggml's ``gpt-j`` also draws its random prompt from it).

    >>> sampler = Sampler(SamplingSettings(top_k=1), seed=1)
    >>> sampler.sample(np.array([0.1, 2.0, -1.0], dtype=np.float32), history=[])
    1
    """

    def __init__(self, settings: SamplingSettings, seed: int):
        self.settings = settings
        self.rng = MT19937(seed)

    def sample(self, logits: np.ndarray, history: Sequence[int]) -> int:
        """The next token id; ``history`` holds the ids so far (prompt included)."""
        s = self.settings
        recent = history[-s.repeat_last_n :] if s.repeat_last_n else ()
        logits = apply_repeat_penalty(logits, recent, s.repeat_penalty)
        return sample_top_k_top_p(logits, s.top_k, s.top_p, s.temperature, self.rng)


def apply_repeat_penalty(
    logits: np.ndarray, recent_ids: Sequence[int], penalty: float
) -> np.ndarray:
    """llama.cpp's repetition penalty: for each distinct id in ``recent_ids`` a positive logit is
    divided by ``penalty`` and a negative one multiplied by it. Returns a new array.

    >>> apply_repeat_penalty(np.array([2.0, -2.0, 1.0], np.float32), [0, 1, 1], 2.0).tolist()
    [1.0, -4.0, 1.0]
    """
    if penalty == 1.0 or len(recent_ids) == 0:
        return logits
    logits = np.array(logits, dtype=np.float32)
    ids = np.unique(np.asarray(recent_ids, dtype=np.int64))
    chosen = logits[ids]
    logits[ids] = np.where(chosen > 0, chosen / np.float32(penalty), chosen * np.float32(penalty))
    return logits


def sample_top_k_top_p(
    logits: np.ndarray, top_k: int, top_p: float, temperature: float, rng: MT19937
) -> int:
    """ggml's ``gpt_sample_top_k_top_p``: see the module docstring for the exact steps.

    ``top_p`` and ``temperature`` are rounded to C ``float`` first, as ggml stores them.
    """
    logits = np.asarray(logits, dtype=np.float32)
    if top_k == 1 or temperature <= 0.0:
        # a single candidate: the (first) largest logit, and libstdc++ draws no random number
        return int(np.argmax(logits))
    temperature = float(np.float32(temperature))
    top_p = float(np.float32(top_p))
    scaled = logits.astype(np.float64) * (1.0 / temperature)
    top_k = min(top_k, scaled.size)
    candidates = (
        np.argpartition(-scaled, top_k - 1)[:top_k]
        if top_k < scaled.size
        else np.arange(scaled.size)
    )
    candidates = candidates[np.lexsort((candidates, -scaled[candidates]))]  # value desc, id asc
    values = scaled[candidates]

    exps = [math.exp(value - values[0]) for value in values]  # values[0] is the maximum
    total = 0.0
    for p in exps:
        total += p
    probabilities = [p / total for p in exps]

    if top_p < 1.0:
        cumulative = 0.0
        for i, p in enumerate(probabilities):
            cumulative += p
            if cumulative >= top_p:
                probabilities = probabilities[: i + 1]
                break
        probabilities = [p * (1.0 / cumulative) for p in probabilities]

    return int(candidates[discrete_draw(probabilities, rng)])
