"""GGUF v3 files: a validating memory-mapped reader and a streaming writer, model-agnostic.

``GGUFReader`` maps the file once with ``np.memmap``, parses the metadata into ``GGUFField``
records and the tensor infos into ``TensorInfo`` records whose ``data`` are read-only views of
that map; ``write_gguf`` writes the metadata and tensor infos, then streams each tensor's data
chunk by chunk. Every length, count and offset read from a file is checked against the file size
before it is used, and problems raise ``ModelFileError`` naming the file and the byte offset.
What the keys and tensors mean for GPT-J is ``ggml_py.formats.gptj_gguf``'s business.

>>> import io
>>> out = io.BytesIO()
>>> fields = [GGUFField("general.architecture", GGUFValueType.STRING, "gptj")]
>>> write_gguf(out, fields, [OutputTensor("x", GGMLType.F32, (2,), [np.ones(2, np.float32)])],
...            path="demo.gguf")
>>> data = out.getvalue()
>>> data[:8], len(data), data[128:136]  # header and infos padded to 128, data padded to 32
(b'GGUF\\x03\\x00\\x00\\x00', 160, b'\\x00\\x00\\x80?\\x00\\x00\\x80?')
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Sequence
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from ggml_py.errors import ModelFileError
from ggml_py.formats.model_file import (
    OutputTensor,
    ProgressCallback,
    TensorInfo,
    output_nbytes,
    write_tensor_data,
)
from ggml_py.formats.quant import GGML_MAX_DIMS, GGMLType, tensor_nbytes

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
READABLE_VERSIONS = (2, 3)  # v2 and v3 share the layout; v3 only added big-endian files
DEFAULT_ALIGNMENT = 32
MAX_TENSOR_NAME_BYTES = 63  # ggml rejects names of GGML_MAX_NAME (64) bytes or more
MAX_KEY_BYTES = 65535


class GGUFValueType(enum.IntEnum):
    """Metadata value type ids (``enum gguf_type``)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


class GGUFField(NamedTuple):
    """One metadata key/value pair.

    ``value`` is an ``int``, ``float``, ``bool`` or ``str`` for scalars; for arrays it is a
    ``list[str]`` (strings) or a 1-D NumPy array of the element type (numbers, bools), and
    ``element_type`` names the element type.
    """

    key: str
    type: GGUFValueType
    value: Any
    element_type: GGUFValueType | None = None


# Little-endian NumPy dtypes of the fixed-size value types (BOOL is checked to be 0 or 1).
_FIXED_DTYPES: dict[GGUFValueType, np.dtype] = {
    GGUFValueType.UINT8: np.dtype("<u1"),
    GGUFValueType.INT8: np.dtype("<i1"),
    GGUFValueType.UINT16: np.dtype("<u2"),
    GGUFValueType.INT16: np.dtype("<i2"),
    GGUFValueType.UINT32: np.dtype("<u4"),
    GGUFValueType.INT32: np.dtype("<i4"),
    GGUFValueType.FLOAT32: np.dtype("<f4"),
    GGUFValueType.BOOL: np.dtype("<u1"),
    GGUFValueType.UINT64: np.dtype("<u8"),
    GGUFValueType.INT64: np.dtype("<i8"),
    GGUFValueType.FLOAT64: np.dtype("<f8"),
}
_STRING_LENGTH_BYTES = 8
_KV_MIN_BYTES = 8 + 4 + 1  # empty key, value type, smallest value
_TENSOR_INFO_MIN_BYTES = 8 + 4 + 8 + 4 + 8  # empty name, n_dims, one dim, type, offset


def align_offset(offset: int, alignment: int) -> int:
    """``offset`` rounded up to a multiple of ``alignment``.

    >>> align_offset(33, 32), align_offset(64, 32)
    (64, 64)
    """
    return offset + (alignment - offset % alignment) % alignment


def _checked_alignment(field: GGUFField | None, path: str, offset: int | None = None) -> int:
    """The alignment a ``general.alignment`` field sets (32 without one), which readers and
    writers pad to: a UINT32 power of two, else ``ModelFileError`` naming ``path`` and ``offset``.

    >>> _checked_alignment(GGUFField("general.alignment", GGUFValueType.UINT32, 64), "m.gguf")
    64
    """
    if field is None:
        return DEFAULT_ALIGNMENT
    if field.type != GGUFValueType.UINT32:
        type_name = getattr(field.type, "name", field.type)
        raise ModelFileError(
            path, f"general.alignment has type {type_name}, expected UINT32", offset
        )
    value = field.value
    if not isinstance(value, (int, np.integer)) or value <= 0 or value & (value - 1):
        raise ModelFileError(path, f"general.alignment {value} is not a power of two", offset)
    return int(value)


