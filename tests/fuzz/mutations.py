"""Hypothesis strategies that damage or forge inputs the way broken and hostile files are.

``damaged`` edits any binary file (bytes, boundary integers, cuts, insertions); the others know
one structure and aim at its lengths, counts and offsets: zip records and directories, pickle
opcode streams, safetensors headers, and the JSON and text files of a tokenizer folder.
"""

from __future__ import annotations

import json
import struct

from hypothesis import strategies as st
from torch_pickles import op_global, op_int, op_str, op_tuple, state_dict, tensor

# Integers at the edges that forged lengths, counts, offsets and sizes use: zero, small, block and
# alignment sizes, the signed and unsigned limits of every width, and "terabytes".
BOUNDARY_INTEGERS = (
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    31,
    32,
    33,
    63,
    64,
    255,
    256,
    4096,
    2**15,
    2**16 - 1,
    2**16,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**40,
    2**62,
    2**63 - 1,
    2**63,
    2**64 - 1,
)


def _encode(value: int, width: int) -> bytes:
    return (value % 2 ** (8 * width)).to_bytes(width, "little")


@st.composite
def damaged(draw, data: bytes, hot: int = 64) -> bytes:
    """``data`` with one to four edits: a byte set; a 2-, 4- or 8-byte little-endian integer
    overwritten with a boundary value, a random value or the file size +-1; a cut; a run inserted
    or deleted. Positions favour the first ``hot`` bytes, where the headers are."""
    mutant = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        size = len(mutant)
        position = min(draw(st.one_of(st.integers(0, hot), st.integers(0, size))), size)
        edit = draw(st.sampled_from(("byte", "integer", "integer", "cut", "insert", "delete")))
        if edit == "byte" and size:
            mutant[min(position, size - 1)] = draw(st.integers(0, 255))
        elif edit == "integer":
            width = draw(st.sampled_from((2, 4, 8)))
            value = draw(
                st.one_of(
                    st.sampled_from(BOUNDARY_INTEGERS),
                    st.integers(0, 2**64 - 1),
                    st.sampled_from((size - 1, size, size + 1)),
                )
            )
            mutant[position : position + width] = _encode(value, width)
        elif edit == "cut":
            del mutant[position:]
        elif edit == "insert":
            mutant[position:position] = draw(st.binary(min_size=1, max_size=16))
        else:
            del mutant[position : position + draw(st.integers(1, 16))]
    return bytes(mutant)


# ------------------------------------------------------------------------------------------ zip

# Integer fields (offset in the structure, width) of each zip structure, by its signature.
_ZIP_FIELDS: dict[bytes, list[tuple[int, int]]] = {
    b"PK\x03\x04": [
        (4, 2),
        (6, 2),
        (8, 2),
        (14, 4),
        (18, 4),
        (22, 4),
        (26, 2),
        (28, 2),
    ],  # local header
    b"PK\x01\x02": [
        (6, 2),
        (8, 2),
        (10, 2),
        (16, 4),
        (20, 4),
        (24, 4),
        (28, 2),
        (30, 2),
        (32, 2),
        (34, 2),
        (42, 4),
    ],
    b"PK\x05\x06": [
        (4, 2),
        (6, 2),
        (8, 2),
        (10, 2),
        (12, 4),
        (16, 4),
        (20, 2),
    ],  # end of central directory
    b"PK\x06\x06": [
        (4, 8),
        (16, 4),
        (20, 4),
        (24, 8),
        (32, 8),
        (40, 8),
        (48, 8),
    ],  # zip64 end record
    b"PK\x06\x07": [(4, 4), (8, 8), (16, 4)],  # zip64 end locator
}


def zip_fields(data: bytes) -> list[tuple[int, int]]:
    """(absolute position, width) of every integer field of every zip structure in ``data``:
    sizes, offsets, counts, name and extra lengths, methods and flags."""
    fields = []
    for signature, layout in _ZIP_FIELDS.items():
        start = data.find(signature)
        while start >= 0:
            fields += [
                (start + offset, width)
                for offset, width in layout
                if start + offset + width <= len(data)
            ]
            start = data.find(signature, start + 1)
    return sorted(fields)


@st.composite
def forged_zip(draw, data: bytes) -> bytes:
    """A zip archive with one to three of its integer fields set to boundary or random values."""
    fields = zip_fields(data)
    mutant = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        position, width = draw(st.sampled_from(fields))
        value = draw(
            st.one_of(
                st.sampled_from(BOUNDARY_INTEGERS),
                st.integers(0, 2 ** (8 * width) - 1),
                st.sampled_from((len(data) - 1, len(data), len(data) + 1)),
            )
        )
        mutant[position : position + width] = _encode(value, width)
    return bytes(mutant)


# --------------------------------------------------------------------------------------- pickle

