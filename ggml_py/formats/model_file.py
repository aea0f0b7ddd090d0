"""The records model files are read into and written from, shared by every format.

A reader returns a ``ModelFile`` whose ``tensors`` are ``TensorInfo`` records: read-only
``uint8`` views into a single ``np.memmap`` of the file, so opening a model costs no copies.
A writer takes ``OutputTensor`` records whose data arrives as chunks, so a tensor never has to
be in memory at once, and reports to a ``ProgressCallback``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

import numpy as np

from ggml_py.errors import ModelFileError
from ggml_py.formats.gptj import GptjHparams
from ggml_py.formats.quant import GGMLType, tensor_nbytes


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


def output_nbytes(tensor: OutputTensor, path: str) -> int:
    """The size of ``tensor``'s data; ``ModelFileError`` when its rows do not fit its type."""
    try:
        return tensor_nbytes(tensor.type, tuple(int(dim) for dim in tensor.shape))
    except ValueError as error:
        raise ModelFileError(path, f"tensor {tensor.name!r}: {error}") from None


def write_tensor_data(
    out: BinaryIO,
    tensor: OutputTensor,
    nbytes: int,
    *,
    path: str,
    progress: ProgressCallback | None,
    done: int,
    total: int,
) -> int:
    """Write ``tensor``'s chunks to ``out`` as they come and return ``done`` plus the bytes
    written; ``progress(name, done, total)`` follows every chunk. The chunks must add up to
    exactly ``nbytes``, else ``ModelFileError`` (raised before a byte past ``nbytes`` is written).
    """
    written = 0
    for chunk in tensor.chunks:
        view = memoryview(
            np.ascontiguousarray(chunk) if isinstance(chunk, np.ndarray) else chunk
        ).cast("B")
        written += view.nbytes
        if written > nbytes:
            break
        out.write(view)
        if progress is not None:
            progress(tensor.name, done + written, total)
    if written != nbytes:
        raise ModelFileError(
            path, f"tensor {tensor.name!r} got {written} bytes of data, expected {nbytes}"
        )
    return done + written