# --------------------------------------------------------------------------------------------
# Reading


class _Cursor:
    """Sequential little-endian reads from a buffer, each one bounds-checked first."""

    def __init__(self, path: str, buffer: memoryview):
        self.path = path
        self.buffer = buffer
        self.size = len(buffer)
        self.pos = 0

    def error(self, reason: str, offset: int | None = None) -> ModelFileError:
        return ModelFileError(self.path, reason, self.pos if offset is None else offset)

    def remaining(self) -> int:
        return self.size - self.pos

    def skip(self, length: int, what: str) -> int:
        """Advance over ``length`` bytes and return where they start."""
        if length > self.remaining():
            raise self.error(f"{what} needs {length} bytes but the file ends at byte {self.size}")
        start = self.pos
        self.pos += length
        return start

    def fixed(self, value_type: GGUFValueType, what: str):
        dtype = _FIXED_DTYPES[value_type]
        start = self.skip(dtype.itemsize, what)
        raw = np.frombuffer(self.buffer, dtype, 1, start)[0]
        if value_type is GGUFValueType.BOOL:
            if raw > 1:
                raise self.error(f"{what} is a BOOL with value {int(raw)}, not 0 or 1", start)
            return bool(raw)
        if value_type is GGUFValueType.FLOAT32:
            # The shortest decimal that round-trips through float32, so 1e-5 reads back as 1e-5.
            return float(str(raw))
        if value_type is GGUFValueType.FLOAT64:
            return float(raw)
        return int(raw)

    def u32(self, what: str) -> int:
        start = self.skip(4, what)
        return struct.unpack_from("<I", self.buffer, start)[0]

    def u64(self, what: str) -> int:
        start = self.skip(8, what)
        return struct.unpack_from("<Q", self.buffer, start)[0]

    def string(self, what: str) -> str:
        start = self.pos
        length = self.u64(f"length of {what}")
        data_start = self.skip(length, what)
        try:
            return str(self.buffer[data_start : data_start + length], "utf-8")
        except UnicodeDecodeError:
            raise self.error(f"{what} is not valid UTF-8", start) from None

    def value_type(self, what: str) -> GGUFValueType:
        start = self.pos
        type_id = self.u32(what)
        try:
            return GGUFValueType(type_id)
        except ValueError:
            raise self.error(f"{what} is {type_id}, not a GGUF value type", start) from None

    def value(self, value_type: GGUFValueType, what: str) -> tuple[Any, GGUFValueType | None]:
        """Read one value; returns it with its array element type (``None`` for scalars)."""
        if value_type is GGUFValueType.STRING:
            return self.string(what), None
        if value_type is not GGUFValueType.ARRAY:
            return self.fixed(value_type, what), None
        element_type = self.value_type(f"element type of {what}")
        if element_type is GGUFValueType.ARRAY:
            raise self.error(
                f"{what} is an array of arrays, which GGUF readers do not support", self.pos - 4
            )
        count_at = self.pos
        count = self.u64(f"element count of {what}")
        element_bytes = (
            _STRING_LENGTH_BYTES
            if element_type is GGUFValueType.STRING
            else _FIXED_DTYPES[element_type].itemsize
        )
        if count * element_bytes > self.remaining():
            raise self.error(
                f"{what} claims {count} elements, more than the {self.remaining()} bytes left in the file can hold",
                count_at,
            )
        if element_type is GGUFValueType.STRING:
            return [self.string(f"{what}[{index}]") for index in range(count)], element_type
        dtype = _FIXED_DTYPES[element_type]
        start = self.skip(count * dtype.itemsize, what)
        values = np.frombuffer(self.buffer, dtype, count, start)
        if element_type is GGUFValueType.BOOL:
            if count and values.max() > 1:
                bad = int(np.argmax(values > 1))
                raise self.error(
                    f"{what}[{bad}] is a BOOL with value {values[bad]}, not 0 or 1", start + bad
                )
            values = values.view(np.bool_)
        return values, element_type