_ANY_INT = st.one_of(
    st.sampled_from(BOUNDARY_INTEGERS), st.integers(-(2**70), 2**70), st.integers(-3, 3)
)
_GLOBALS = st.sampled_from(
    [
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_tensor_v3"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._tensor", "_rebuild_from_type_v2"),
        ("torch.nn.parameter", "Parameter"),
        ("torch", "Tensor"),
        ("collections", "OrderedDict"),
        ("torch", "Size"),
        ("torch", "FloatStorage"),
        ("torch", "HalfStorage"),
        ("torch.storage", "UntypedStorage"),
        ("torch", "bfloat16"),
        ("os", "system"),
        ("builtins", "eval"),
    ]
)
_STORAGE_CLASSES = st.sampled_from(
    ["FloatStorage", "HalfStorage", "BFloat16Storage", "ByteStorage", "QInt8Storage", "Nope"]
)
_KEYS = st.sampled_from(["0", "1", "2"])


def _sized(code: bytes, length_format: str, payload: bytes, length: int) -> bytes:
    return (
        code
        + struct.pack(length_format, length % 2 ** (8 * struct.calcsize(length_format)))
        + payload
    )


_OPCODES = st.one_of(
    # opcodes without arguments: containers, marks, stack moves, calls, persistent ids, STOP
    st.sampled_from(
        [
            b"(",
            b"0",
            b"1",
            b"}",
            b"]",
            b")",
            b"t",
            b"\x85",
            b"\x86",
            b"\x87",
            b"a",
            b"e",
            b"s",
            b"u",
            b"N",
            b"\x88",
            b"\x89",
            b"Q",
            b"R",
            b"b",
            b"\x94",
            b".",
        ]
    ),
    _ANY_INT.map(op_int),
    st.integers(0, 255).map(lambda value: b"K" + bytes([value])),
    st.integers(0, 2**16 - 1).map(lambda value: b"M" + struct.pack("<H", value)),
    st.text(max_size=12).map(op_str),
    st.binary(max_size=12).map(lambda raw: b"C" + bytes([len(raw)]) + raw),
    # strings whose declared length is forged
    st.tuples(
        st.sampled_from(
            [(b"X", "<I"), (b"\x8d", "<Q"), (b"\x8c", "<B"), (b"B", "<I"), (b"\x8e", "<Q")]
        ),
        st.binary(max_size=8),
        st.sampled_from(BOUNDARY_INTEGERS),
    ).map(lambda item: _sized(item[0][0], item[0][1], item[1], item[2])),
    st.tuples(
        st.sampled_from([b"\x8a", b"\x8b"]),
        st.sampled_from(BOUNDARY_INTEGERS),
        st.binary(max_size=8),
    ).map(lambda item: item[0] + _encode(item[1], 1 if item[0] == b"\x8a" else 4) + item[2]),
    _GLOBALS.map(lambda name: op_global(*name)),
    _GLOBALS.map(lambda name: op_str(name[0]) + op_str(name[1]) + b"\x93"),
    st.tuples(st.sampled_from([b"q", b"h"]), st.integers(0, 4)).map(
        lambda item: item[0] + bytes([item[1]])
    ),
    st.tuples(st.sampled_from([b"r", b"j"]), st.sampled_from(BOUNDARY_INTEGERS)).map(
        lambda item: item[0] + _encode(item[1], 4)
    ),
    st.sampled_from(BOUNDARY_INTEGERS).map(lambda length: b"\x95" + _encode(length, 8)),
    st.integers(0, 255).map(lambda version: b"\x80" + bytes([version])),
    # a whole storage persistent id, and a whole tensor rebuild call, with forged numbers
    st.tuples(_STORAGE_CLASSES, _KEYS, _ANY_INT).map(
        lambda item: (
            op_tuple(
                [
                    op_str("storage"),
                    op_global("torch", item[0]),
                    op_str(item[1]),
                    op_str("cpu"),
                    op_int(item[2]),
                ]
            )
            + b"Q"
        )
    ),
)


@st.composite
def tensor_calls(draw) -> bytes:
    """``_rebuild_tensor_v2`` on a storage with forged element count, shape, strides and offset."""
    ndim = draw(st.integers(0, 3))
    return tensor(
        draw(_STORAGE_CLASSES),
        draw(_KEYS),
        draw(_ANY_INT),
        draw(st.lists(_ANY_INT, min_size=ndim, max_size=ndim)),
        draw(st.lists(_ANY_INT, min_size=ndim, max_size=ndim)),
        draw(_ANY_INT),
    )


@st.composite
def pickle_streams(draw) -> bytes:
    """A protocol-2 pickle: either a state dict of forged tensor calls, or a free sequence of
    opcodes (forged lengths, memo indices, globals, storage ids) ended by STOP."""
    if draw(st.booleans()):
        names = draw(st.lists(st.text(max_size=4), min_size=1, max_size=3, unique=True))
        return state_dict({name: draw(st.one_of(tensor_calls(), _OPCODES)) for name in names})
    return b"\x80\x02" + b"".join(draw(st.lists(_OPCODES, max_size=40))) + b"."


# ---------------------------------------------------------------------------------- safetensors

