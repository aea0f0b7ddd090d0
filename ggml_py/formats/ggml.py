"""ggml's legacy GPT-J model file (the format of ``examples/gpt-j``): reader and writer.

Layout (``spec/ggml-gptj.md``): a 32-byte header of little-endian int32 (magic, n_vocab, n_ctx,
n_embd, n_head, n_layer, n_rot, ftype), the vocabulary (count, then length + bytes per token),
then tensor records (n_dims, name length, type, ne[0..n_dims-1], name, data) up to the end of
the file, with no padding anywhere.

The reader maps the file once and checks every count, length and size against the file length
before it makes a view. The writer streams: each record's data arrives as chunks, so a tensor
never has to be in memory at once.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence

import numpy as np

from ggml_py._atomic import atomic_output
from ggml_py.errors import ModelFileError
from ggml_py.formats.gptj import GptjHparams
from ggml_py.formats.model_file import (
    ModelFile,
    OutputTensor,
    ProgressCallback,
    TensorInfo,
    output_nbytes,
    write_tensor_data,
)
from ggml_py.formats.quant import (
    GGML_MAX_DIMS,
    QNT_VERSION_FACTOR,
    GGMLFileType,
    GGMLType,
    tensor_nbytes,
)

MAGIC = 0x67676D6C  # "ggml" as a little-endian u32
GGML_MAGIC = struct.pack("<I", MAGIC)  # b"lmgg" on disk
LAYER_NORM_EPS = 1e-5  # not stored in the file; ggml's gpt-j hard-codes it

_HEADER = struct.Struct("<I7i")
_INT32 = struct.Struct("<i")
_UINT32 = struct.Struct("<I")
_RECORD_START = struct.Struct("<3i")  # n_dims, name_len, ttype
_HPARAM_NAMES = ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer", "n_rot")


def read_ggml(path: str | os.PathLike[str]) -> ModelFile:
    """Parse a legacy ggml GPT-J file; see ``ggml_py.formats.open_model``."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    if size < _HEADER.size:
        raise ModelFileError(path, f"header needs {_HEADER.size} bytes, the file has {size}", 0)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    buffer = memoryview(data)
    hparams, quantization_version = _parse_header(path, buffer)
    vocab, offset = _parse_vocab(path, buffer, hparams.n_vocab)
    tensors = _parse_tensors(path, data, offset)
    return ModelFile(
        path=path,
        format="ggml",
        hparams=hparams,
        layer_norm_eps=LAYER_NORM_EPS,
        vocab=vocab,
        merges=None,
        tensors=tensors,
        quantization_version=quantization_version,
    )


def _parse_header(path: str, buffer: memoryview):
    magic, *values, raw_ftype = _HEADER.unpack_from(buffer, 0)
    if magic != MAGIC:
        raise ModelFileError(path, f"bad magic 0x{magic:08x}, expected 0x{MAGIC:08x}", 0)
    for index, (name, value) in enumerate(zip(_HPARAM_NAMES, values, strict=True)):
        smallest = 0 if name == "n_rot" else 1
        if value < smallest:
            raise ModelFileError(path, f"{name} = {value} in the header", 4 + 4 * index)
    if raw_ftype < 0:
        raise ModelFileError(path, f"ftype = {raw_ftype} in the header", 28)
    quantization_version, base_ftype = divmod(raw_ftype, QNT_VERSION_FACTOR)
    try:
        ftype = GGMLFileType(base_ftype)
    except ValueError:
        raise ModelFileError(
            path, f"unsupported ftype {raw_ftype} (base {base_ftype})", 28
        ) from None
    return GptjHparams(*values, ftype), quantization_version


def _parse_vocab(path: str, buffer: memoryview, n_vocab: int):
    size = len(buffer)
    offset = _HEADER.size
    count = _read_int(path, buffer, offset, "vocabulary count")
    if count != n_vocab:
        raise ModelFileError(
            path, f"vocabulary has {count} tokens, the header says n_vocab = {n_vocab}", offset
        )
    offset += 4
    if offset + 4 * count > size:  # every token needs at least its length field
        raise ModelFileError(path, f"file ends inside the vocabulary of {count} tokens", size)
    vocab: list[bytes] = []
    for token_id in range(count):
        if offset + 4 > size:
            raise ModelFileError(path, f"file ends before the length of token {token_id}", offset)
        (length,) = _UINT32.unpack_from(buffer, offset)
        start = offset + 4
        if start + length > size:
            raise ModelFileError(
                path, f"token {token_id} of {length} bytes runs past the end of the file", offset
            )
        vocab.append(bytes(buffer[start : start + length]))
        offset = start + length
    return vocab, offset


