"""GGUF v3 files: a validating memory-mapped reader, a streaming writer, and GPT-J's mapping.

The generic layer knows nothing about models: ``GGUFReader`` maps the file once with
``np.memmap``, parses the metadata into ``GGUFField`` records and the tensor infos into
``TensorInfo`` records whose ``data`` are read-only views of that map; ``write_gguf`` writes the
metadata and tensor infos, then streams each tensor's data chunk by chunk. Every length, count
and offset read from a file is checked against the file size before it is used, and problems
raise ``ModelFileError`` naming the file and the byte offset.

The GPT-J layer uses llama.cpp's (gguf-py's) key names, value types and tensor names:
``write_gptj_gguf`` writes Hugging Face-named tensors and a raw-byte vocabulary as such a file,
``read_gguf`` (registered with ``ggml_py.formats.open_model``) reads one back as a ``ModelFile``
with Hugging Face names, raw-byte tokens and merges. ``spec/gguf-gptj.md`` describes the format.

>>> import io
>>> out = io.BytesIO()
>>> fields = [GGUFField("general.architecture", GGUFValueType.STRING, "gptj")]
>>> write_gguf(out, fields, [TensorRecord("x", GGMLType.F32, (2,), [np.ones(2, np.float32)])],
...            path="demo.gguf")
>>> data = out.getvalue()
>>> data[:8], len(data), data[128:136]  # header and infos padded to 128, data padded to 32
(b'GGUF\\x03\\x00\\x00\\x00', 160, b'\\x00\\x00\\x80?\\x00\\x00\\x80?')
"""

from __future__ import annotations

import enum
import os
import re
import struct
from collections.abc import Sequence
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from ggml_py._atomic import atomic_output
from ggml_py.errors import ModelFileError, TokenizerError
from ggml_py.formats import GptjHparams, ModelFile, TensorInfo
from ggml_py.formats.ggml import ProgressCallback, TensorRecord
from ggml_py.formats.quant import (
    QNT_VERSION,
    QUANTIZED_TYPES,
    GGMLFileType,
    GGMLType,
    tensor_nbytes,
)
from ggml_py.tokenizer import (
    ADDED_TOKEN_SHAPE,
    ENDOFTEXT,
    NO_MERGE,
    bpe,
    bytes_to_token,
    token_to_bytes,
)

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
READABLE_VERSIONS = (2, 3)  # v2 and v3 share the layout; v3 only added big-endian files
DEFAULT_ALIGNMENT = 32
MAX_TENSOR_NAME_BYTES = 63  # ggml rejects names of GGML_MAX_NAME (64) bytes or more
MAX_KEY_BYTES = 65535
MAX_DIMS = 4


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