class GGUFReader:
    """A GGUF file, memory-mapped and fully validated on open.

    ``fields``: ``dict[str, GGUFField]`` in file order; ``tensors``: ``dict[str, TensorInfo]``
    in file order, keyed by the names in the file; ``version``, ``alignment`` and
    ``data_offset`` (absolute start of the tensor data section). ``offset_of(key)`` is where a
    key's entry starts, for error messages about its value.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        size = os.path.getsize(self.path)
        if size < len(GGUF_MAGIC):
            raise ModelFileError(self.path, f"not a GGUF file: only {size} bytes", 0)
        self._memmap = np.memmap(self.path, dtype=np.uint8, mode="r")
        cursor = _Cursor(self.path, memoryview(self._memmap))
        self._read_header(cursor)
        self.fields = self._read_fields(cursor)
        self.alignment = _checked_alignment(
            self.fields.get("general.alignment"), self.path, self.offset_of("general.alignment")
        )
        self.tensors = self._read_tensor_infos(cursor)

    def _read_header(self, cursor: _Cursor) -> None:
        magic = bytes(cursor.buffer[0:4])
        if magic != GGUF_MAGIC:
            raise cursor.error(f"not a GGUF file: magic {magic!r}, expected {GGUF_MAGIC!r}", 0)
        cursor.pos = 4
        self.version = cursor.u32("version")
        if self.version & 0xFFFF == 0 and self.version:
            raise cursor.error(
                f"big-endian GGUF (version word {self.version:#x}) is not supported", 4
            )
        if self.version not in READABLE_VERSIONS:
            raise cursor.error(f"unsupported GGUF version {self.version} (readable: 2, 3)", 4)
        self._tensor_count = cursor.u64("tensor count")
        self._field_count = cursor.u64("metadata count")
        if self._field_count * _KV_MIN_BYTES > cursor.remaining():
            raise cursor.error(f"metadata count {self._field_count} does not fit in the file", 16)
        if self._tensor_count * _TENSOR_INFO_MIN_BYTES > cursor.remaining():
            raise cursor.error(f"tensor count {self._tensor_count} does not fit in the file", 8)

    def _read_fields(self, cursor: _Cursor) -> dict[str, GGUFField]:
        fields: dict[str, GGUFField] = {}
        self._field_offsets: dict[str, int] = {}
        for _ in range(self._field_count):
            start = cursor.pos
            key = cursor.string("metadata key")
            if key in fields:
                raise cursor.error(f"duplicate metadata key {key!r}", start)
            value_type = cursor.value_type(f"value type of {key!r}")
            value, element_type = cursor.value(value_type, f"value of {key!r}")
            fields[key] = GGUFField(key, value_type, value, element_type)
            self._field_offsets[key] = start
        return fields

    def offset_of(self, key: str) -> int | None:
        """The file offset of a metadata key's entry, or None when the file has no such key."""
        return self._field_offsets.get(key)

    def _read_tensor_infos(self, cursor: _Cursor) -> dict[str, TensorInfo]:
        records = []  # (name, type, shape, relative offset, where the offset is stored)
        names = set()
        for _ in range(self._tensor_count):
            start = cursor.pos
            name = cursor.string("tensor name")
            if name in names:
                raise cursor.error(f"duplicate tensor name {name!r}", start)
            names.add(name)
            if len(name.encode()) > MAX_TENSOR_NAME_BYTES:
                raise cursor.error(
                    f"tensor name {name!r} is longer than {MAX_TENSOR_NAME_BYTES} bytes", start
                )
            n_dims = cursor.u32(f"dimension count of {name!r}")
            if not 1 <= n_dims <= GGML_MAX_DIMS:
                raise cursor.error(
                    f"tensor {name!r} has {n_dims} dimensions, expected 1 to {GGML_MAX_DIMS}",
                    cursor.pos - 4,
                )
            ne = [cursor.u64(f"dimensions of {name!r}") for _ in range(n_dims)]
            if any(dim >= 2**63 for dim in ne):
                raise cursor.error(
                    f"tensor {name!r} has a negative dimension {ne}", cursor.pos - 8 * n_dims
                )
            type_id = cursor.u32(f"type of {name!r}")
            try:
                tensor_type = GGMLType(type_id)
            except ValueError:
                raise cursor.error(
                    f"tensor {name!r} has unsupported ggml type {type_id}", cursor.pos - 4
                ) from None
            shape = tuple(reversed(ne))
            try:
                tensor_nbytes(tensor_type, shape)
            except ValueError:
                raise cursor.error(
                    f"tensor {name!r}: row length {ne[0]} is not a multiple of the {tensor_type.name} block size",
                    cursor.pos - 4,
                ) from None
            offset_at = cursor.pos
            offset = cursor.u64(f"data offset of {name!r}")
            records.append((name, tensor_type, shape, offset, offset_at))
        self.data_offset = align_offset(cursor.pos, self.alignment)

        tensors: dict[str, TensorInfo] = {}
        expected_offset = 0
        file_size = cursor.size
        for name, tensor_type, shape, offset, offset_at in records:
            if offset != expected_offset:
                raise cursor.error(
                    f"tensor {name!r} has data offset {offset}, expected {expected_offset} "
                    f"(offsets follow tensor order, each tensor padded to {self.alignment} bytes)",
                    offset_at,
                )
            nbytes = tensor_nbytes(tensor_type, shape)
            start = self.data_offset + offset
            if start + nbytes > file_size:
                raise cursor.error(
                    f"tensor {name!r} ({nbytes} bytes at byte {start}) runs past the end of the "
                    f"file ({file_size} bytes)",
                    offset_at,
                )
            tensors[name] = TensorInfo(
                name, tensor_type, shape, start, nbytes, self._memmap[start : start + nbytes]
            )
            expected_offset += align_offset(nbytes, self.alignment)
        if records and self.data_offset + expected_offset > file_size:
            raise cursor.error(
                f"the file ends at byte {file_size}, before the padding after the last tensor "
                f"(byte {self.data_offset + expected_offset})",
                file_size,
            )
        return tensors

    def field(
        self, key: str, value_type: GGUFValueType, element_type: GGUFValueType | None = None
    ) -> Any:
        """The value of a required key, which must have exactly this type.

        Like llama.cpp, a key of another type (INT32 where UINT32 is expected) is an error.
        """
        field = self.fields.get(key)
        if field is None:
            raise ModelFileError(self.path, f"missing metadata key {key!r}")
        if field.type is not value_type or field.element_type is not element_type:
            expected = _type_name(GGUFField(key, value_type, None, element_type))
            reason = f"metadata key {key!r} has type {_type_name(field)}, expected {expected}"
            raise ModelFileError(self.path, reason, self.offset_of(key))
        return field.value

    def optional_field(
        self, key: str, value_type: GGUFValueType, element_type: GGUFValueType | None = None
    ) -> Any:
        """Like ``field`` but ``None`` when the key is absent."""
        return self.field(key, value_type, element_type) if key in self.fields else None


