"""Model files: one in-memory description for ggml's legacy GPT-J file (and GGUF).

``open_model(path)`` looks at the first four bytes and hands the file to the reader registered
for that magic in ``_READERS``. Every reader returns a ``ModelFile`` whose tensors are read-only
``uint8`` views into a single ``np.memmap`` of the file, so opening a model costs no copies; the
bytes are decoded with ``ggml_py.formats.quant.dequantize``.

"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from ggml_py.errors import ModelFileError
from ggml_py.formats.quant import GGMLFileType, GGMLType


class GptjHparams(NamedTuple):
    n_vocab: int
    n_ctx: int
    n_embd: int
    n_head: int
    n_layer: int
    n_rot: int
    ftype: GGMLFileType  # the base file type (a legacy header's value modulo 1000)


class TensorInfo(NamedTuple):
    name: str  # Hugging Face name, e.g. "transformer.h.0.attn.q_proj.weight"
    type: GGMLType
    shape: tuple[int, ...]  # NumPy order: ggml's ne reversed
    offset: int  # absolute file offset of the data
    nbytes: int
    data: np.ndarray  # read-only uint8 view of the data in the file's memmap


@dataclass(frozen=True)
class ModelFile:
    path: str
    format: str  # "ggml" (legacy GPT-J file) or "gguf"
    hparams: GptjHparams
    layer_norm_eps: float
    vocab: list[bytes]  # token id -> raw bytes
    merges: list[tuple[bytes, bytes]] | None  # None when the file carries no merges
    tensors: dict[str, TensorInfo]  # in file order
    quantization_version: int  # 0 for unquantized legacy files, 2 for ggml's quantizers


# First four bytes of a file -> the function that reads that format.
_READERS: dict[bytes, Callable[[str], ModelFile]] = {}


def open_model(path: str | os.PathLike[str]) -> ModelFile:
    """Read a model file's metadata and map its tensors; raises ``ModelFileError`` for a file that
    is not a supported model or is malformed (the message names the file and byte offset)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    reader = _READERS.get(magic)
    if reader is None:
        if len(magic) < 4:
            raise ModelFileError(
                path, f"file of {len(magic)} bytes is too short for a model file", 0
            )
        raise ModelFileError(
            path, f"not a ggml GPT-J model file or a GGUF file (magic bytes {magic.hex()})", 0
        )
    return reader(path)


# Readers import the types above, so they are registered after those are defined.
from ggml_py.formats import ggml as _ggml  # noqa: E402
from ggml_py.formats import gguf as _gguf  # noqa: E402

_READERS[_ggml.MAGIC_BYTES] = _ggml.read_ggml
_READERS[_gguf.GGUF_MAGIC] = _gguf.read_gguf
