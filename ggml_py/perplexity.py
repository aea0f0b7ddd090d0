"""Perplexity of a model on a text, and its KL divergence from a base model, as llama.cpp's
``llama-perplexity`` measures them.

The text's tokens are cut into consecutive chunks of ``n_ctx`` tokens (a remainder shorter than a
chunk is left out). Each chunk is evaluated from an empty cache, and only its second half is
scored: the logits at positions ``n_ctx/2 .. n_ctx-2`` predict the tokens after them, so every
scored token has at least ``n_ctx/2`` tokens of context and a chunk scores ``n_ctx - 1 - n_ctx/2``
tokens. GPT-J adds no beginning-of-text token, so none is put in front of a chunk.

With a base model (typically the f16 or f32 file the quantized one was made from) the same
chunks are evaluated by both, and for every scored token we record the base's negative
log-likelihood, the KL divergence ``KL(base || model) = sum_v p_base(v) (ln p_base(v) - ln
p_model(v))`` and whether both put the same token on top. Unlike llama.cpp, which stores the base
model's log-probabilities as 16-bit numbers and drops those below ``e**-16``, the two
distributions are compared exactly (in float64).

Log-softmax is computed in float64: over tens of thousands of tokens in float32, the rounding of
the normaliser is of the order of the differences a quantization quality table compares.

The uncertainties are llama.cpp's: the standard error of a mean ``sqrt((E[x**2] - E[x]**2) / (n -
1))``, carried to ``PPL = exp(mean nll)`` as ``PPL * error``; ``ln(PPL(Q)/PPL(base))`` subtracts
the covariance of the two models' log-likelihoods; "same top" is a proportion with error ``sqrt(p
(1 - p) / (n - 1))``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ggml_py.errors import GgmlPyError
from ggml_py.model import GptJ

# Rows of logits turned into float64 log-probabilities at a time: GPT-J-6B's 50400-token rows
# take 400 KB each in float64, so a 2048-token chunk at once would need 400 MB.
_ROWS_PER_BLOCK = 64


@dataclass(frozen=True)
class Estimate:
    """A value and its standard error."""

    value: float
    error: float

    def __str__(self) -> str:
        return f"{self.value:.4f} +/- {self.error:.5f}"


def mean_and_error(values: np.ndarray) -> Estimate:
    """Mean and standard error of the mean, as llama.cpp computes them from sums.

    >>> mean_and_error(np.array([1.0, 2.0, 3.0, 4.0]))
    Estimate(value=2.5, error=0.6454972243679028)
    """
    count = len(values)
    mean = float(np.mean(values))
    variance = float(np.mean(np.square(values))) - mean * mean
    return Estimate(mean, math.sqrt(variance / (count - 1)) if variance > 0 and count > 1 else 0.0)


def percentile(sorted_values: np.ndarray, fraction: float) -> float:
    """llama.cpp's percentile: linear interpolation at ``fraction * (n - 1)`` (numpy's default).

    >>> percentile(np.array([0.0, 1.0, 2.0, 10.0]), 0.5)
    1.5
    """
    return float(np.percentile(sorted_values, 100.0 * fraction))


@dataclass
class PerplexityResult:
    """Per scored token: the model's negative log-likelihood, and with a base model the base's,
    the KL divergence from the base and whether the top tokens agree. Arrays grow chunk by chunk
    (the running estimate is the statistic of what is there so far)."""

    n_ctx: int
    n_chunks: int
    n_text_tokens: int
    nll: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [N] float64
    base_nll: np.ndarray | None = None  # [N] float64
    kl: np.ndarray | None = None  # [N] float64
    same_top: np.ndarray | None = None  # [N] bool
    chunks_done: int = 0
    seconds: float = 0.0

    @property
    def count(self) -> int:
        """Tokens scored so far."""
        return len(self.nll)

    @property
    def ppl(self) -> Estimate:
        """exp(mean negative log-likelihood) and its error."""
        return _ppl(self.nll)

    @property
    def base_ppl(self) -> Estimate:
        return _ppl(self._with_base().base_nll)

    @property
    def log_ppl_ratio(self) -> Estimate:
        """ln(PPL(model) / PPL(base)): the difference of the mean log-likelihoods, its error
        reduced by their covariance (the two models err on the same tokens)."""
        model, base = mean_and_error(self.nll), mean_and_error(self._with_base().base_nll)
        count = self.count
        covariance = (
            (float(np.mean(self.nll * self.base_nll)) - model.value * base.value) / (count - 1)
            if count > 1
            else 0.0
        )
        variance = model.error**2 + base.error**2 - 2.0 * covariance
        return Estimate(model.value - base.value, math.sqrt(max(variance, 0.0)))

    @property
    def mean_kl(self) -> Estimate:
        return mean_and_error(self._with_base().kl)

    def kl_percentile(self, fraction: float) -> float:
        """The KL divergence below which ``fraction`` of the scored tokens lie (0.5: the median,
        1.0: the maximum)."""
        return percentile(np.sort(self._with_base().kl), fraction)

    @property
    def same_top_fraction(self) -> Estimate:
        """Fraction of scored tokens whose most likely next token is the base model's."""
        p = float(np.mean(self._with_base().same_top))
        count = self.count
        return Estimate(p, math.sqrt(p * (1.0 - p) / (count - 1)) if count > 1 else 0.0)

    def _with_base(self) -> PerplexityResult:
        if self.kl is None:
            raise GgmlPyError(None, "these statistics need a base model (kl_base)")
        return self


