"""ggml-py: run Hugging Face GPT-J checkpoints on a CPU with NumPy, no PyTorch.

The public API is the names below (``__all__``), here and in the module each comes from; the
rest (modules and names not listed, anything starting with ``_``) is internal.

Running a model:
    ``load(path, backend=None, n_threads=None) -> Model`` (``ggml_py.model``): a GPT-J ready for
    ``eval`` and ``generate``; ``Tokenizer`` (``ggml_py.tokenizer``): byte-level BPE with ids
    identical to Hugging Face's.
Measuring (``ggml_py.perplexity``):
    ``compute_perplexity(model, ids, n_ctx=None, n_batch=512, kl_base=None) ->
    PerplexityResult``: perplexity and KL divergence from a base model as llama.cpp's
    llama-perplexity measures them.
Reading checkpoints (``ggml_py.checkpoint``):
    ``open_checkpoint(path)``, ``load_state_dict(path)``: PyTorch, safetensors and Hugging Face
    checkpoints, read without torch and without executing pickle code.
Converting (``ggml_py.convert``):
    ``convert_hf``, ``convert_to_gguf``, ``quantize_file``, ``ConversionWarning``; the types
    they take are ``GGMLFileType`` and ``GGMLType`` (``ggml_py.formats.quant``).
Model files (``ggml_py.formats``):
    ``open_model(path) -> ModelFile`` with ``TensorInfo`` tensors and ``GptjHparams``.
Writing an inference backend (``spec/backend.md``):
    ``Backend``, ``WeightTensor``, ``Float32Ops``, ``default_thread_count``,
    ``set_blas_threads`` (``ggml_py.backend``), ``dequantize`` (``ggml_py.formats.quant``), and
    the conformance suite ``pytest --pyargs ggml_py.conformance``.
Errors (``ggml_py.errors``):
    ``GgmlPyError`` (a ``ValueError`` naming the file) and its subclasses ``CheckpointError``,
    ``ModelFileError``, ``TokenizerError``, ``BackendError``. Bad arguments to the converters
    (an unknown file type or format) raise a plain ``ValueError``.

Only the error types are imported with the package; every other name is imported on first use,
so ``import ggml_py`` and the command line's start take milliseconds, not the better part of a
second (``benchmarks/startup_time.py``).
"""

import importlib

from ggml_py.errors import (
    BackendError,
    CheckpointError,
    GgmlPyError,
    ModelFileError,
    TokenizerError,
)

__version__ = "0.1.0"

# Public names imported on first use: name -> the module that defines it.
_LAZY = {
    "load": "ggml_py.model",
    "Tokenizer": "ggml_py.tokenizer",
    "open_checkpoint": "ggml_py.checkpoint",
    "load_state_dict": "ggml_py.checkpoint",
    "Model": "ggml_py.model",
    "compute_perplexity": "ggml_py.perplexity",
    "PerplexityResult": "ggml_py.perplexity",
    "convert_hf": "ggml_py.convert",
    "convert_to_gguf": "ggml_py.convert",
    "quantize_file": "ggml_py.convert",
    "ConversionWarning": "ggml_py.convert",
    "GGMLFileType": "ggml_py.formats.quant",
    "GGMLType": "ggml_py.formats.quant",
    "dequantize": "ggml_py.formats.quant",
    "open_model": "ggml_py.formats",
    "ModelFile": "ggml_py.formats",
    "TensorInfo": "ggml_py.formats",
    "GptjHparams": "ggml_py.formats",
    "Backend": "ggml_py.backend",
    "WeightTensor": "ggml_py.backend",
    "Float32Ops": "ggml_py.backend",
    "default_thread_count": "ggml_py.backend",
    "set_blas_threads": "ggml_py.backend",
}

__all__ = [
    "BackendError",
    "CheckpointError",
    "GgmlPyError",
    "ModelFileError",
    "Tokenizer",
    "TokenizerError",
    *_LAZY,
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ggml_py' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
