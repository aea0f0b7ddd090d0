"""The exceptions ggml-py raises for bad input.

Every error about a file names the file and says what is wrong in one line, so that the CLI can
print ``str(error)`` as it is. They are ``ValueError`` subclasses: a bad file is a bad value.
"""
from __future__ import annotations

import os


class GgmlPyError(ValueError):
    """Base class: a problem with the user's input, reported in one line."""

    def __init__(self, path: "str | os.PathLike[str] | None", reason: str, offset: "int | None" = None):
        self.path = None if path is None else os.fspath(path)
        self.reason = reason
        self.offset = offset
        where = "" if offset is None else f" (at byte {offset})"
        message = f"{reason}{where}" if self.path is None else f"{self.path}: {reason}{where}"
        super().__init__(message)


class CheckpointError(GgmlPyError):
    """A PyTorch, safetensors or Hugging Face checkpoint that cannot be read safely."""


class ModelFileError(GgmlPyError):
    """A ggml or GGUF model file that is malformed or not supported."""


class TokenizerError(GgmlPyError):
    """Tokenizer files that are missing or malformed."""


class BackendError(GgmlPyError):
    """A backend that cannot be found, loaded, or cannot hold the model."""
