"""Read PyTorch, safetensors and Hugging Face checkpoints without torch and without running
pickle code. See ``spec/checkpoints.md`` for what is accepted and why.

>>> import ggml_py
>>> checkpoint = ggml_py.open_checkpoint("examples/tiny-gptj")
>>> checkpoint["transformer.h.0.attn.q_proj.weight"].shape
(64, 64)
"""

from __future__ import annotations

import os

import numpy as np

from ggml_py.checkpoint._files import read_path
from ggml_py.checkpoint._tensor import Checkpoint, LazyTensor

__all__ = ["Checkpoint", "LazyTensor", "load_state_dict", "open_checkpoint"]


def open_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Open a checkpoint file (torch zip or legacy ``.bin/.pt/.pth``, ``.safetensors``) or a
    Hugging Face folder (single file or shards listed by ``*.index.json``, safetensors preferred).

    Only the directory, the pickle or header is read; tensor data is read (memory-mapped) by
    ``LazyTensor.numpy()``. Raises ``CheckpointError`` for anything that cannot be read safely.
    """
    path = os.fspath(path)
    return Checkpoint(path, read_path(path))


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every tensor of ``open_checkpoint(path)`` as a NumPy array, in the file's order."""
    return {name: tensor.numpy() for name, tensor in open_checkpoint(path).items()}
