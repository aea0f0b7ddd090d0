"""Forged and damaged files: one line naming the file and the byte offset, and no allocation
driven by what the file claims (the table is in spec/robustness.md).

Each case forges one thing: sizes, counts or dimensions claiming terabytes, lengths that are
negative or overflow, offsets past the end, overlapping or duplicated tensors, wrong magic or
version, and truncation at every section boundary. Cases the format tests already cover
(tests/test_ggml_format.py, test_gguf.py, test_checkpoint_safety.py) are not repeated here;
the spec's table points at them.
"""

from __future__ import annotations

import collections
import io
import json
import pickle
import pickletools
import re
import struct
import zipfile

import pytest
from conftest import REPO
from fuzz.seeds import model_seeds
from fuzz.targets import bounded
from test_ggml_format import small_model
from test_gguf import ARCH, gguf_bytes, gguf_string, kv, tensor_info
from torch_pickles import state_dict, tensor, torch_zip

import ggml_py
from ggml_py.errors import CheckpointError, GgmlPyError, ModelFileError
from ggml_py.formats import open_model
from ggml_py.formats.ggml import pack_tensor_header
from ggml_py.formats.quant import GGMLType

CHECKPOINTS = REPO / "tests" / "fixtures" / "checkpoints"


def read_checkpoint(path) -> None:
    for item in ggml_py.open_checkpoint(path).values():
        item.numpy()


def refused(path, read, error_type, reason: str, offset) -> GgmlPyError:
    """``read(path)`` fails with ``error_type`` whose reason matches ``reason`` at ``offset``
    (an int, or "any" for any offset within the file), in one line naming the file, without
    allocating more than twice the file plus 1 MiB."""
    with bounded(path.stat().st_size):
        with pytest.raises(error_type) as caught:
            read(path)
    error = caught.value
    assert re.search(reason, error.reason), error.reason
    assert str(error).startswith(f"{path}: ") and "\n" not in str(error)
    assert error.offset is not None, str(error)
    if offset == "any":
        assert 0 <= error.offset <= path.stat().st_size, str(error)
    else:
        assert error.offset == offset, str(error)
    return error


def forge(path, position: int, fmt: str, *values) -> None:
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, position, *values)
    path.write_bytes(bytes(data))


# ----------------------------------------------------------------------------- ggml legacy file

# small_model's first record is "a.weight": n_dims 2, name length, type, ne [64, 3], name at +20.
GGML_RECORD_EDITS = [
    ("negative name length", (4, "<i", -1), 4, "name length -1"),
    (
        "name length past the end",
        (4, "<i", 2**31 - 1),
        0,
        "file ends inside a tensor record header",
    ),
    ("negative dimension", (16, "<i", -(2**31)), 12, r"dimensions \[64, -2147483648\]"),
]


@pytest.mark.parametrize(
    "edit, offset, reason",
    [case[1:] for case in GGML_RECORD_EDITS],
    ids=[case[0] for case in GGML_RECORD_EDITS],
)
def test_forged_ggml_record_fields(tmp_path, edit, offset, reason):
    path, *_, boundaries = small_model(tmp_path)
    position, fmt, value = edit
    forge(path, boundaries[0] + position, fmt, value)
    refused(path, open_model, ModelFileError, reason, boundaries[0] + offset)


@pytest.mark.parametrize(
    "shape, reason",
    [
        (
            (2**31 - 1, 2**31 - 1),
            "needs 18446744056529682436 bytes of data, 16 are left",
        ),  # terabytes
        ((2**31 - 1,) * 4, r"needs \d{38} bytes of data"),  # beyond 64 bits
    ],
)
def test_ggml_records_claiming_huge_tensors(tmp_path, shape, reason):
    path, *_, boundaries = small_model(tmp_path)
    record = pack_tensor_header("x.weight", GGMLType.F32, shape)
    path.write_bytes(path.read_bytes()[: boundaries[0]] + record + bytes(16))
    refused(path, open_model, ModelFileError, reason, boundaries[0] + len(record))


