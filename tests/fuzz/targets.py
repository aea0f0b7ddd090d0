"""Fuzz targets: each reader of untrusted input, driven the way a user drives it.

A target returns normally when the component accepted its input or refused it with the
project's own error (a ``GgmlPyError`` subclass whose message is one line naming the file). Any
other outcome is a crash and raises out of the target:

- another exception type escapes from the component;
- the component runs longer than ``TIME_LIMIT`` seconds (``Hang``, raised by a timer signal);
- the traced allocation peak (``tracemalloc``, which sees Python objects and NumPy buffers but
  not memory maps of the file) exceeds ``2 * input size + MEMORY_ALLOWANCE`` (``AssertionError``).

The same targets run under hypothesis in ``tests/test_robustness_fuzz.py`` and under atheris in
``scripts/fuzz.py``; ``tests/fixtures/crashers/`` replays every input that once crashed one.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path

# ggml_py imports ml_dtypes only when a checkpoint holds bf16/float8 tensors; imported here so
# that its one-time import is not counted as the first such reader's allocations.
import ml_dtypes  # noqa: F401
import numpy as np

import ggml_py
from ggml_py.checkpoint import _torch
from ggml_py.checkpoint._tensor import MappedStorage
from ggml_py.checkpoint._unpickler import TypedStorage, unpickle
from ggml_py.errors import GgmlPyError
from ggml_py.formats import open_model
from ggml_py.formats.quant import dequantize
from ggml_py.tokenizer import Tokenizer

TIME_LIMIT = 5.0
MEMORY_ALLOWANCE = 1 << 20  # interpreter noise and fixed-size tables, whatever the input
TOKENIZER_FILES = (
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
)
# Encoded by every tokenizer a target builds: words, digits, an added token, non-ASCII, controls.
SAMPLE_TEXT = "Hello, wörld's 3.14 <|endoftext|> ☃  \n\t<|added_a|>x"

_unique = itertools.count()

# The most recent input given to a file target (bytes, or file name -> bytes for a tokenizer
# folder), so that a fuzz driver can keep the one that crashed.
last_input: bytes | dict[str, bytes] | None = None


class Hang(BaseException):
    """A target ran past its time limit. A BaseException, so that no ``except Exception`` in the
    code under test can swallow it."""


@contextlib.contextmanager
def bounded(input_size: int, seconds: float = TIME_LIMIT) -> Iterator[None]:
    """Run the block with a time limit and check its allocation peak against the input size."""
    tracing_here = not tracemalloc.is_tracing()
    if tracing_here:
        tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    timer = hasattr(signal, "setitimer")
    if timer:

        def on_alarm(signum, frame):
            raise Hang(f"no result after {seconds} s")

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        if timer:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        peak = tracemalloc.get_traced_memory()[1] - baseline
        if tracing_here:
            tracemalloc.stop()
    limit = 2 * input_size + MEMORY_ALLOWANCE
    assert peak <= limit, f"allocated {peak} bytes for {input_size} bytes of input (limit {limit})"


def check_refusal(
    error: GgmlPyError, where: os.PathLike[str] | str | None, size: int | None = None
) -> None:
    """A refusal must be one line and, for file input, name the file (or a file in the folder)
    and give an offset, if any, within the input's ``size`` bytes."""
    message = str(error)
    assert "\n" not in message, message
    if where is not None:
        assert message.startswith(os.fspath(where)), message
    if size is not None and error.offset is not None:
        assert 0 <= error.offset <= size, message


def _input_file(workdir: Path, data: bytes, suffix: str) -> Path:
    global last_input
    last_input = data
    # A fresh name per input: a model read earlier may still map the previous file.
    path = workdir / f"input-{next(_unique)}{suffix}"
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------------- model files