class GGUFTokenType(enum.IntEnum):
    """Values of ``tokenizer.ggml.token_type`` (llama.cpp's ``llama_token_type``)."""

    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


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
        self.alignment = self._alignment()
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

    def _alignment(self) -> int:
        field = self.fields.get("general.alignment")
        if field is None:
            return DEFAULT_ALIGNMENT
        where = self.offset_of("general.alignment")
        if field.type is not GGUFValueType.UINT32:
            raise ModelFileError(
                self.path, f"general.alignment has type {field.type.name}, expected UINT32", where
            )
        if field.value == 0 or field.value & (field.value - 1):
            raise ModelFileError(
                self.path, f"general.alignment {field.value} is not a power of two", where
            )
        return field.value

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
            if not 1 <= n_dims <= MAX_DIMS:
                raise cursor.error(
                    f"tensor {name!r} has {n_dims} dimensions, expected 1 to {MAX_DIMS}",
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


def _writer_alignment(fields: Sequence[GGUFField], path: str) -> int:
    for field in fields:
        if field.key == "general.alignment":
            if field.type != GGUFValueType.UINT32 or not isinstance(field.value, int):
                raise ModelFileError(path, "general.alignment must be a UINT32")
            if field.value <= 0 or field.value & (field.value - 1):
                raise ModelFileError(path, f"general.alignment {field.value} is not a power of two")
            return field.value
    return DEFAULT_ALIGNMENT


def write_gguf(
    out: BinaryIO,
    fields: Sequence[GGUFField],
    records: Sequence[TensorRecord],
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
    alignment = _writer_alignment(fields, path)
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
        if not 1 <= len(shape) <= MAX_DIMS or min(shape) < 0:
            raise ModelFileError(
                path, f"tensor {record.name!r} has unsupported shape {list(shape)}"
            )
        try:
            nbytes = tensor_nbytes(record.type, shape)
        except ValueError as error:
            raise ModelFileError(path, f"tensor {record.name!r}: {error}") from None
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
    for record, nbytes in zip(records, sizes):
        record_written = 0
        for chunk in record.chunks:
            view = memoryview(
                np.ascontiguousarray(chunk) if isinstance(chunk, np.ndarray) else chunk
            ).cast("B")
            record_written += view.nbytes
            if record_written > nbytes:
                break
            out.write(view)
            written += view.nbytes
            if progress is not None:
                progress(record.name, written, total)
        if record_written != nbytes:
            raise ModelFileError(
                path,
                f"tensor {record.name!r} got {record_written} bytes of data, expected {nbytes}",
            )
        out.write(bytes(align_offset(nbytes, alignment) - nbytes))


# --------------------------------------------------------------------------------------------
# GPT-J

GPTJ_ARCHITECTURE = "gptj"
ROPE_FREQ_BASE = 10000.0  # GPT-J's fixed RoPE base; the only value the graph implements
TOKENIZER_MODEL = "gpt2"
TOKENIZER_PRE = "gpt-2"

# Hugging Face module name -> llama.cpp tensor base name (gguf-py MODEL_TENSORS[GPTJ]).
_GLOBAL_TENSORS = {
    "transformer.wte": "token_embd",
    "transformer.ln_f": "output_norm",
    "lm_head": "output",
}
_LAYER_TENSORS = {
    "ln_1": "attn_norm",
    "attn.q_proj": "attn_q",
    "attn.k_proj": "attn_k",
    "attn.v_proj": "attn_v",
    "attn.out_proj": "attn_output",
    "mlp.fc_in": "ffn_up",
    "mlp.fc_out": "ffn_down",
}
_GLOBAL_TENSORS_BACK = {gguf: hf for hf, gguf in _GLOBAL_TENSORS.items()}
_LAYER_TENSORS_BACK = {gguf: hf for hf, gguf in _LAYER_TENSORS.items()}
_LAYER_INDEX = r"(0|[1-9][0-9]*)"
_HF_LAYER_NAME = re.compile(rf"transformer\.h\.{_LAYER_INDEX}\.(.+)\.(weight|bias)")
_GGUF_LAYER_NAME = re.compile(rf"blk\.{_LAYER_INDEX}\.(.+)\.(weight|bias)")
_GLOBAL_NAME = re.compile(r"(.+)\.(weight|bias)")


def gguf_tensor_name(hf_name: str) -> str | None:
    """The llama.cpp name of a Hugging Face GPT-J tensor, or ``None`` if it has none.

    >>> gguf_tensor_name("transformer.h.3.mlp.fc_in.bias"), gguf_tensor_name("lm_head.weight")
    ('blk.3.ffn_up.bias', 'output.weight')
    >>> gguf_tensor_name("transformer.h.0.attn.masked_bias") is None
    True
    """
    return _rename(hf_name, _HF_LAYER_NAME, _LAYER_TENSORS, "blk.", _GLOBAL_TENSORS)


def hf_tensor_name(gguf_name: str) -> str | None:
    """The Hugging Face name of a llama.cpp GPT-J tensor name, or ``None`` if unknown.

    >>> hf_tensor_name("blk.27.attn_output.weight")
    'transformer.h.27.attn.out_proj.weight'
    """
    return _rename(
        gguf_name, _GGUF_LAYER_NAME, _LAYER_TENSORS_BACK, "transformer.h.", _GLOBAL_TENSORS_BACK
    )


def _rename(
    name: str,
    layer_name: re.Pattern[str],
    layer_parts: dict[str, str],
    layer_prefix: str,
    global_parts: dict[str, str],
) -> str | None:
    """Translate a ``<layer prefix><N>.<part>.<weight|bias>`` or ``<part>.<weight|bias>`` name
    through the part tables; ``None`` when the part is not in them."""
    layer = layer_name.fullmatch(name)
    if layer:
        index, part, suffix = layer.groups()
        translated = layer_parts.get(part)
        return None if translated is None else f"{layer_prefix}{index}.{translated}.{suffix}"
    plain = _GLOBAL_NAME.fullmatch(name)
    translated = plain and global_parts.get(plain.group(1))
    return f"{translated}.{plain.group(2)}" if translated else None


def _is_control_token(token: bytes) -> bool:
    # The tokens the tokenizer matches whole before BPE (<|endoftext|>, <|extratoken_N|>).
    return ADDED_TOKEN_SHAPE.fullmatch(token) is not None


def gguf_token_strings(vocab: Sequence[bytes]) -> tuple[list[str], np.ndarray]:
    """``tokenizer.ggml.tokens`` and ``tokenizer.ggml.token_type`` for a raw-byte vocabulary.

    Every token is spelled in the byte-level alphabet, as in vocab.json (control tokens are
    printable ASCII, which that alphabet leaves unchanged); ``<|...|>`` tokens are CONTROL.

    >>> gguf_token_strings([b" the", b"<|endoftext|>"])
    (['Ġthe', '<|endoftext|>'], array([1, 3], dtype=int32))
    """
    strings = [bytes_to_token(token) for token in vocab]
    types = np.array(
        [
            GGUFTokenType.CONTROL if _is_control_token(token) else GGUFTokenType.NORMAL
            for token in vocab
        ],
        dtype=np.int32,
    )
    return strings, types


def derive_merges(vocab: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
    """BPE merges recovered from a vocabulary whose ids are merge ranks (GPT-2 style).

    The ranked tokens are all non-control tokens, each byte string ranked by its lowest id. For
    every ranked token of two or more bytes, in rank order, rank-by-id BPE runs on its bytes
    with only lower-ranked tokens allowed; if that ends in exactly two parts, they are the merge
    that forms the token. On GPT-2's vocabulary this reproduces merges.txt exactly.

    >>> derive_merges([b"a", b"b", b"c", b"ab", b"abc", b"<|endoftext|>"])
    [(b'a', b'b'), (b'ab', b'c')]
    """
    ranks: dict[bytes, int] = {}
    for token_id, token in enumerate(vocab):
        if not _is_control_token(token):
            ranks.setdefault(token, token_id)
    merges = []
    for token, token_rank in ranks.items():
        if len(token) < 2:
            continue

        def rank_below_token(left: bytes, right: bytes, token_rank: int = token_rank) -> int:
            rank = ranks.get(left + right, NO_MERGE)
            return rank if rank < token_rank else NO_MERGE

        parts = bpe(token, rank_below_token)
        if len(parts) == 2:
            merges.append((parts[0], parts[1]))
    return merges


def gptj_fields(
    hparams: GptjHparams,
    *,
    layer_norm_eps: float,
    n_inner: int,
    vocab: Sequence[bytes],
    merges: Sequence[tuple[bytes, bytes]],
    quantized: bool,
    name: str = "",
) -> list[GGUFField]:
    """The metadata of a GPT-J GGUF file, in the order written.

    ``general.file_type`` is ``hparams.ftype``: llama.cpp's file type numbers coincide with
    ggml's for every ``GGMLFileType`` (0, 1, 2, 3, 7, 8, 9).
    """
    u32, f32, text, array = (
        GGUFValueType.UINT32,
        GGUFValueType.FLOAT32,
        GGUFValueType.STRING,
        GGUFValueType.ARRAY,
    )
    fields = [GGUFField("general.architecture", text, GPTJ_ARCHITECTURE)]
    if name:
        fields.append(GGUFField("general.name", text, name))
    fields.append(GGUFField("general.file_type", u32, int(hparams.ftype)))
    if quantized:
        fields.append(GGUFField("general.quantization_version", u32, QNT_VERSION))
    fields += [
        GGUFField("general.alignment", u32, DEFAULT_ALIGNMENT),
        GGUFField("gptj.context_length", u32, hparams.n_ctx),
        GGUFField("gptj.embedding_length", u32, hparams.n_embd),
        GGUFField("gptj.block_count", u32, hparams.n_layer),
        GGUFField("gptj.feed_forward_length", u32, n_inner),
        GGUFField("gptj.attention.head_count", u32, hparams.n_head),
        GGUFField("gptj.attention.layer_norm_epsilon", f32, layer_norm_eps),
        GGUFField("gptj.rope.dimension_count", u32, hparams.n_rot),
        GGUFField("gptj.rope.freq_base", f32, ROPE_FREQ_BASE),
        GGUFField("gptj.vocab_size", u32, hparams.n_vocab),
    ]
    strings, types = gguf_token_strings(vocab)
    fields += [
        GGUFField("tokenizer.ggml.model", text, TOKENIZER_MODEL),
        GGUFField("tokenizer.ggml.pre", text, TOKENIZER_PRE),
        GGUFField("tokenizer.ggml.tokens", array, strings, text),
        GGUFField("tokenizer.ggml.token_type", array, types, GGUFValueType.INT32),
        GGUFField(
            "tokenizer.ggml.merges",
            array,
            [f"{bytes_to_token(a)} {bytes_to_token(b)}" for a, b in merges],
            text,
        ),
    ]
    end_of_text = ENDOFTEXT.encode()
    if end_of_text in vocab:
        end_of_text_id = list(vocab).index(end_of_text)
        fields += [
            GGUFField("tokenizer.ggml.bos_token_id", u32, end_of_text_id),
            GGUFField("tokenizer.ggml.eos_token_id", u32, end_of_text_id),
            GGUFField("tokenizer.ggml.unknown_token_id", u32, end_of_text_id),
        ]
    fields.append(GGUFField("tokenizer.ggml.add_bos_token", GGUFValueType.BOOL, False))
    return fields


def write_gptj_gguf(
    path: str | os.PathLike[str],
    hparams: GptjHparams,
    vocab: Sequence[bytes],
    records: Sequence[TensorRecord],
    *,
    merges: Sequence[tuple[bytes, bytes]] | None,
    layer_norm_eps: float,
    name: str = "",
    progress: ProgressCallback | None = None,
) -> None:
    """Write a GPT-J GGUF file atomically, like ``ggml.write_ggml`` writes a legacy one.

    ``records`` carry Hugging Face names and are written in their order under llama.cpp names;
    ``merges=None`` derives the merges from the vocabulary (``derive_merges``).
    """
    path = os.fspath(path)
    if len(vocab) != hparams.n_vocab:
        raise ModelFileError(path, f"{len(vocab)} tokens given for n_vocab = {hparams.n_vocab}")
    gguf_records = []
    for record in records:
        gguf_name = gguf_tensor_name(record.name)
        if gguf_name is None:
            raise ModelFileError(path, f"tensor {record.name!r} is not part of GPT-J")
        gguf_records.append(record._replace(name=gguf_name))
    shapes = {record.name: tuple(record.shape) for record in records}
    n_inner = shapes.get("transformer.h.0.mlp.fc_in.weight", (4 * hparams.n_embd,))[0]
    fields = gptj_fields(
        hparams,
        layer_norm_eps=layer_norm_eps,
        n_inner=n_inner,
        vocab=vocab,
        merges=derive_merges(vocab) if merges is None else merges,
        quantized=any(record.type in QUANTIZED_TYPES for record in records),
        name=name,
    )
    with atomic_output(path) as out:
        write_gguf(out, fields, gguf_records, path=path, progress=progress)


def read_gguf(path: str | os.PathLike[str]) -> ModelFile:
    """Read a GPT-J GGUF file as a ``ModelFile`` (Hugging Face tensor names, raw-byte tokens);
    see ``ggml_py.formats.open_model``."""
    gguf = GGUFReader(path)
    path = gguf.path
    architecture = gguf.field("general.architecture", GGUFValueType.STRING)
    if architecture != GPTJ_ARCHITECTURE:
        raise ModelFileError(
            path,
            f"architecture {architecture!r} is not GPT-J ({GPTJ_ARCHITECTURE!r})",
            gguf.offset_of("general.architecture"),
        )
    tokenizer_model = gguf.field("tokenizer.ggml.model", GGUFValueType.STRING)
    if tokenizer_model != TOKENIZER_MODEL:
        raise ModelFileError(
            path,
            f"tokenizer model {tokenizer_model!r} is not byte-level BPE ({TOKENIZER_MODEL!r})",
            gguf.offset_of("tokenizer.ggml.model"),
        )
    tensors = {}
    for gguf_name, info in gguf.tensors.items():
        hf_name = hf_tensor_name(gguf_name)
        if hf_name is None:
            raise ModelFileError(path, f"tensor {gguf_name!r} is not part of GPT-J", info.offset)
        tensors[hf_name] = info._replace(name=hf_name)
    vocab = _read_vocab(gguf)
    merges = _read_merges(gguf)
    u32 = GGUFValueType.UINT32
    n_embd = gguf.field("gptj.embedding_length", u32)
    n_head = gguf.field("gptj.attention.head_count", u32)
    if n_head == 0 or n_embd % n_head:
        raise ModelFileError(
            path,
            f"gptj.embedding_length {n_embd} is not a multiple of gptj.attention.head_count {n_head}",
            gguf.offset_of("gptj.attention.head_count"),
        )
    n_rot = gguf.optional_field("gptj.rope.dimension_count", u32)
    n_vocab = gguf.optional_field("gptj.vocab_size", u32)
    if n_vocab is not None and n_vocab != len(vocab):
        raise ModelFileError(
            path,
            f"gptj.vocab_size is {n_vocab} but tokenizer.ggml.tokens has {len(vocab)} tokens",
            gguf.offset_of("gptj.vocab_size"),
        )
    freq_base = gguf.optional_field("gptj.rope.freq_base", GGUFValueType.FLOAT32)
    if freq_base not in (None, ROPE_FREQ_BASE):
        raise ModelFileError(
            path,
            f"gptj.rope.freq_base {freq_base} is not supported (GPT-J uses {ROPE_FREQ_BASE:g})",
            gguf.offset_of("gptj.rope.freq_base"),
        )
    hparams = GptjHparams(
        n_vocab=len(vocab),
        n_ctx=gguf.field("gptj.context_length", u32),
        n_embd=n_embd,
        n_head=n_head,
        n_layer=gguf.field("gptj.block_count", u32),
        n_rot=n_embd // n_head if n_rot is None else n_rot,  # llama.cpp's default: the whole head
        ftype=_file_type(gguf, tensors),
    )
    return ModelFile(
        path=path,
        format="gguf",
        hparams=hparams,
        layer_norm_eps=gguf.field("gptj.attention.layer_norm_epsilon", GGUFValueType.FLOAT32),
        vocab=vocab,
        merges=merges,
        tensors=tensors,
        quantization_version=gguf.optional_field("general.quantization_version", u32) or 0,
    )


def _read_vocab(gguf: GGUFReader) -> list[bytes]:
    """Raw bytes of every token: control and user-defined tokens are literal UTF-8 text (as
    llama.cpp prints them), all others are spelled in the byte-level alphabet."""
    strings = gguf.field("tokenizer.ggml.tokens", GGUFValueType.ARRAY, GGUFValueType.STRING)
    types = gguf.optional_field(
        "tokenizer.ggml.token_type", GGUFValueType.ARRAY, GGUFValueType.INT32
    )
    if types is not None and len(types) != len(strings):
        raise ModelFileError(
            gguf.path,
            f"tokenizer.ggml.token_type has {len(types)} entries for {len(strings)} tokens",
            gguf.offset_of("tokenizer.ggml.token_type"),
        )
    literal = (
        set()
        if types is None
        else set(
            np.flatnonzero(
                np.isin(types, (GGUFTokenType.CONTROL, GGUFTokenType.USER_DEFINED))
            ).tolist()
        )
    )
    vocab = []
    for token_id, text in enumerate(strings):
        if token_id in literal:
            vocab.append(text.encode("utf-8"))
            continue
        try:
            vocab.append(token_to_bytes(text))
        except TokenizerError as error:
            raise ModelFileError(
                gguf.path,
                f"token {token_id}: {error.reason}",
                gguf.offset_of("tokenizer.ggml.tokens"),
            ) from None
    return vocab


def _read_merges(gguf: GGUFReader) -> list[tuple[bytes, bytes]] | None:
    lines = gguf.optional_field("tokenizer.ggml.merges", GGUFValueType.ARRAY, GGUFValueType.STRING)
    if lines is None:
        return None
    merges = []
    for rank, line in enumerate(lines):
        pair = line.split(" ")
        if len(pair) != 2 or not pair[0] or not pair[1]:
            raise ModelFileError(
                gguf.path,
                f"merge {rank} is {line!r}, expected two tokens separated by one space",
                gguf.offset_of("tokenizer.ggml.merges"),
            )
        try:
            merges.append((token_to_bytes(pair[0]), token_to_bytes(pair[1])))
        except TokenizerError as error:
            raise ModelFileError(
                gguf.path, f"merge {rank}: {error.reason}", gguf.offset_of("tokenizer.ggml.merges")
            ) from None
    return merges


def _file_type(gguf: GGUFReader, tensors: dict[str, TensorInfo]) -> GGMLFileType:
    """``general.file_type``, or when absent the file type whose weight type the token embedding has."""
    value = gguf.optional_field("general.file_type", GGUFValueType.UINT32)
    if value is not None:
        try:
            return GGMLFileType(value)
        except ValueError:
            raise ModelFileError(
                gguf.path,
                f"general.file_type {value} is not supported",
                gguf.offset_of("general.file_type"),
            ) from None
    embedding = tensors.get("transformer.wte.weight")
    if embedding is None:
        raise ModelFileError(
            gguf.path, "no general.file_type and no token_embd.weight to infer it from"
        )
    return next(file_type for file_type in GGMLFileType if file_type.weight_type is embedding.type)