def test_ggml_vocabulary_count_claiming_terabytes(tmp_path):
    path = small_model(tmp_path)[0]
    forge(path, 4, "<i", 2**31 - 1)  # n_vocab
    forge(path, 32, "<i", 2**31 - 1)  # the vocabulary's count
    refused(
        path,
        open_model,
        ModelFileError,
        "file ends inside the vocabulary of 2147483647 tokens",
        path.stat().st_size,
    )


def test_ggml_truncated_at_a_record_boundary_is_a_shorter_file_that_cannot_run(tmp_path):
    # Legacy files store no tensor count (ggml reads records until the end), so a cut between
    # records leaves a well-formed file; loading the model then names the first missing tensor.
    path = tmp_path / "cut.bin"
    path.write_bytes(model_seeds()["f16.bin"])
    second = list(open_model(path).tensors.values())[1]
    path.write_bytes(path.read_bytes()[: second.offset + second.nbytes])
    assert len(open_model(path).tensors) == 2
    with pytest.raises(ModelFileError, match="is missing") as caught:
        ggml_py.load(path)
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


# ------------------------------------------------------------------------------------------ GGUF

U64 = 10  # GGUF value type ids
STRING = 8
F32_TYPE, Q4_0_TYPE = 0, 2
AFTER_HEADER = 24  # magic, version, tensor count, metadata count


def gguf_cases():
    one_tensor = tensor_info("x", [8], F32_TYPE, 0)
    return [
        ("version 0", gguf_bytes(version=0), "unsupported GGUF version 0", 4),
        ("wrong magic", b"GGUG" + bytes(40), "not a ggml GPT-J model file or a GGUF file", 0),
        (
            "key length 2**64-1",
            gguf_bytes([struct.pack("<Q", 2**64 - 1) + b"k"]),
            "needs 18446744073709551615 bytes",
            AFTER_HEADER + 8,
        ),
        (
            "string value length 2**63",
            gguf_bytes([kv("k", STRING, struct.pack("<Q", 2**63))]),
            "needs 9223372036854775808 bytes",
            AFTER_HEADER + 9 + 4 + 8,
        ),
        (
            "array of 2**61 u64 (2**64 bytes)",
            gguf_bytes([kv("k", 9, struct.pack("<IQ", U64, 2**61))]),
            "claims 2305843009213693952 elements",
            AFTER_HEADER + 9 + 4 + 4,
        ),
        (
            "tensor count 2**64-1",
            b"GGUF" + struct.pack("<IQQ", 3, 2**64 - 1, 0),
            "tensor count 18446744073709551615 does not fit",
            8,
        ),
        (
            "dimensions claiming terabytes",
            gguf_bytes([ARCH], [tensor_info("x", [2**40, 2**40], F32_TYPE, 0)], bytes(32)),
            r"tensor 'x' \(4835703278458516698824704 bytes",
            "any",
        ),
        (
            "four dimensions overflowing 64 bits",
            gguf_bytes([ARCH], [tensor_info("x", [2**62] * 4, Q4_0_TYPE, 0)], bytes(32)),
            r"runs past the end of the file",
            "any",
        ),
        (
            "overlapping tensors",
            gguf_bytes([ARCH], [one_tensor, tensor_info("y", [8], F32_TYPE, 0)], bytes(64)),
            "tensor 'y' has data offset 0, expected 32",
            "any",
        ),
        (
            "offset past the end",
            gguf_bytes([ARCH], [tensor_info("x", [8], F32_TYPE, 2**40)], bytes(32)),
            "has data offset 1099511627776, expected 0",
            "any",
        ),
        (
            "alignment of type INT32",
            gguf_bytes([kv("general.alignment", 5, struct.pack("<i", 32))]),
            "general.alignment has type INT32",
            AFTER_HEADER,
        ),
        (
            "alignment 0",
            gguf_bytes([ARCH, kv("general.alignment", 4, struct.pack("<I", 0))]),
            "is not a power of two",
            AFTER_HEADER + len(ARCH),
        ),
    ]