def _type_name(field: GGUFField) -> str:
    if field.type is GGUFValueType.ARRAY:
        return f"ARRAY of {field.element_type.name}"
    return field.type.name


# --------------------------------------------------------------------------------------------
# Writing


def _encode_string(text: str, what: str, path: str) -> bytes:
    if not isinstance(text, str):
        raise ModelFileError(path, f"{what} must be a str, got {type(text).__name__}")
    data = text.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def _encode_fixed_array(values: Any, value_type: GGUFValueType, what: str, path: str) -> bytes:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ModelFileError(path, f"{what} must be a flat sequence")
    dtype = _FIXED_DTYPES[value_type]
    if value_type is GGUFValueType.BOOL:
        if array.size and array.dtype != np.bool_:
            raise ModelFileError(path, f"{what} must hold bools")
        return array.astype(dtype).tobytes()
    if dtype.kind in "iu":
        if array.size and array.dtype.kind not in "iub":
            raise ModelFileError(path, f"{what} must hold integers for {value_type.name}")
        limits = np.iinfo(dtype)
        if array.size and (int(array.min()) < limits.min or int(array.max()) > limits.max):
            raise ModelFileError(path, f"{what} has values outside the {value_type.name} range")
    elif array.size and array.dtype.kind not in "iuf":
        raise ModelFileError(path, f"{what} must hold numbers for {value_type.name}")
    return array.astype(dtype).tobytes()