_DTYPE_CODES = st.one_of(
    st.sampled_from(
        ["F32", "F16", "BF16", "F64", "I64", "U8", "BOOL", "F8_E4M3", "C64", "F4", "Q4"]
    ),
    st.integers(),
    st.none(),
)
_HEADER_INTS = st.one_of(
    st.sampled_from(BOUNDARY_INTEGERS), st.integers(-(2**65), 2**65), st.integers(0, 64)
)
_ENTRY = st.one_of(
    st.fixed_dictionaries(
        {
            "dtype": _DTYPE_CODES,
            "shape": st.one_of(
                st.lists(_HEADER_INTS, max_size=4),
                st.lists(st.integers(0, 8), max_size=3),
                st.text(max_size=3),
            ),
            "data_offsets": st.one_of(
                st.lists(_HEADER_INTS, max_size=3),
                st.tuples(st.integers(0, 64), st.integers(0, 64)).map(list),
            ),
        }
    ),
    st.none(),
    st.integers(),
    st.lists(st.integers(), max_size=2),
    st.text(max_size=4),
)


@st.composite
def safetensors_files(draw) -> bytes:
    """A safetensors file whose JSON header has forged dtypes, shapes (negative, terabytes) and
    data offsets (overlapping, duplicated, past the end), and a data buffer of any length; the
    header length itself is sometimes forged too."""
    header = draw(st.dictionaries(st.text(max_size=6), _ENTRY, max_size=4))
    if draw(st.booleans()):
        header["__metadata__"] = draw(
            st.one_of(
                st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
                st.integers(),
                st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
            )
        )
    raw = json.dumps(header).encode()
    length = draw(st.one_of(st.just(len(raw)), st.sampled_from(BOUNDARY_INTEGERS)))
    return _encode(length, 8) + raw + bytes(draw(st.integers(0, 96)))


# ------------------------------------------------------------------------------------ tokenizer

# Token ids: in range, just past it, negative, terabytes.
_IDS = st.one_of(
    st.integers(-3, 400), st.sampled_from(BOUNDARY_INTEGERS), st.integers(-(2**65), 2**65)
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), _HEADER_INTS, st.floats(), st.text(max_size=8)),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)


def _objects(value: object, depth: int = 0) -> list[dict]:
    """Every JSON object inside ``value`` (itself included), to pick one to edit."""
    if not isinstance(value, dict) or depth > 3:
        return []
    found = [value]
    for child in value.values():
        found += _objects(child, depth + 1)
    return found


@st.composite
def edited_json(draw, data: bytes) -> bytes:
    """A JSON object file with one to three keys set to any JSON value (huge or negative ids,
    floats, nulls, nested objects), added or deleted, at any depth."""
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(_objects(value)))
        keys = list(target)
        edit = draw(st.sampled_from(("set", "add", "delete")))
        if edit == "delete" and keys:
            del target[draw(st.sampled_from(keys))]
            continue
        key = draw(st.sampled_from(keys)) if edit == "set" and keys else draw(st.text(max_size=12))
        target[key] = draw(st.one_of(_IDS, JSON_VALUES))
    return json.dumps(value, ensure_ascii=draw(st.booleans())).encode()


@st.composite
def edited_lines(draw, data: bytes) -> bytes:
    """A text file (merges.txt) with lines inserted (any text, or pairs of existing parts),
    deleted, duplicated or moved."""
    lines = data.decode().split("\n")
    parts = [part for line in lines for part in line.split(" ") if part]
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(lines)))
        edit = draw(st.sampled_from(("text", "pair", "delete", "duplicate", "move")))
        if edit == "text":
            lines.insert(index, draw(st.text(max_size=12)))
        elif edit == "pair" and parts:
            lines.insert(index, f"{draw(st.sampled_from(parts))} {draw(st.sampled_from(parts))}")
        elif lines and index < len(lines):
            line = lines.pop(index) if edit in ("delete", "move") else lines[index]
            if edit != "delete":
                lines.insert(draw(st.integers(0, len(lines))), line)
    return "\n".join(lines).encode()


@st.composite
def tokenizer_folders(draw, files: dict[str, bytes]) -> dict[str, bytes]:
    """A tokenizer folder with one or two files damaged: structurally (JSON values, merges lines),
    byte by byte, or missing."""
    files = dict(files)
    for _ in range(draw(st.integers(1, 2))):
        name = draw(st.sampled_from(sorted(files)))
        edit = draw(st.sampled_from(("structure", "structure", "bytes", "missing")))
        if edit == "missing":
            del files[name]
            if not files:
                break
        elif edit == "bytes":
            files[name] = draw(damaged(files[name], hot=8))
        else:
            try:
                files[name] = draw(
                    edited_lines(files[name]) if name.endswith(".txt") else edited_json(files[name])
                )
            except (
                ValueError,
                UnicodeDecodeError,
            ):  # an earlier byte edit broke its syntax: edit bytes again
                files[name] = draw(damaged(files[name], hot=8))
    return files
