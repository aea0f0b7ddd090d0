"""float64 references and test inputs for the conformance suite.

The references are written straight from the math (``spec/backend.md``, Hugging Face's GPT-J) in
float64, independently of ``ggml_py.model`` and of any backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ggml_py.formats.gptj import ROPE_BASE, GptjHparams, tensor_shapes
from ggml_py.formats.model_file import ModelFile, TensorInfo
from ggml_py.formats.quant import GGMLFileType, GGMLType, dequantize, quantize


def tensor_info(
    name: str, values: np.ndarray, ggml_type: GGMLType, misalign: int = 0
) -> TensorInfo:
    """Encode ``values`` as ``ggml_type`` into a read-only byte view starting ``misalign`` bytes
    into its buffer, as tensors in a legacy ggml file usually are (it has no alignment)."""
    raw = quantize(np.asarray(values, dtype=np.float32), ggml_type).reshape(-1)
    buffer = np.zeros(raw.size + misalign, dtype=np.uint8)
    buffer[misalign:] = raw
    data = buffer[misalign:]
    data.flags.writeable = False
    return TensorInfo(name, GGMLType(ggml_type), tuple(values.shape), 0, raw.size, data)


def decoded(tensor: TensorInfo) -> np.ndarray:
    """The exact values a tensor holds, in float64."""
    return dequantize(tensor.data, tensor.type, tensor.shape).astype(np.float64)


def linear(x: np.ndarray, w: np.ndarray, b=None) -> np.ndarray:
    y = x.astype(np.float64) @ w.astype(np.float64).T
    return y if b is None else y + b


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    x = x.astype(np.float64)
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + eps) * w + b


def gelu(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Causal attention per head; q ``[H, T, D]``, k/v ``[H, S, D]``, query i at position S-T+i."""
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    n_query, n_key = q.shape[1], k.shape[1]
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[2])
    visible = np.arange(n_key)[None, :] <= np.arange(n_query)[:, None] + (n_key - n_query)
    scores = np.where(visible, scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    return (weights / weights.sum(-1, keepdims=True)) @ v


def gptj_logits(
    weights: dict[str, np.ndarray], hparams: GptjHparams, ids: Sequence[int], eps: float = 1e-5
) -> np.ndarray:
    """Hugging Face's GPT-J forward pass in float64 over a whole sequence: logits ``[T, V]``."""
    E, H, R = hparams.n_embd, hparams.n_head, hparams.n_rot
    D, T = E // H, len(ids)
    positions = np.arange(T, dtype=np.float64)
    angles = positions[:, None] / ROPE_BASE ** (np.arange(0, R, 2) / R)  # [T, R/2]
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]  # [T, 1, R/2]

    def rotate(x):  # [T, H, D]
        out = x.copy()
        even, odd = x[..., 0:R:2], x[..., 1:R:2]
        out[..., 0:R:2] = even * cos - odd * sin
        out[..., 1:R:2] = odd * cos + even * sin
        return out

    x = weights["transformer.wte.weight"][list(ids)]
    for layer in range(hparams.n_layer):
        p = f"transformer.h.{layer}."
        h = layer_norm(x, weights[p + "ln_1.weight"], weights[p + "ln_1.bias"], eps)
        q = rotate((h @ weights[p + "attn.q_proj.weight"].T).reshape(T, H, D))
        k = rotate((h @ weights[p + "attn.k_proj.weight"].T).reshape(T, H, D))
        v = (h @ weights[p + "attn.v_proj.weight"].T).reshape(T, H, D)
        o = attention(q.transpose(1, 0, 2), k.transpose(1, 0, 2), v.transpose(1, 0, 2))
        attn = o.transpose(1, 0, 2).reshape(T, E) @ weights[p + "attn.out_proj.weight"].T
        hidden = gelu(h @ weights[p + "mlp.fc_in.weight"].T + weights[p + "mlp.fc_in.bias"])
        mlp = hidden @ weights[p + "mlp.fc_out.weight"].T + weights[p + "mlp.fc_out.bias"]
        x = attn + mlp + x
    y = layer_norm(x, weights["transformer.ln_f.weight"], weights["transformer.ln_f.bias"], eps)
    return y @ weights["lm_head.weight"].T + weights["lm_head.bias"]


def random_gptj(
    weight_type: GGMLType,
    *,
    n_vocab: int = 96,
    n_ctx: int = 12,
    n_embd: int = 64,
    n_head: int = 4,
    n_layer: int = 2,
    n_rot: int = 8,
    seed: int = 0,
) -> ModelFile:
    """A small GPT-J with random weights, 2-D weights stored as ``weight_type`` (vectors in f32),
    every tensor misaligned by a different number of bytes."""
    rng = np.random.default_rng(seed)
    shapes = tensor_shapes(n_vocab, n_embd, n_layer)
    # Drawn with each layer's q_proj before k_proj and v_proj (the graph's order, not the file's),
    # which keeps the model a seed has always given.
    names = list(shapes)
    for layer in range(n_layer):
        q_proj = names.pop(names.index(f"transformer.h.{layer}.attn.q_proj.weight"))
        names.insert(names.index(f"transformer.h.{layer}.attn.k_proj.weight"), q_proj)
    tensors = {}
    for index, name in enumerate(names):
        shape = shapes[name]
        if name.endswith("ln_1.weight") or name.endswith("ln_f.weight"):
            values = 1.0 + 0.1 * rng.standard_normal(shape)
        elif len(shape) == 1:
            values = 0.1 * rng.standard_normal(shape)
        else:
            values = rng.standard_normal(shape) / np.sqrt(shape[1])
        ggml_type = weight_type if len(shape) == 2 else GGMLType.F32
        tensors[name] = tensor_info(name, values, ggml_type, misalign=index % 4)
    file_type = next(t for t in GGMLFileType if t.weight_type == weight_type)
    hparams = GptjHparams(n_vocab, n_ctx, n_embd, n_head, n_layer, n_rot, file_type)
    vocab = [bytes([i]) if i < 256 else b"<|token_%d|>" % i for i in range(n_vocab)]
    return ModelFile(
        path=f"<random gpt-j {weight_type.short_name}>",
        format="ggml",
        hparams=hparams,
        layer_norm_eps=1e-5,
        vocab=vocab,
        merges=None,
        tensors=tensors,
        quantization_version=0,
    )
