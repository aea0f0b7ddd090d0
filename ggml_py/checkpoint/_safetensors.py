"""safetensors files: an 8-byte header length, a JSON header, then the tensors' bytes.

Checked as strictly as the reference (Rust) reader: header size limit, UTF-8 JSON object,
no duplicate names, known dtypes, byte ranges that tile the data buffer exactly from its start
to the end of the file, and sizes that match shape x dtype.
"""

from __future__ import annotations

import math
import struct

from ggml_py._json import parse_json
from ggml_py.checkpoint._dtypes import SAFETENSORS_DTYPES, numpy_dtype
from ggml_py.checkpoint._tensor import LazyTensor, MappedStorage, describe
from ggml_py.errors import CheckpointError

MAX_HEADER_SIZE = 100_000_000  # the reference reader's limit
_LENGTH = struct.Struct("<Q")
HEADER_START = _LENGTH.size


def looks_like_safetensors(head: bytes) -> bool:
    """True when the first bytes are a header length within the limit followed by ``{``
    (the reference reader also skips JSON whitespace before it)."""
    if len(head) < _LENGTH.size + 1:
        return False
    (length,) = _LENGTH.unpack_from(head)
    return length <= MAX_HEADER_SIZE and head[8:].lstrip(b" \t\r\n")[:1] in (b"{", b"")


def read_safetensors(path: str, file_size: int) -> dict[str, LazyTensor]:
    """The tensors of a safetensors file, in the order of their data in the file."""
    with open(path, "rb") as file:
        prefix = file.read(_LENGTH.size)
        if len(prefix) < _LENGTH.size:
            raise CheckpointError(path, "safetensors header too small", 0)
        (length,) = _LENGTH.unpack(prefix)
        if length > MAX_HEADER_SIZE:
            raise CheckpointError(
                path, f"safetensors header of {length} bytes is larger than {MAX_HEADER_SIZE}", 0
            )
        if length > file_size - _LENGTH.size:
            raise CheckpointError(
                path, f"safetensors header of {length} bytes runs past the end of the file", 0
            )
        header = _parse_header(path, file.read(length))
    data_start = HEADER_START + length

    # Problems in the header point at its start, problems with the data at the bytes concerned
    # (or the end of the file, for ranges beyond it).
    def at(data_offset: int) -> int:
        return min(data_start + data_offset, file_size)

    entries = []
    for name, entry in header.items():
        if name != "__metadata__":
            entries.append((name, *_entry(path, name, entry)))
    # By (begin, end): empty tensors come before the tensor that starts where they are.
    entries.sort(key=lambda item: (item[3], item[4]))
    tensors = {}
    expected = 0
    for name, dtype_code, shape, begin, end in entries:
        if begin != expected:
            reason = f"invalid offset for tensor {name!r}: starts at {begin}, expected {expected}"
            raise CheckpointError(path, reason, at(min(begin, expected)))
        expected = end
        dtype = numpy_dtype(SAFETENSORS_DTYPES[dtype_code])
        if end - begin != math.prod(shape) * dtype.itemsize:
            reason = f"tensor {name!r}: {end - begin} bytes do not hold {dtype_code} {shape}"
            raise CheckpointError(path, reason, at(begin))
        storage = MappedStorage(path, data_start + begin, end - begin, file_size)
        tensors[name] = LazyTensor(name, storage, dtype, shape)
    if data_start + expected != file_size:
        reason = (
            f"the tensors cover {expected} data bytes but the file holds {file_size - data_start}"
        )
        raise CheckpointError(path, reason, at(expected))
    return tensors


def _parse_header(path: str, raw: bytes) -> dict:
    duplicated: list[str] = []

    def unique(pairs: list[tuple[str, object]]) -> dict:
        result = dict(pairs)
        if len(result) != len(pairs):
            seen = set()
            for key, _ in pairs:  # a set, not a count per key: 100k keys must not cost 10**10 steps
                if key in seen:
                    duplicated.append(key)
                    break
                seen.add(key)
        return result

    header = parse_json(
        path,
        raw,
        CheckpointError,
        subject="safetensors header is ",
        start=HEADER_START,
        object_pairs_hook=unique,
    )
    if duplicated:
        raise CheckpointError(
            path, f"safetensors header has the name {describe(duplicated[0])} twice", HEADER_START
        )
    if not isinstance(header, dict):
        raise CheckpointError(path, "safetensors header is not a JSON object", HEADER_START)
    metadata = header.get("__metadata__")
    if metadata is not None and (
        not isinstance(metadata, dict)
        or not all(isinstance(value, str) for value in metadata.values())
    ):
        raise CheckpointError(
            path, "safetensors __metadata__ must map strings to strings", HEADER_START
        )
    return header


def _entry(path: str, name: str, entry: object) -> tuple[str, list, int, int]:
    def refused(reason: str) -> CheckpointError:
        return CheckpointError(path, f"tensor {name!r}: {reason}", HEADER_START)

    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise refused("header entry needs dtype, shape and data_offsets")
    dtype_code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype_code, str) or dtype_code not in SAFETENSORS_DTYPES:
        raise refused(f"dtype {describe(dtype_code)} is not supported")
    if not isinstance(shape, list) or not all(type(size) is int and size >= 0 for size in shape):
        raise refused("shape must be a list of non-negative integers")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(offset) is int for offset in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise refused("data_offsets must be [begin, end] with 0 <= begin <= end")
    return dtype_code, shape, offsets[0], offsets[1]