@pytest.mark.parametrize(
    "data, reason, offset",
    [case[1:] for case in gguf_cases()],
    ids=[case[0] for case in gguf_cases()],
)
def test_forged_gguf_files(tmp_path, data, reason, offset):
    path = tmp_path / "forged.gguf"
    path.write_bytes(data)
    refused(path, open_model, ModelFileError, reason, offset)


@pytest.fixture(scope="module")
def gptj_gguf() -> bytes:
    return model_seeds()["f16.gguf"]


def key_entry(data: bytes, key: str) -> int:
    """Where a metadata key's entry (its u64 length, then the key) starts."""
    return data.index(gguf_string(key))


@pytest.mark.parametrize(
    "key, old, new, reason",
    [
        (
            "general.architecture",
            gguf_string("gptj"),
            gguf_string("gpt2"),
            "architecture 'gpt2' is not GPT-J",
        ),
        (
            "tokenizer.ggml.model",
            gguf_string("gpt2"),
            gguf_string("bert"),
            "tokenizer model 'bert' is not byte-level BPE",
        ),
        (
            "gptj.vocab_size",
            struct.pack("<I", 300),
            struct.pack("<I", 2**32 - 1),
            "gptj.vocab_size is 4294967295 but",
        ),
        (
            "gptj.context_length",
            struct.pack("<I", 4) + struct.pack("<I", 64),
            struct.pack("<I", 5) + struct.pack("<i", 64),
            "'gptj.context_length' has type INT32, expected UINT32",
        ),
    ],
)
def test_gptj_metadata_errors_point_at_their_key(tmp_path, gptj_gguf, key, old, new, reason):
    entry = key_entry(gptj_gguf, key)
    value_at = entry + len(gguf_string(key))  # the value type, then the value
    assert gptj_gguf.index(old, value_at) <= value_at + 4
    data = gptj_gguf[:value_at] + gptj_gguf[value_at:].replace(old, new, 1)
    path = tmp_path / "forged.gguf"
    path.write_bytes(data)
    refused(path, open_model, ModelFileError, reason, entry)


# ----------------------------------------------------------------------------------- safetensors


def safetensors_file(tmp_path, entries: dict, data_length: int, header_length=None):
    header = json.dumps(entries).encode()
    path = tmp_path / "forged.safetensors"
    length = len(header) if header_length is None else header_length
    path.write_bytes(struct.pack("<Q", length) + header + bytes(data_length))
    return path, 8 + len(header)


def f32(shape, begin, end):
    return {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}


SAFETENSORS_FORGERIES = [
    (
        "overlapping tensors",
        {"a": f32([2], 0, 8), "b": f32([2], 4, 12)},
        12,
        "invalid offset for tensor 'b': starts at 4",
        4,
    ),
    (
        "duplicated tensors",
        {"a": f32([2], 0, 8), "b": f32([2], 0, 8)},
        8,
        "invalid offset for tensor '[ab]': starts at 0, expected 8",
        0,
    ),
    (
        "shape claiming terabytes",
        {"a": f32([2**20, 2**20], 0, 8)},
        8,
        r"8 bytes do not hold F32 \[1048576, 1048576\]",
        0,
    ),
    (
        "offsets past the end",
        {"a": f32([2**18, 2**20], 0, 2**40)},
        8,
        "the tensors cover 1099511627776 data bytes but the file holds 8",
        8,
    ),
    (
        "negative offset",
        {"a": f32([2], -8, 0)},
        8,
        r"data_offsets must be \[begin, end\]",
        "header",
    ),
    (
        "offsets overflowing 64 bits",
        {"a": f32([2], 2**64, 2**64 + 8)},
        8,
        "invalid offset for tensor 'a'",
        0,
    ),
]


@pytest.mark.parametrize(
    "entries, data_length, reason, offset",
    [case[1:] for case in SAFETENSORS_FORGERIES],
    ids=[case[0] for case in SAFETENSORS_FORGERIES],
)
def test_forged_safetensors_files(tmp_path, entries, data_length, reason, offset):
    path, data_start = safetensors_file(tmp_path, entries, data_length)
    refused(
        path,
        read_checkpoint,
        CheckpointError,
        reason,
        8 if offset == "header" else data_start + offset,
    )