def _parse_tensors(path: str, data: np.memmap, offset: int) -> dict[str, TensorInfo]:
    buffer = memoryview(data)
    size = len(buffer)
    tensors: dict[str, TensorInfo] = {}
    while offset < size:
        record_offset = offset
        if offset + _RECORD_START.size > size:
            raise ModelFileError(path, "file ends inside a tensor record header", offset)
        n_dims, name_len, raw_type = _RECORD_START.unpack_from(buffer, offset)
        # GGML_MAX_DIMS, although ggml's gpt-j loader itself only handles 1 and 2
        if not 1 <= n_dims <= GGML_MAX_DIMS:
            raise ModelFileError(path, f"tensor record with n_dims = {n_dims}", offset)
        if name_len < 1:
            raise ModelFileError(path, f"tensor record with name length {name_len}", offset + 4)
        try:
            ggml_type = GGMLType(raw_type)
        except ValueError:
            raise ModelFileError(path, f"unsupported tensor type {raw_type}", offset + 8) from None
        offset += _RECORD_START.size
        if offset + 4 * n_dims + name_len > size:
            raise ModelFileError(path, "file ends inside a tensor record header", record_offset)
        ne = struct.unpack_from(f"<{n_dims}i", buffer, offset)
        if min(ne) < 1:
            raise ModelFileError(path, f"tensor record with dimensions {list(ne)}", offset)
        offset += 4 * n_dims
        try:
            name = bytes(buffer[offset : offset + name_len]).decode("utf-8")
        except UnicodeDecodeError:
            raise ModelFileError(path, "tensor name is not UTF-8", offset) from None
        offset += name_len
        shape = tuple(reversed(ne))
        try:
            nbytes = tensor_nbytes(ggml_type, shape)
        except ValueError as error:
            raise ModelFileError(path, f"tensor {name!r}: {error}", record_offset) from None
        if offset + nbytes > size:
            raise ModelFileError(
                path,
                f"tensor {name!r} needs {nbytes} bytes of data, {size - offset} are left",
                offset,
            )
        if name in tensors:
            raise ModelFileError(path, f"tensor {name!r} appears twice", record_offset)
        tensors[name] = TensorInfo(
            name, ggml_type, shape, offset, nbytes, data[offset : offset + nbytes]
        )
        offset += nbytes
    return tensors


def _read_int(path: str, buffer: memoryview, offset: int, what: str) -> int:
    if offset + 4 > len(buffer):
        raise ModelFileError(path, f"file ends before the {what}", offset)
    return _INT32.unpack_from(buffer, offset)[0]


# ---------------------------------------------------------------------------------------------
# Writing


def pack_header(hparams: GptjHparams, quantization_version: int = 0) -> bytes:
    """The 32-byte header; the stored ftype is ``quantization_version * 1000 + hparams.ftype``.

    >>> pack_header(GptjHparams(50400, 2048, 4096, 16, 28, 64, GGMLFileType.MOSTLY_Q4_0), 2)[28:]
    b'\\xd2\\x07\\x00\\x00'
    """
    raw_ftype = quantization_version * QNT_VERSION_FACTOR + int(hparams.ftype)
    return _HEADER.pack(MAGIC, *hparams[:6], raw_ftype)


def pack_vocab(vocab: Sequence[bytes]) -> bytes:
    """The vocabulary section: the count, then each token's length and bytes, in id order."""
    parts = [_INT32.pack(len(vocab))]
    for token in vocab:
        parts.append(_UINT32.pack(len(token)))
        parts.append(token)
    return b"".join(parts)


def pack_tensor_header(name: str, ggml_type: GGMLType, shape: Sequence[int]) -> bytes:
    """A record's header: n_dims, name length, type, ne (the NumPy shape reversed), name."""
    encoded = name.encode("utf-8")
    ne = [int(dim) for dim in reversed(shape)]
    return struct.pack(f"<3i{len(ne)}i", len(ne), len(encoded), int(ggml_type), *ne) + encoded


def write_ggml(
    path: str | os.PathLike[str],
    hparams: GptjHparams,
    vocab: Sequence[bytes],
    records: Sequence[OutputTensor],
    quantization_version: int = 0,
    progress: ProgressCallback | None = None,
) -> None:
    """Write a complete file atomically (nothing appears at ``path`` unless all of it was written).

    ``records`` is a sequence so that the total size is known up front for ``progress``; each
    record's chunks are consumed one at a time, so only one chunk is in memory. Inputs that do
    not make a valid file raise ``ModelFileError`` naming ``path``, as ``write_gptj_gguf`` does.
    """
    path = os.fspath(path)
    if len(vocab) != hparams.n_vocab:
        raise ModelFileError(path, f"{len(vocab)} tokens given for n_vocab = {hparams.n_vocab}")
    sizes = [output_nbytes(record, path) for record in records]
    total = sum(sizes)
    written = 0
    with atomic_output(path) as f:
        f.write(pack_header(hparams, quantization_version))
        f.write(pack_vocab(vocab))
        for record, nbytes in zip(records, sizes, strict=True):
            f.write(pack_tensor_header(record.name, record.type, record.shape))
            written = write_tensor_data(
                f, record, nbytes, path=path, progress=progress, done=written, total=total
            )
