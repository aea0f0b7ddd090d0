"""GPT-J: the forward pass over a KV cache, and text generation on top of it.

The graph is the computation Hugging Face's ``GPTJForCausalLM`` performs, in float32:

    x = wte[ids]                                       token embedding, no position embedding
    for every layer:
        h = LayerNorm(x)                               one norm feeds both branches
        x = Attention(h) + MLP(h) + x                  in parallel, then the residual
    logits = LayerNorm(x) @ lm_head.T + lm_head.bias

Attention rotates the first ``n_rot`` channels of each query and key head in adjacent pairs
(GPT-J's interleaved rotary embedding, not NeoX's two halves), stores keys and values in the
cache at their absolute positions, and attends causally over everything cached. The MLP is
``fc_out(gelu_tanh(fc_in(h)))``.

Shape notation: T new tokens, S = n_past + T positions in the cache, E = n_embd, H = n_head,
D = E / H, R = n_rot, F = MLP width, V = n_vocab.

The heavy operations go through a backend (``ggml_py.backend.Backend``); this module never
imports a concrete one. ``load(path)`` is the public entry point.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ggml_py.backend import Backend, create_backend
from ggml_py.errors import GgmlPyError, ModelFileError
from ggml_py.formats import ModelFile, open_model
from ggml_py.formats.gptj import FC_IN_WEIGHT, ROPE_BASE, mlp_width, tensor_shapes
from ggml_py.sampling import Sampler, SamplingSettings
from ggml_py.tokenizer import Tokenizer

# --- rotary position embedding -----------------------------------------------------------------


def rotary_tables(n_positions: int, n_rot: int):
    """cos and sin of ``p / 10000**(2i / R)`` for every position p and pair i: float32 ``[P, R/2]``.

    The angles are computed in float64 and rounded once.
    """
    inverse_frequency = ROPE_BASE ** (-np.arange(0, n_rot, 2, dtype=np.float64) / n_rot)  # [R/2]
    angles = np.arange(n_positions, dtype=np.float64)[:, None] * inverse_frequency  # [P, R/2]
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def rotate_pairs(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate channel pairs ``(2i, 2i+1)``, ``i < R/2``, of every head; later channels pass through.

    x ``[T, H, D]``; cos, sin ``[T, R/2]`` for the tokens' positions.

    >>> cos, sin = rotary_tables(2, 2)
    >>> rotate_pairs(np.array([[[1.0, 0.0, 5.0]]] * 2, np.float32), cos, sin).astype(float).round(4).tolist()
    [[[1.0, 0.0, 5.0]], [[0.5403, 0.8415, 5.0]]]
    """
    rot = 2 * cos.shape[-1]
    c, s = cos[:, None, :], sin[:, None, :]  # [T, 1, R/2]
    even, odd = x[..., 0:rot:2], x[..., 1:rot:2]  # [T, H, R/2] each
    out = x.copy()
    out[..., 0:rot:2] = even * c - odd * s
    out[..., 1:rot:2] = odd * c + even * s
    return out  # [T, H, D]


# --- the graph -------------------------------------------------------------------------------


