"""The exceptions ggml-py raises for bad input.

Every error about a file names the file and says what is wrong in one line, so that the CLI can
print ``str(error)`` as it is. They are ``ValueError`` subclasses: a bad file is a bad value.

Reasons quote names read from files (tensor names, storage keys, zip entries) and paths can hold
any character, so the message escapes control characters and line separators: a file cannot
break the message into several lines or send escape sequences to a terminal.

>>> print(GgmlPyError("a.bin", "storage 'x\\ny' is missing", 7))
a.bin: storage 'x\\ny' is missing (at byte 7)
"""

from __future__ import annotations

import os
import re

# C0 and C1 controls, DEL, and the line separators str.splitlines honours
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _one_line(text: str) -> str:
    return _UNPRINTABLE.sub(lambda match: repr(match.group())[1:-1], text)


class GgmlPyError(ValueError):
    """Base class: a problem with the user's input, reported in one line."""

    def __init__(self, path: str | os.PathLike[str] | None, reason: str, offset: int | None = None):
        self.path = None if path is None else os.fspath(path)
        self.reason = reason
        self.offset = offset
        where = "" if offset is None else f" (at byte {offset})"
        message = f"{reason}{where}" if self.path is None else f"{self.path}: {reason}{where}"
        super().__init__(_one_line(message))


class CheckpointError(GgmlPyError):
    """A PyTorch, safetensors or Hugging Face checkpoint that cannot be read safely."""


class ModelFileError(GgmlPyError):
    """A ggml or GGUF model file that is malformed or not supported."""


class TokenizerError(GgmlPyError):
    """Tokenizer files that are missing or malformed."""


class BackendError(GgmlPyError):
    """A backend that cannot be found, loaded, or cannot hold the model."""