def _encode_fixed(value: Any, value_type: GGUFValueType, what: str, path: str) -> bytes:
    if value_type is GGUFValueType.BOOL:
        if not isinstance(value, (bool, np.bool_)):
            raise ModelFileError(path, f"{what} must be a bool")
        return b"\x01" if value else b"\x00"
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise ModelFileError(path, f"{what} must be a number for {value_type.name}, got {value!r}")
    if (
        _FIXED_DTYPES[value_type].kind in "iu"
        and isinstance(value, (float, np.floating))
        and not float(value).is_integer()
    ):
        raise ModelFileError(
            path, f"{what} must be an integer for {value_type.name}, got {value!r}"
        )
    return _encode_fixed_array([value], value_type, what, path)


def _encode_field(field: GGUFField, path: str) -> bytes:
    key_bytes = field.key.encode("utf-8")
    if not field.key.isascii() or not key_bytes or len(key_bytes) > MAX_KEY_BYTES:
        raise ModelFileError(
            path, f"metadata key {field.key!r} must be 1 to {MAX_KEY_BYTES} ASCII characters"
        )
    what = f"value of {field.key!r}"
    value_type = GGUFValueType(field.type)
    parts = [struct.pack("<Q", len(key_bytes)), key_bytes, struct.pack("<I", value_type)]
    if value_type is GGUFValueType.STRING:
        parts.append(_encode_string(field.value, what, path))
    elif value_type is GGUFValueType.ARRAY:
        element_type = None if field.element_type is None else GGUFValueType(field.element_type)
        if element_type is None or element_type is GGUFValueType.ARRAY:
            raise ModelFileError(path, f"{what}: an array needs a non-array element type")
        parts.append(struct.pack("<IQ", element_type, len(field.value)))
        if element_type is GGUFValueType.STRING:
            parts.extend(_encode_string(text, what, path) for text in field.value)
        else:
            parts.append(_encode_fixed_array(field.value, element_type, what, path))
    else:
        parts.append(_encode_fixed(field.value, value_type, what, path))
    return b"".join(parts)


def write_gguf(
    out: BinaryIO,
    fields: Sequence[GGUFField],
    records: Sequence[OutputTensor],
    *,
    path: str | os.PathLike[str],
    progress: ProgressCallback | None = None,
) -> None:
    """Write a GGUF v3 file to ``out``, streaming the tensor data.

    Each record's ``chunks`` (bytes-like, C order) are written as they come, so only one chunk
    needs to be in memory; together they must be exactly the tensor's size. The alignment is
    ``general.alignment`` when ``fields`` has it, else 32. ``path`` names the target in error
    messages; ``progress(name, bytes written, total bytes)`` is called after every chunk.
    """
    path = os.fspath(path)
    alignment = _checked_alignment(
        next((field for field in fields if field.key == "general.alignment"), None), path
    )
    keys = set()
    for field in fields:
        if field.key in keys:
            raise ModelFileError(path, f"duplicate metadata key {field.key!r}")
        keys.add(field.key)

    header = [GGUF_MAGIC, struct.pack("<IQQ", GGUF_VERSION, len(records), len(fields))]
    header.extend(_encode_field(field, path) for field in fields)
    names = set()
    sizes = []
    offset = 0
    for record in records:
        name_bytes = record.name.encode("utf-8")
        if len(name_bytes) > MAX_TENSOR_NAME_BYTES:
            raise ModelFileError(
                path, f"tensor name {record.name!r} is longer than {MAX_TENSOR_NAME_BYTES} bytes"
            )
        if record.name in names:
            raise ModelFileError(path, f"duplicate tensor name {record.name!r}")
        names.add(record.name)
        shape = tuple(int(dim) for dim in record.shape)
        if not 1 <= len(shape) <= GGML_MAX_DIMS or min(shape) < 0:
            raise ModelFileError(
                path, f"tensor {record.name!r} has unsupported shape {list(shape)}"
            )
        nbytes = output_nbytes(record, path)
        ne = shape[::-1]
        header.append(struct.pack("<Q", len(name_bytes)) + name_bytes)
        header.append(struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, int(record.type), offset))
        sizes.append(nbytes)
        offset += align_offset(nbytes, alignment)

    head = b"".join(header)
    out.write(head)
    out.write(bytes(align_offset(len(head), alignment) - len(head)))
    total = sum(sizes)
    written = 0
    for record, nbytes in zip(records, sizes, strict=True):
        written = write_tensor_data(
            out, record, nbytes, path=path, progress=progress, done=written, total=total
        )
        out.write(bytes(align_offset(nbytes, alignment) - nbytes))