class GptJ:
    """GPT-J weights prepared by a backend, a float32 KV cache, and the forward pass."""

    def __init__(self, model_file: ModelFile, backend: Backend):
        self.path = model_file.path
        self.hparams = hp = model_file.hparams
        self.layer_norm_eps = model_file.layer_norm_eps
        self.n_inner = _check_model(model_file)
        self.head_dim = hp.n_embd // hp.n_head
        self.backend = backend
        self.weights = backend.prepare(self.path, model_file.tensors)
        # keys and values of every position, position-major as in ggml: the positions used so far
        # are one contiguous prefix of each layer's cache, so only their pages become resident
        # (np.zeros maps pages lazily; NumPy asks for 2 MiB huge pages, and a head-major cache
        # would fault in every head's whole context at the first token: +1.9 GB for GPT-J-6B)
        self.cache_k = np.zeros((hp.n_layer, hp.n_ctx, hp.n_head, self.head_dim), np.float32)
        self.cache_v = np.zeros(
            self.cache_k.shape, np.float32
        )  # not zeros_like: it writes every page
        self.n_past = 0  # positions the cache holds
        self.cos, self.sin = rotary_tables(hp.n_ctx, hp.n_rot)  # [n_ctx, R/2]

    @property
    def n_ctx(self) -> int:
        return self.hparams.n_ctx

    @property
    def n_vocab(self) -> int:
        return self.hparams.n_vocab

    def eval(self, ids: Sequence[int], n_past: int, *, last_only: bool = False) -> np.ndarray:
        """Run ``ids`` at positions ``n_past, n_past + 1, ...`` and return their logits.

        The cache must already hold positions ``0 .. n_past - 1`` (``n_past <= self.n_past``);
        afterwards it holds ``n_past + len(ids)`` positions. Returns float32 ``[T, V]``, or only
        the last row ``[V]`` with ``last_only``.
        """
        ids = self._check_ids(ids, n_past)
        w, b = self.weights, self.backend
        x = b.embedding(w["transformer.wte.weight"], ids)  # [T, E]
        for layer in range(self.hparams.n_layer):
            x = self._block(layer, x, n_past)  # [T, E]
        self.n_past = n_past + len(ids)
        if last_only:
            x = x[-1:]  # [1, E]
        x = b.layer_norm(
            x, w["transformer.ln_f.weight"], w["transformer.ln_f.bias"], self.layer_norm_eps
        )
        logits = b.linear(x, w["lm_head.weight"], w["lm_head.bias"])  # [T, V]
        return logits[-1] if last_only else logits

    def _block(self, layer: int, x: np.ndarray, n_past: int) -> np.ndarray:
        p, w, b = f"transformer.h.{layer}.", self.weights, self.backend
        h = b.layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], self.layer_norm_eps)  # [T, E]
        out = self._attention(layer, h, n_past)  # [T, E]
        out += self._mlp(layer, h)
        out += x
        return out

    def _attention(self, layer: int, h: np.ndarray, n_past: int) -> np.ndarray:
        p, w, b = f"transformer.h.{layer}.attn.", self.weights, self.backend
        n_tokens, n_head, head_dim = h.shape[0], self.hparams.n_head, self.head_dim
        q = b.linear(h, w[p + "q_proj.weight"]).reshape(n_tokens, n_head, head_dim)  # [T, H, D]
        k = b.linear(h, w[p + "k_proj.weight"]).reshape(n_tokens, n_head, head_dim)  # [T, H, D]
        v = b.linear(h, w[p + "v_proj.weight"]).reshape(n_tokens, n_head, head_dim)  # [T, H, D]
        positions = slice(n_past, n_past + n_tokens)
        q = rotate_pairs(q, self.cos[positions], self.sin[positions])
        k = rotate_pairs(k, self.cos[positions], self.sin[positions])
        self.cache_k[layer, positions] = k  # [T, H, D]
        self.cache_v[layer, positions] = v
        n_seen = n_past + n_tokens
        o = b.attention(
            np.ascontiguousarray(q.transpose(1, 0, 2)),  # [H, T, D]
            self.cache_k[layer, :n_seen].transpose(1, 0, 2),  # [H, S, D] view
            self.cache_v[layer, :n_seen].transpose(1, 0, 2),
        )  # [H, S, D] view
        o = np.ascontiguousarray(o.transpose(1, 0, 2)).reshape(
            n_tokens, n_head * head_dim
        )  # [T, E]
        return b.linear(o, w[p + "out_proj.weight"])  # [T, E]

    def _mlp(self, layer: int, h: np.ndarray) -> np.ndarray:
        p, w, b = f"transformer.h.{layer}.mlp.", self.weights, self.backend
        hidden = b.gelu(b.linear(h, w[p + "fc_in.weight"], w[p + "fc_in.bias"]))  # [T, F]
        return b.linear(hidden, w[p + "fc_out.weight"], w[p + "fc_out.bias"])  # [T, E]

    def _check_ids(self, ids: Sequence[int], n_past: int) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise GgmlPyError(self.path, "no tokens to evaluate")
        if ids.min() < 0 or ids.max() >= self.n_vocab:
            bad = int(ids[(ids < 0) | (ids >= self.n_vocab)][0])
            raise GgmlPyError(
                self.path, f"token id {bad} is outside the vocabulary (0 .. {self.n_vocab - 1})"
            )
        if not 0 <= n_past <= self.n_past:
            raise GgmlPyError(
                self.path, f"n_past {n_past} is not in 0 .. {self.n_past} (positions cached)"
            )
        if n_past + ids.size > self.n_ctx:
            raise GgmlPyError(
                self.path,
                f"{n_past} cached + {ids.size} new tokens exceed the context "
                f"of {self.n_ctx} positions",
            )
        return ids

    def memory_per_token(self) -> int:
        """float32 bytes one token occupies while it is evaluated: its KV-cache entries in every
        layer, one layer's activations (x, h, q, k, v, attention output, MLP hidden and output)
        and its row of logits."""
        hp = self.hparams
        return 4 * (2 * hp.n_layer * hp.n_embd + 7 * hp.n_embd + self.n_inner + hp.n_vocab)


