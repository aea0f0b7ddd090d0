"""GPT-J's schema: the hyperparameters a model file stores, the tensors and their shapes, and
the constants the architecture fixes.

The graph (``ggml_py.model``), the converters (``ggml_py.convert``), the file formats and the
conformance reference all take GPT-J's structure from here, so there is one rule for each of
these facts. Names are Hugging Face's, in ``state_dict()`` order (module registration order),
which is also the order ggml's converter writes:

>>> names = tensor_names(n_layer=28)
>>> len(names), names[3], names[-1]
(285, 'transformer.h.0.attn.k_proj.weight', 'lm_head.bias')
>>> tensor_shapes(n_vocab=50400, n_embd=4096, n_layer=28)["transformer.h.0.mlp.fc_in.weight"]
(16384, 4096)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from ggml_py.formats.quant import GGMLFileType

# The base of the rotary embedding's frequencies; GPT-J fixes it and the graph implements only it.
ROPE_BASE = 10000.0

# The MLP is 4 * n_embd wide: Hugging Face's value for n_inner = None, and what ggml's gpt-j
# loader assumes (the legacy file does not store the width).
MLP_WIDTH_FACTOR = 4

# Layer 0's fc_in weight: its rows are the MLP width of a model that has it.
FC_IN_WEIGHT = "transformer.h.0.mlp.fc_in.weight"


class GptjHparams(NamedTuple):
    """The hyperparameters of ggml's GPT-J header (and of GGUF's ``gptj.*`` keys)."""

    n_vocab: int
    n_ctx: int
    n_embd: int
    n_head: int
    n_layer: int
    n_rot: int  # channels of each head that the rotary embedding rotates
    ftype: GGMLFileType  # the base file type (a legacy header's value modulo 1000)


def tensor_names(n_layer: int) -> list[str]:
    """The tensors of a GPT-J model in ``state_dict()`` order (the keys of ``tensor_shapes``)."""
    return list(tensor_shapes(n_vocab=1, n_embd=1, n_layer=n_layer))


def mlp_width(n_embd: int, fc_in_weight_shape: Sequence[int] | None = None) -> int:
    """F, the MLP width: the rows of layer 0's fc_in weight when the model has that matrix (2-D),
    else ``4 * n_embd``.

    >>> mlp_width(64), mlp_width(64, (96, 64)), mlp_width(64, (96,))
    (256, 96, 256)
    """
    if fc_in_weight_shape is not None and len(fc_in_weight_shape) == 2:
        return int(fc_in_weight_shape[0])
    return MLP_WIDTH_FACTOR * n_embd


def tensor_shapes(
    n_vocab: int, n_embd: int, n_layer: int, n_inner: int | None = None
) -> dict[str, tuple[int, ...]]:
    """NumPy shape of every GPT-J tensor, in ``state_dict()`` order; the MLP is ``n_inner`` wide
    (default ``mlp_width(n_embd)``)."""
    E, F, V = n_embd, mlp_width(n_embd) if n_inner is None else n_inner, n_vocab
    by_suffix = {
        "ln_1.weight": (E,),
        "ln_1.bias": (E,),
        "attn.k_proj.weight": (E, E),
        "attn.v_proj.weight": (E, E),
        "attn.q_proj.weight": (E, E),
        "attn.out_proj.weight": (E, E),
        "mlp.fc_in.weight": (F, E),
        "mlp.fc_in.bias": (F,),
        "mlp.fc_out.weight": (E, F),
        "mlp.fc_out.bias": (E,),
    }
    shapes = {"transformer.wte.weight": (V, E)}
    for layer in range(n_layer):
        shapes.update({f"transformer.h.{layer}.{s}": shape for s, shape in by_suffix.items()})
    shapes.update(
        {
            "transformer.ln_f.weight": (E,),
            "transformer.ln_f.bias": (E,),
            "lm_head.weight": (V, E),
            "lm_head.bias": (V,),
        }
    )
    return shapes
