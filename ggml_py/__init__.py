"""ggml-py: run Hugging Face GPT-J checkpoints on a CPU with NumPy, no PyTorch.

Public API (everything else is internal):

- ``open_checkpoint(path)`` / ``load_state_dict(path)``: read PyTorch, safetensors and Hugging
  Face checkpoints without torch and without executing pickle code;
- ``Tokenizer``: GPT-2/GPT-J byte-level BPE with ids identical to Hugging Face;
- ``load(path, backend=None, n_threads=None)``: a model ready for ``eval`` and ``generate``;
- the error types below.
"""

from ggml_py.checkpoint import load_state_dict, open_checkpoint
from ggml_py.errors import (
    BackendError,
    CheckpointError,
    GgmlPyError,
    ModelFileError,
    TokenizerError,
)
from ggml_py.model import load
from ggml_py.tokenizer import Tokenizer

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "CheckpointError",
    "GgmlPyError",
    "ModelFileError",
    "Tokenizer",
    "TokenizerError",
    "load",
    "load_state_dict",
    "open_checkpoint",
]