def _check_model(model_file: ModelFile) -> int:
    """Check the hyperparameters and that every tensor the graph reads is there with the right
    shape; return the MLP width F."""
    hp, path = model_file.hparams, model_file.path
    if hp.n_head < 1 or hp.n_embd % hp.n_head:
        raise ModelFileError(path, f"n_embd {hp.n_embd} is not a multiple of n_head {hp.n_head}")
    if hp.n_rot % 2 or not 0 <= hp.n_rot <= hp.n_embd // hp.n_head:
        raise ModelFileError(
            path,
            f"n_rot {hp.n_rot} must be even and at most the head size {hp.n_embd // hp.n_head}",
        )
    fc_in = model_file.tensors.get(FC_IN_WEIGHT)
    n_inner = mlp_width(hp.n_embd, None if fc_in is None else fc_in.shape)
    # A header may claim any number of layers (a million: ten million names to list). A file
    # of T tensors cannot complete more than T layers, so when it claims more, its first missing
    # tensor is among the first T + 1 layers' names: listing only those finds the same one.
    n_layer = min(hp.n_layer, len(model_file.tensors) + 1)
    expected = tensor_shapes(hp.n_vocab, hp.n_embd, n_layer, n_inner)
    for name, shape in expected.items():
        tensor = model_file.tensors.get(name)
        if tensor is None:
            raise ModelFileError(path, f"tensor {name} is missing")
        if tuple(tensor.shape) != shape:
            raise ModelFileError(
                path,
                f"tensor {name} has shape {tuple(tensor.shape)}, expected {shape}",
                getattr(tensor, "offset", None),
            )
    return n_inner


# --- generation ------------------------------------------------------------------------------


@dataclass
class Timings:
    """Seconds spent evaluating and sampling, filled in by :meth:`Model.generate_ids`."""

    predict: float = 0.0
    sample: float = 0.0