def test_safetensors_header_length_claiming_terabytes(tmp_path):
    path, _ = safetensors_file(tmp_path, {"a": f32([2], 0, 8)}, 8, header_length=2**40)
    refused(
        path, read_checkpoint, CheckpointError, "unknown format", 0
    )  # beyond 100 MB: not sniffed as safetensors
    path, _ = safetensors_file(tmp_path, {"a": f32([2], 0, 8)}, 8, header_length=10**8)
    refused(
        path,
        read_checkpoint,
        CheckpointError,
        "header of 100000000 bytes runs past the end of the file",
        0,
    )


def test_safetensors_json_errors_point_into_the_header(tmp_path):
    path = tmp_path / "bad.safetensors"
    header = b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},, }'
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    refused(
        path,
        read_checkpoint,
        CheckpointError,
        "not valid JSON: Expecting property name",
        8 + header.index(b",,") + 1,
    )


def safetensors_boundaries(data: bytes):
    """Cut points: inside and after the length, the header's end, each tensor's start and end."""
    header_length = struct.unpack_from("<Q", data)[0]
    data_start = 8 + header_length
    header = json.loads(data[8:data_start])
    cuts = {1, 7, 8, 9, data_start - 1, data_start, data_start + 1, len(data) - 1}
    for name, entry in header.items():
        if name != "__metadata__":
            cuts.update(data_start + offset for offset in entry["data_offsets"])
    return sorted(cut for cut in cuts if 0 < cut < len(data))


def test_safetensors_truncated_at_every_section_boundary(tmp_path):
    data = (CHECKPOINTS / "dtypes.safetensors").read_bytes()
    path = tmp_path / "cut.safetensors"
    for cut in safetensors_boundaries(data):
        path.write_bytes(data[:cut])
        refused(path, read_checkpoint, CheckpointError, ".", "any")


# ------------------------------------------------------------------------------------- torch zip


