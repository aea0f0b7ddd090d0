"""Model files: ggml's legacy GPT-J file and GPT-J in GGUF, opened as one ``ModelFile``.

``open_model(path)`` looks at the first four bytes and hands the file to the reader for that
magic (``formats/ggml.py``, ``formats/gptj_gguf.py`` over the GGUF container ``formats/gguf.py``).
Every reader returns a ``ModelFile`` (``formats/model_file.py``) whose tensors are read-only
``uint8`` views into a single ``np.memmap`` of the file, so opening a model costs no copies; the
bytes are decoded with ``ggml_py.formats.quant.dequantize``. GPT-J's hyperparameters, tensor
names and shapes are in ``formats/gptj.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ggml_py.errors import ModelFileError
from ggml_py.formats.ggml import GGML_MAGIC, read_ggml
from ggml_py.formats.gguf import GGUF_MAGIC
from ggml_py.formats.gptj import GptjHparams
from ggml_py.formats.gptj_gguf import read_gptj_gguf
from ggml_py.formats.model_file import ModelFile, OutputTensor, ProgressCallback, TensorInfo

__all__ = [
    "GptjHparams",
    "ModelFile",
    "OutputTensor",
    "ProgressCallback",
    "TensorInfo",
    "open_model",
]

# First four bytes of a file -> the function that reads that format.
_READERS: dict[bytes, Callable[[str], ModelFile]] = {
    GGML_MAGIC: read_ggml,
    GGUF_MAGIC: read_gptj_gguf,
}


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