def model_file(data: bytes, workdir: Path, suffix: str = ".bin") -> None:
    """``open_model`` (ggml or GGUF by the magic) and the tokenizer of the file; then every
    tensor is decoded, which must work for any file the reader accepted."""
    path = _input_file(workdir, data, suffix)
    try:
        with bounded(len(data)):
            try:
                model = open_model(path)
                tokenizer = Tokenizer.from_model(model)
                tokenizer.decode(tokenizer.encode(SAMPLE_TEXT))
            except GgmlPyError as error:
                check_refusal(error, path, len(data))
                return
        for info in model.tensors.values():
            assert info.offset + info.nbytes <= len(data) and info.data.nbytes == info.nbytes, (
                info.name
            )
            assert dequantize(info.data, info.type, info.shape).shape == info.shape
    finally:
        path.unlink()


# --------------------------------------------------------------------------------- checkpoints


def checkpoint_file(data: bytes, workdir: Path, suffix: str = ".bin") -> None:
    """``open_checkpoint`` on a file, then every tensor's data, read to the last byte."""
    path = _input_file(workdir, data, suffix)
    try:
        with bounded(len(data)):
            try:
                for tensor in ggml_py.open_checkpoint(path).values():
                    array = tensor.numpy()
                    assert array.shape == tensor.shape and array.dtype == tensor.dtype, tensor.name
                    int(array.reshape(-1).view(np.uint8).sum(dtype=np.uint64))
                    del array
            except GgmlPyError as error:
                check_refusal(error, path, len(data))
    finally:
        path.unlink()


def pickle_stream(data: bytes) -> None:
    """The pickle machine alone (no zip around it), with storages resolved like a zip archive's
    but never read, then the tensor layouts checked as ``open_checkpoint`` checks them."""
    global last_input
    last_input = data
    path = "fuzz/data.pkl"

    def persistent_load(pid: object) -> TypedStorage:
        storage_type, _key, numel, _ = _torch._storage_id(pid, 5)
        storage = MappedStorage(path, 0, numel * storage_type.dtype.itemsize, len(data))
        return TypedStorage(storage, storage_type.dtype)

    with bounded(len(data)):
        try:
            root, end = unpickle(data, 0, path, "data.pkl", persistent_load)
            assert end <= len(data)
            _torch.collect_tensors(path, root)
        except GgmlPyError as error:
            check_refusal(error, path, len(data))


# ----------------------------------------------------------------------------------- tokenizer


def tokenizer_folder(files: dict[str, bytes], workdir: Path) -> None:
    """``Tokenizer.from_pretrained`` on a folder of these files, then encoding and decoding."""
    global last_input
    last_input = dict(files)
    folder = workdir / f"tokenizer-{next(_unique)}"
    folder.mkdir()
    try:
        for name, content in files.items():
            (folder / name).write_bytes(content)
        with bounded(sum(map(len, files.values()))):
            try:
                tokenizer = Tokenizer.from_pretrained(folder)
            except GgmlPyError as error:
                check_refusal(error, folder)
                return
            encode_text(tokenizer, SAMPLE_TEXT, round_trip=False)
    finally:
        shutil.rmtree(folder)


def encode_text(tokenizer: Tokenizer, text: str, round_trip: bool = True) -> None:
    """``encode``: ids within the vocabulary, decoding back to the text when ``round_trip``
    (true for byte-level tokenizers whose added tokens are spelled as themselves).

    The tokenizer's pre-token cache is emptied first: it outlives the call and is bounded by its
    entry count (a few MB), so its growth, such as a table resize, is not this text's.
    """
    tokenizer._cache.clear()
    with bounded(4 * len(text)):
        try:
            ids = tokenizer.encode(text)
        except GgmlPyError as error:
            check_refusal(error, None)
            assert any(0xD800 <= ord(char) <= 0xDFFF for char in text), error
            return
    assert all(0 <= token_id < tokenizer.vocab_size for token_id in ids)
    decoded = tokenizer.decode(ids)
    if round_trip:
        assert decoded == text


def decode_ids(tokenizer: Tokenizer, ids: Sequence[int]) -> None:
    """``decode`` and the stream decoder, which must agree; unknown ids are refused."""
    with bounded(64 * len(ids)):
        try:
            text = tokenizer.decode(ids)
        except GgmlPyError as error:
            check_refusal(error, None)
            assert any(not 0 <= token_id < tokenizer.vocab_size for token_id in ids)
            return
        stream = tokenizer.stream_decoder()
        assert "".join(map(stream.feed, ids)) + stream.finish() == text