def zip_structures(data: bytes):
    """Start of every local header, central directory entry and end record: the boundaries."""
    return sorted(
        index
        for signature in (b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07")
        for index in range(len(data))
        if data.startswith(signature, index)
    )


def test_torch_zip_truncated_at_every_section_boundary(tmp_path):
    data = (CHECKPOINTS / "dtypes.pt").read_bytes()
    path = tmp_path / "cut.pt"
    for cut in zip_structures(data)[1:]:
        path.write_bytes(data[:cut])
        error = refused(
            path, read_checkpoint, CheckpointError, "broken or truncated zip archive", cut
        )
        assert "File is not a zip file" in error.reason  # the directory at the end is gone


def test_torch_zip_storage_claiming_terabytes(tmp_path):
    huge = 2**40
    path = tmp_path / "huge.pt"
    torch_zip(
        path,
        state_dict({"w": tensor("FloatStorage", "0", huge, (huge,), (1,))}),
        {"0": [bytes(16)]},
    )
    error = refused(
        path,
        read_checkpoint,
        CheckpointError,
        r"declares 1099511627776 elements \(4398046511104 bytes\)",
        "any",
    )
    assert "data.pkl" in error.reason  # at the persistent id in the pickle


def test_torch_zip_record_past_the_end(tmp_path):
    path = tmp_path / "past.pt"
    torch_zip(
        path, state_dict({"w": tensor("FloatStorage", "0", 4, (4,), (1,))}), {"0": [bytes(16)]}
    )
    data = bytearray(path.read_bytes())
    for start in zip_structures(bytes(data)):
        if data.startswith(b"PK\x01\x02", start) and data[start + 46 :].startswith(
            b"archive/data/0"
        ):
            struct.pack_into("<I", data, start + 20, 2**32 - 1)  # the record's stored size
    path.write_bytes(bytes(data))
    refused(
        path,
        read_checkpoint,
        CheckpointError,
        "archive/data/0 runs past the end of the file",
        "any",
    )


@pytest.mark.parametrize(
    "shape, strides, offset, reason",
    [
        ((4,), (1,), 2**40, r"its view reaches byte 4398046511120 of a storage of 16 bytes"),
        ((2**40,), (0,), 0, "4398046511104 bytes expanded from a storage of 16 bytes"),
        ((2**31, 2**31), (1, 1), 0, "its view reaches byte"),
    ],
)
def test_torch_tensor_views_beyond_their_storage(tmp_path, shape, strides, offset, reason):
    path = tmp_path / "view.pt"
    torch_zip(
        path,
        state_dict({"w": tensor("FloatStorage", "0", 4, shape, strides, offset)}),
        {"0": [bytes(16)]},
    )
    data = path.read_bytes()
    record = data.index(b"archive/data/0") + len(
        b"archive/data/0"
    )  # the stored record's data follows its name
    error = refused(path, read_checkpoint, CheckpointError, reason, "any")
    assert record <= error.offset and data[error.offset : error.offset + 16] == bytes(16)


# ---------------------------------------------------------------------------------- torch legacy


STORAGE_ITEMSIZES = {
    "DoubleStorage": 8,
    "FloatStorage": 4,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
    "ComplexFloatStorage": 8,
    "ComplexDoubleStorage": 16,
}


class StorageRecorder(pickle.Unpickler):
    """Python's own unpickler on our trusted fixture, noting each storage's type and size
    instead of building tensors."""

    def __init__(self, data: bytes):
        super().__init__(io.BytesIO(data))
        self.itemsizes = {}

    def find_class(self, module, name):
        if name in STORAGE_ITEMSIZES:
            return name
        return collections.OrderedDict if name == "OrderedDict" else (lambda *args: None)

    def persistent_load(self, pid):
        _, storage_class, key, _location, numel, _view = pid
        self.itemsizes[key] = (STORAGE_ITEMSIZES[storage_class], numel)


def legacy_boundaries(data: bytes):
    """The end of each of the five pickles, then of each blob's count and of its data."""
    cuts = [0]
    for _ in range(5):
        stop = next(
            at for opcode, _, at in pickletools.genops(data[cuts[-1] :]) if opcode.name == "STOP"
        )
        cuts.append(cuts[-1] + stop + 1)
    recorder = StorageRecorder(data[cuts[3] : cuts[4]])
    recorder.load()
    position = cuts[-1]
    for key in pickle.loads(data[cuts[4] : cuts[5]]):
        itemsize, numel = recorder.itemsizes[key]
        cuts += [position + 8, position + 8 + itemsize * numel]
        position = cuts[-1]
    assert position == len(data)
    return cuts[1:-1]


def test_torch_legacy_truncated_at_every_section_boundary(tmp_path):
    path = tmp_path / "cut.pt"
    torch_legacy = (CHECKPOINTS / "legacy.pt").read_bytes()
    cuts = legacy_boundaries(torch_legacy)
    for cut in sorted(
        {cut + delta for cut in cuts for delta in (-1, 0, 1) if 0 < cut + delta < len(torch_legacy)}
    ):
        path.write_bytes(torch_legacy[:cut])
        refused(path, read_checkpoint, CheckpointError, ".", "any")


def test_torch_legacy_protocol_version_is_checked_where_it_is(tmp_path):
    data = bytearray((CHECKPOINTS / "legacy.pt").read_bytes())
    magic_end = data.index(b".") + 1
    version = pickle.dumps(1001, protocol=2)
    assert data[magic_end : magic_end + len(version)] == version
    data[magic_end : magic_end + len(version)] = pickle.dumps(1000, protocol=2)
    path = tmp_path / "version.pt"
    path.write_bytes(bytes(data))
    refused(path, read_checkpoint, CheckpointError, "legacy protocol version 1000", magic_end)


def test_zip_file_with_a_torch_name_but_no_torch_layout(tmp_path):
    path = tmp_path / "plain.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="without torch's top-level folder"):
        read_checkpoint(path)