class Model(GptJ):
    """A loaded GPT-J: the graph plus its tokenizer, ready for ``eval`` and ``generate``."""

    def __init__(self, model_file: ModelFile, backend: Backend, tokenizer: Tokenizer):
        super().__init__(model_file, backend)
        self.tokenizer = tokenizer

    def reset(self) -> None:
        """Forget the cached positions; the next evaluation starts at position 0."""
        self.n_past = 0

    def generate_ids(
        self,
        prompt_ids: Sequence[int],
        max_tokens: int,
        sampler: Sampler,
        *,
        n_batch: int = 32,
        stop_at_eos: bool = True,
        timings: Timings | None = None,
    ) -> Iterator[int]:
        """Evaluate the prompt from position 0 in chunks of ``n_batch`` tokens, then yield up to
        ``max_tokens`` sampled ids (fewer at the end of text or when the context is full).

        The arguments are checked at once (``GgmlPyError``), before the first id is asked for.
        As in ggml, the last sampled token is not evaluated.
        """
        prompt_ids = list(prompt_ids)
        if not prompt_ids:
            raise GgmlPyError(self.path, "the prompt has no tokens")
        if len(prompt_ids) > self.n_ctx:
            raise GgmlPyError(
                self.path,
                f"the prompt has {len(prompt_ids)} tokens but the context holds {self.n_ctx}",
            )
        if n_batch < 1:
            raise GgmlPyError(None, f"batch size must be at least 1, got {n_batch}")
        max_tokens = min(max_tokens, self.n_ctx - len(prompt_ids))
        return self._sample_loop(
            prompt_ids,
            max_tokens,
            sampler,
            n_batch,
            stop_at_eos,
            timings if timings is not None else Timings(),
        )

    def _sample_loop(
        self,
        prompt_ids: list[int],
        max_tokens: int,
        sampler: Sampler,
        n_batch: int,
        stop_at_eos: bool,
        timings: Timings,
    ) -> Iterator[int]:
        self.reset()
        history = list(prompt_ids)
        pending = prompt_ids  # tokens not evaluated yet
        for _ in range(max_tokens):
            start = time.perf_counter()
            for chunk in range(0, len(pending), n_batch):
                logits = self.eval(pending[chunk : chunk + n_batch], self.n_past, last_only=True)
            timings.predict += time.perf_counter() - start
            start = time.perf_counter()
            token = sampler.sample(logits, history)
            timings.sample += time.perf_counter() - start
            history.append(token)
            yield token
            if stop_at_eos and token == self.tokenizer.eos_id:
                return
            pending = [token]

    def generate(
        self,
        prompt: str,
        max_tokens: int = 200,
        *,
        temperature: float = 0.9,
        top_k: int = 40,
        top_p: float = 0.9,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        seed: int | None = None,
        stop: Iterable[str] = (),
        n_batch: int = 32,
        ignore_eos: bool = False,
    ) -> Iterator[str]:
        """An iterator over the text that follows ``prompt``, piece by piece as tokens are sampled.

        Sampling is ggml's (``ggml_py.sampling``); ``seed=None`` draws a random seed. Generation
        starts from an empty cache and ends after ``max_tokens`` tokens, at end-of-text (whose
        text is not yielded; ``ignore_eos`` carries on past it), when the context is full, or
        before the first occurrence of any ``stop`` string, which is not yielded either. Invalid
        arguments raise ``GgmlPyError`` at once.
        """
        settings = SamplingSettings(top_k, top_p, temperature, repeat_last_n, repeat_penalty)
        settings.check()
        seed = int.from_bytes(os.urandom(4), "little") if seed is None else seed
        ids = self.generate_ids(
            self.tokenizer.encode(prompt),
            max_tokens,
            Sampler(settings, seed),
            n_batch=n_batch,
            stop_at_eos=not ignore_eos,
        )
        return self._text_until_stop(
            ids, [s for s in stop if s], None if ignore_eos else self.tokenizer.eos_id
        )

    def _text_until_stop(
        self, ids: Iterator[int], stops: list[str], end_of_text: int | None
    ) -> Iterator[str]:
        held = ""  # text not yielded yet
        for piece in _text_pieces(ids, self.tokenizer.stream_decoder(), end_of_text):
            held += piece
            cut = min((i for i in (held.find(s) for s in stops) if i >= 0), default=-1)
            if cut >= 0:
                if cut:
                    yield held[:cut]
                ids.close()
                return
            keep = _longest_stop_prefix(held, stops)  # could still become a stop string
            if len(held) > keep:
                yield held[: len(held) - keep]
                held = held[len(held) - keep :]
        if held:
            yield held


def _text_pieces(ids: Iterator[int], decoder, end_of_text: int | None) -> Iterator[str]:
    """The text each id completes, then what the decoder still holds; ``end_of_text`` ends the
    text without being shown."""
    for token in ids:
        if token == end_of_text:
            break
        yield decoder.feed(token)
    yield decoder.finish()


def _longest_stop_prefix(text: str, stops: list[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of some stop string.

    >>> _longest_stop_prefix("Hello wor", ["world", "xyz"])
    3
    """
    best = 0
    for stop in stops:
        for length in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:length]):
                best = length
                break
    return best


def load(
    path: str | os.PathLike[str], backend: str | None = None, n_threads: int | None = None
) -> Model:
    """Open a ggml/GGUF GPT-J file and prepare it on a backend.

    ``backend``: a registered backend name (``ggml-py backends`` lists them); default
    ``$GGML_PY_BACKEND``, else ``auto``. ``n_threads``: worker threads for backends that
    use them.
    """
    model_file = open_model(path)
    return Model(model_file, create_backend(backend, n_threads), Tokenizer.from_model(model_file))
