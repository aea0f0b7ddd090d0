"""ggml-py: run Hugging Face GPT-J checkpoints on a CPU with NumPy, no PyTorch.

Public API (everything else is internal):

- ``open_checkpoint(path)`` / ``load_state_dict(path)``: read PyTorch, safetensors and Hugging
  Face checkpoints without torch and without executing pickle code;
- ``Tokenizer``: GPT-2/GPT-J byte-level BPE with ids identical to Hugging Face;
- ``load(path, backend=None, n_threads=None)``: a model ready for ``eval`` and ``generate``;
- the error types below.
"""
from ggml_py.errors import (
    BackendError,
    CheckpointError,
    GgmlPyError,
    ModelFileError,
    TokenizerError,
)

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "CheckpointError",
    "GgmlPyError",
    "ModelFileError",
    "TokenizerError",
]