def _ppl(nll: np.ndarray) -> Estimate:
    log_ppl = mean_and_error(nll)
    value = math.exp(log_ppl.value)
    return Estimate(value, value * log_ppl.error)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """float64 log-probabilities of float32 logits ``[T, V]``.

    >>> np.exp(log_softmax(np.array([[0.0, math.log(3.0)]], np.float32))).round(6).tolist()
    [[0.25, 0.75]]
    """
    x = logits.astype(np.float64)  # [T, V]
    x -= x.max(axis=-1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return x


def check_chunking(n_tokens: int, n_ctx: int, model_n_ctx: int, where: str | None) -> int:
    """The number of chunks, or a one-line error when the context or the text does not allow one
    (llama.cpp asks for at least two chunks' worth of tokens)."""
    if n_ctx < 4:
        raise GgmlPyError(None, f"the context (-c) must be at least 4 tokens, got {n_ctx}")
    if n_ctx > model_n_ctx:
        raise GgmlPyError(
            None, f"the context (-c) of {n_ctx} tokens is beyond the model's {model_n_ctx}"
        )
    if n_tokens < 2 * n_ctx:
        raise GgmlPyError(
            where,
            f"the text has {n_tokens} tokens; perplexity with a context of {n_ctx} needs at "
            f"least {2 * n_ctx}",
        )
    return n_tokens // n_ctx


def check_same_vocabulary(model: GptJ, base: GptJ) -> None:
    """A base model must predict over the same tokens: same n_vocab, same token bytes."""
    if model.n_vocab != base.n_vocab:
        raise GgmlPyError(
            base.path,
            f"the base model has n_vocab {base.n_vocab}, the model {model.n_vocab}: KL divergence "
            "needs the same vocabulary",
        )
    model_vocab, base_vocab = _vocabulary(model), _vocabulary(base)
    if model_vocab is not None and base_vocab is not None and model_vocab != base_vocab:
        first = next(
            i for i, (a, b) in enumerate(zip(model_vocab, base_vocab, strict=True)) if a != b
        )
        raise GgmlPyError(
            base.path,
            f"the base model's vocabulary differs from the model's (token {first}: "
            f"{base_vocab[first]!r} vs {model_vocab[first]!r})",
        )


def _vocabulary(model: GptJ) -> list[bytes] | None:
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return None
    return [tokenizer.token_bytes(i) for i in range(model.n_vocab)]


def chunk_logits(model: GptJ, ids: Sequence[int], n_batch: int, first: int) -> np.ndarray:
    """Evaluate ``ids`` from an empty cache in batches of ``n_batch`` tokens; return the logits
    of positions ``first ..`` as float32 ``[len(ids) - first, V]``."""
    rows = []
    for start in range(0, len(ids), n_batch):
        logits = model.eval(ids[start : start + n_batch], start)  # [T, V]
        keep = max(first - start, 0)
        if keep < len(logits):
            rows.append(np.array(logits[keep:], dtype=np.float32))
    return np.concatenate(rows)


def score_chunk(
    logits: np.ndarray, targets: np.ndarray, base_logits: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Negative log-likelihoods of ``targets`` under ``logits`` ``[T, V]``; with ``base_logits``
    also the base's, KL(base || model) and top-token agreement, each ``[T]``."""
    count = len(targets)
    nll = np.empty(count)
    base_nll = kl = same_top = None
    if base_logits is not None:
        base_nll, kl, same_top = np.empty(count), np.empty(count), np.empty(count, dtype=bool)
    for lo in range(0, count, _ROWS_PER_BLOCK):
        hi = min(count, lo + _ROWS_PER_BLOCK)
        rows = np.arange(hi - lo)
        log_p = log_softmax(logits[lo:hi])  # [t, V]
        nll[lo:hi] = -log_p[rows, targets[lo:hi]]
        if base_logits is None:
            continue
        base_log_p = log_softmax(base_logits[lo:hi])  # [t, V]
        base_nll[lo:hi] = -base_log_p[rows, targets[lo:hi]]
        kl[lo:hi] = np.sum(np.exp(base_log_p) * (base_log_p - log_p), axis=-1)
        same_top[lo:hi] = logits[lo:hi].argmax(axis=-1) == base_logits[lo:hi].argmax(axis=-1)
    return nll, base_nll, kl, same_top


def compute_perplexity(
    model: GptJ,
    ids: Sequence[int],
    n_ctx: int | None = None,
    n_batch: int = 512,
    *,
    kl_base: GptJ | None = None,
    text_path: str | None = None,
    on_chunk: Callable[[PerplexityResult], None] | None = None,
) -> PerplexityResult:
    """Perplexity of ``model`` (a ``ggml_py.load`` result) on the token ids ``ids``, chunked as
    llama-perplexity does (see the module docstring), and with ``kl_base`` (a second loaded
    model of the same vocabulary) the KL divergence statistics.

    ``n_ctx`` defaults to the model's context; ``n_batch`` is the number of tokens per
    evaluation. ``on_chunk`` is called with the running result after every chunk.
    ``text_path`` names the text in error messages.
    """
    n_ctx = model.n_ctx if n_ctx is None else n_ctx
    if n_batch < 1:
        raise GgmlPyError(None, f"the batch size (-b) must be at least 1, got {n_batch}")
    n_chunks = check_chunking(len(ids), n_ctx, model.n_ctx, text_path)
    if kl_base is not None:
        check_same_vocabulary(model, kl_base)
        check_chunking(len(ids), n_ctx, kl_base.n_ctx, text_path)
    ids = np.asarray(ids, dtype=np.int64)
    n_batch = min(n_batch, n_ctx)
    first = n_ctx // 2
    result = PerplexityResult(n_ctx, n_chunks, len(ids))
    parts: dict[str, list[np.ndarray]] = {"nll": [], "base_nll": [], "kl": [], "same_top": []}
    started = time.perf_counter()
    for chunk in range(n_chunks):
        tokens = ids[chunk * n_ctx : (chunk + 1) * n_ctx]
        targets = tokens[first + 1 :]  # [n_ctx - 1 - first]
        logits = chunk_logits(model, tokens, n_batch, first)[:-1]  # [n_ctx - 1 - first, V]
        base_logits = None
        if kl_base is not None:
            base_logits = chunk_logits(kl_base, tokens, n_batch, first)[:-1]
        for name, values in zip(parts, score_chunk(logits, targets, base_logits), strict=True):
            if values is not None:
                parts[name].append(values)
        result.nll = np.concatenate(parts["nll"])
        if kl_base is not None:
            result.base_nll = np.concatenate(parts["base_nll"])
            result.kl = np.concatenate(parts["kl"])
            result.same_top = np.concatenate(parts["same_top"])
        result.chunks_done = chunk + 1
        result.seconds = time.perf_counter() - started
        if on_chunk is not None:
            on_chunk(result)
    return result
