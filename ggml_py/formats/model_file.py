"""The records model files are read into and written from, shared by every format.

A reader returns a ``ModelFile`` whose ``tensors`` are ``TensorInfo`` records: read-only
``uint8`` views into a single ``np.memmap`` of the file, so opening a model costs no copies.
A writer takes ``OutputTensor`` records whose data arrives as chunks, so a tensor never has to
be in memory at once, and reports to a ``ProgressCallback``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from ggml_py.formats.gptj import GptjHparams
from ggml_py.formats.quant import GGMLType


class TensorInfo(NamedTuple):
    """One tensor of an opened model file."""

    name: str  # Hugging Face name, e.g. "transformer.h.0.attn.q_proj.weight"
    type: GGMLType
    shape: tuple[int, ...]  # NumPy order: ggml's ne reversed
    offset: int  # absolute file offset of the data
    nbytes: int
    data: np.ndarray  # read-only uint8 view of the data in the file's memmap


@dataclass(frozen=True)
class ModelFile:
    """An opened ggml or GGUF GPT-J file: ``ggml_py.formats.open_model`` returns one."""

    path: str
    format: str  # "ggml" (legacy GPT-J file) or "gguf"
    hparams: GptjHparams
    layer_norm_eps: float
    vocab: list[bytes]  # token id -> raw bytes
    merges: list[tuple[bytes, bytes]] | None  # None when the file carries no merges
    tensors: dict[str, TensorInfo]  # in file order
    quantization_version: int  # 0 for unquantized legacy files, 2 for ggml's quantizers


class OutputTensor(NamedTuple):
    """One tensor to write: its data arrives as ``chunks`` (bytes-like, C order, in sequence)."""

    name: str
    type: GGMLType
    shape: Sequence[int]  # NumPy order
    chunks: Iterable


# progress(tensor name, bytes written so far, total bytes of tensor data in the file)
ProgressCallback = Callable[[str, int, int], None]
