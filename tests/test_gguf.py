"""The GGUF v3 reader and writer (``ggml_py.formats.gguf``), checked against the ``gguf`` package.

References: gguf-py's ``GGUFReader`` must read what we write (value types, values, tensor names,
shapes, types and bytes), ``GGUFWriter`` must produce the very same bytes from the same input,
and our reader must read what ``GGUFWriter`` writes. Damaged files are built byte by byte here and
must fail with a ModelFileError naming the file and the byte offset, never another exception.
GPT-J specifics: tensor names against gguf-py's own GPT-J name map, token strings against
vocab.json, and merges derived from the vocabulary against GPT-2's merges.txt.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import gguf as gguf_py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggml_py.convert import read_vocab
from ggml_py.errors import ModelFileError
from ggml_py.formats.gguf import GGUFField, GGUFReader, GGUFValueType, write_gguf
from ggml_py.formats.gptj import tensor_names
from ggml_py.formats.gptj_gguf import (
    GGUFTokenType,
    gguf_tensor_name,
    gguf_token_strings,
    hf_tensor_name,
)
from ggml_py.formats.model_file import OutputTensor
from ggml_py.formats.quant import GGMLType, quantize
from ggml_py.tokenizer import derive_merges, token_to_bytes

V = GGUFValueType

SCALARS = [
    GGUFField("general.architecture", V.STRING, "gptj"),
    GGUFField("t.u8", V.UINT8, 255),
    GGUFField("t.i8", V.INT8, -128),
    GGUFField("t.u16", V.UINT16, 65535),
    GGUFField("t.i16", V.INT16, -32768),
    GGUFField("t.u32", V.UINT32, 2**32 - 1),
    GGUFField("t.i32", V.INT32, -(2**31)),
    GGUFField("t.f32", V.FLOAT32, 0.1),
    GGUFField("t.bool", V.BOOL, True),
    GGUFField("t.string", V.STRING, "Ġcafé 😀"),
    GGUFField("t.u64", V.UINT64, 2**64 - 1),
    GGUFField("t.i64", V.INT64, -(2**63)),
    GGUFField("t.f64", V.FLOAT64, 1e-300),
]
ARRAYS = [
    GGUFField("a.strings", V.ARRAY, ["Ġthe", "", "<|endoftext|>"], V.STRING),
    GGUFField("a.i32", V.ARRAY, np.array([1, -2, 3], dtype=np.int32), V.INT32),
    GGUFField("a.u8", V.ARRAY, np.array([0, 255], dtype=np.uint8), V.UINT8),
    GGUFField("a.f32", V.ARRAY, np.array([0.5, -1.25], dtype=np.float32), V.FLOAT32),
    GGUFField("a.bool", V.ARRAY, np.array([True, False]), V.BOOL),
    GGUFField("a.u64", V.ARRAY, np.array([2**64 - 1], dtype=np.uint64), V.UINT64),
    GGUFField("a.f64", V.ARRAY, np.array([2.5], dtype=np.float64), V.FLOAT64),
    GGUFField("a.empty", V.ARRAY, np.array([], dtype=np.int16), V.INT16),
]
FIELDS = SCALARS + ARRAYS
WRITABLE_BY_GGUF_PY = FIELDS[:-1]  # GGUFWriter refuses empty arrays


def sample_tensors():
    """One tensor of each type, with sizes that are not multiples of 32 bytes."""
    rng = np.random.default_rng(5)
    f32 = rng.standard_normal((3, 5)).astype(np.float32)
    f16 = rng.standard_normal(7).astype(np.float16)
    tensors = [
        ("f32.weight", GGMLType.F32, f32.shape, f32),
        ("f16.bias", GGMLType.F16, f16.shape, f16),
    ]
    for ggml_type in (GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1, GGMLType.Q8_0):
        rows = rng.standard_normal((2, 64)).astype(np.float32)
        tensors.append(
            (f"{ggml_type.short_name}.weight", ggml_type, rows.shape, quantize(rows, ggml_type))
        )
    return tensors


def write_ours(path: Path, fields=FIELDS, tensors=None) -> Path:
    tensors = sample_tensors() if tensors is None else tensors
    records = [
        OutputTensor(name, ggml_type, shape, [data]) for name, ggml_type, shape, data in tensors
    ]
    with open(path, "wb") as out:
        write_gguf(out, fields, records, path=path)
    return path


def write_theirs(path: Path, fields=WRITABLE_BY_GGUF_PY, tensors=None, alignment=None) -> Path:
    tensors = sample_tensors() if tensors is None else tensors
    writer = gguf_py.GGUFWriter(str(path), arch=fields[0].value)
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    for field in fields[1:]:
        value = field.value.tolist() if isinstance(field.value, np.ndarray) else field.value
        writer.add_key_value(
            field.key,
            value,
            gguf_py.GGUFValueType(field.type),
            None if field.element_type is None else gguf_py.GGUFValueType(field.element_type),
        )
    for name, ggml_type, _, data in tensors:
        quantized = data.dtype == np.uint8
        writer.add_tensor(
            name, data, raw_dtype=gguf_py.GGMLQuantizationType(ggml_type) if quantized else None
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def assert_same_value(actual, expected):
    if isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-7)
    elif isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(np.asarray(actual), expected)
    else:
        assert actual == expected


def test_gguf_py_reads_every_value_type_we_write(tmp_path):
    reader = gguf_py.GGUFReader(write_ours(tmp_path / "all.gguf"))
    assert reader.fields["GGUF.version"].contents() == 3
    for field in FIELDS:
        theirs = reader.fields[field.key]
        expected_types = [field.type] + (
            [field.element_type] if field.element_type is not None else []
        )
        if field.type is V.ARRAY and len(field.value) == 0:
            expected_types = [V.ARRAY]  # gguf-py records no element type for an empty array
        assert [int(t) for t in theirs.types] == [int(t) for t in expected_types], field.key
        assert_same_value(theirs.contents(), field.value)
    assert reader.alignment == 32


def test_gguf_py_reads_every_tensor_type_we_write(tmp_path):
    tensors = sample_tensors()
    reader = gguf_py.GGUFReader(write_ours(tmp_path / "t.gguf", tensors=tensors))
    assert [t.name for t in reader.tensors] == [name for name, *_ in tensors]
    for theirs, (_, ggml_type, shape, data) in zip(reader.tensors, tensors, strict=True):
        assert int(theirs.tensor_type) == int(ggml_type)
        assert list(theirs.shape) == list(reversed(shape))  # gguf-py reports ne order
        assert theirs.data.tobytes() == data.tobytes()
    # ggml's rule, which gguf-py does not check: offsets are the running sum of padded sizes.
    running = 0
    for theirs in reader.tensors:
        assert theirs.data_offset - reader.data_offset == running
        running += -(-theirs.n_bytes // 32) * 32
    assert (
        tmp_path / "t.gguf"
    ).stat().st_size == reader.data_offset + running  # padded at the end too


@pytest.mark.parametrize("with_tensors", [True, False])
def test_bytes_equal_gguf_py_writer(tmp_path, with_tensors):
    tensors = None if with_tensors else []
    ours = write_ours(
        tmp_path / "ours.gguf", fields=WRITABLE_BY_GGUF_PY, tensors=tensors
    ).read_bytes()
    theirs = write_theirs(tmp_path / "theirs.gguf", tensors=tensors).read_bytes()
    assert ours == theirs


@pytest.mark.parametrize("alignment", [None, 64])
def test_reads_gguf_py_files(tmp_path, alignment):
    tensors = sample_tensors()
    path = write_theirs(tmp_path / "theirs.gguf", tensors=tensors, alignment=alignment)
    ours = GGUFReader(path)
    assert ours.version == 3 and ours.alignment == (alignment or 32)
    reference = gguf_py.GGUFReader(path)
    assert ours.data_offset == reference.data_offset
    expected_fields = {field.key: field for field in FIELDS}
    for key, field in ours.fields.items():
        if key == "general.alignment":
            assert (field.type, field.value) == (V.UINT32, alignment)
            continue
        assert (field.type, field.element_type) == (
            expected_fields[key].type,
            expected_fields[key].element_type,
        )
        assert_same_value(field.value, expected_fields[key].value)
    assert ours.fields["t.f32"].value == 0.1  # float32 values come back as their shortest decimal
    assert list(ours.tensors) == [name for name, *_ in tensors]
    for (name, ggml_type, shape, data), theirs in zip(tensors, reference.tensors, strict=True):
        info = ours.tensors[name]
        assert (info.type, info.shape, info.offset, info.nbytes) == (
            ggml_type,
            shape,
            theirs.data_offset,
            data.nbytes,
        )
        assert info.data.tobytes() == data.tobytes() and not info.data.flags.writeable


# ---------------------------------------------------------------------------------------------
# Damaged files, built byte by byte


def gguf_string(text) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def kv(key, value_type: int, payload: bytes) -> bytes:
    return gguf_string(key) + struct.pack("<I", value_type) + payload


def tensor_info(name, ne, ggml_type: int, offset: int) -> bytes:
    return gguf_string(name) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, ggml_type, offset)


def gguf_bytes(kvs=(), infos=(), data=b"", version=3, alignment=32) -> bytes:
    head = (
        b"GGUF"
        + struct.pack("<IQQ", version, len(infos), len(kvs))
        + b"".join(kvs)
        + b"".join(infos)
    )
    return head + bytes(-len(head) % alignment) + data


ARCH = kv("general.architecture", 8, gguf_string("gptj"))
ONE_F32 = tensor_info("x", [8], 0, 0)
DATA_32 = bytes(32)

DAMAGED = [
    (b"GGML" + bytes(20), "not a GGUF file", 0),
    (gguf_bytes(version=1), "unsupported GGUF version 1", 4),
    (gguf_bytes(version=3 << 24), "big-endian GGUF", 4),
    (b"GGUF" + struct.pack("<IQQ", 3, 0, 2**40), "metadata count 1099511627776 does not fit", 16),
    (b"GGUF" + struct.pack("<IQQ", 3, 2**40, 0), "tensor count 1099511627776 does not fit", 8),
    (gguf_bytes([struct.pack("<Q", 2**40) + b"key"]), "metadata key needs 1099511627776 bytes", 32),
    (gguf_bytes([kv(b"k\xff", 8, gguf_string("v"))]), "metadata key is not valid UTF-8", 24),
    (gguf_bytes([ARCH, ARCH]), "duplicate metadata key 'general.architecture'", 24 + len(ARCH)),
    (gguf_bytes([kv("k", 13, b"")]), "value type of 'k' is 13, not a GGUF value type", 33),
    (gguf_bytes([kv("k", 9, struct.pack("<IQ", 9, 1))]), "array of arrays", 37),
    (gguf_bytes([kv("k", 9, struct.pack("<IQ", 4, 2**40))]), "claims 1099511627776 elements", 41),
    (
        gguf_bytes(
            [kv("k", 9, struct.pack("<IQ", 8, 2) + gguf_string("a") + struct.pack("<Q", 99))]
        ),
        "value of 'k'[1] needs 99 bytes",
        66,
    ),
    (gguf_bytes([kv("k", 7, b"\x02")]), "'k' is a BOOL with value 2", 37),
    (
        gguf_bytes([kv("k", 9, struct.pack("<IQ", 7, 2) + b"\x01\x05")]),
        "value of 'k'[1] is a BOOL with value 5",
        50,
    ),
    (
        gguf_bytes([kv("general.alignment", 5, struct.pack("<i", 32))]),
        "general.alignment has type INT32, expected UINT32",
        None,
    ),
    (
        gguf_bytes([kv("general.alignment", 4, struct.pack("<I", 48))]),
        "general.alignment 48 is not a power of two",
        None,
    ),
    (
        gguf_bytes([ARCH], [ONE_F32, tensor_info("x", [8], 0, 32)], DATA_32 * 2),
        "duplicate tensor name 'x'",
        None,
    ),
    (gguf_bytes([ARCH], [tensor_info("x" * 64, [8], 0, 0)], DATA_32), "longer than 63 bytes", None),
    (
        gguf_bytes([ARCH], [tensor_info("x", [1, 1, 1, 1, 8], 0, 0)], DATA_32),
        "has 5 dimensions",
        None,
    ),
    (gguf_bytes([ARCH], [tensor_info("x", [2**63], 0, 0)], DATA_32), "negative dimension", None),
    (
        gguf_bytes([ARCH], [tensor_info("x", [256], 12, 0)], DATA_32 * 5),
        "unsupported ggml type 12",
        None,
    ),
    (
        gguf_bytes([ARCH], [tensor_info("x", [16], 8, 0)], DATA_32),
        "row length 16 is not a multiple of the Q8_0 block",
        None,
    ),
    (
        gguf_bytes([ARCH], [tensor_info("x", [8], 0, 32)], DATA_32 * 2),
        "has data offset 32, expected 0",
        None,
    ),
    (
        gguf_bytes([ARCH], [ONE_F32, tensor_info("y", [8], 0, 64)], DATA_32 * 3),
        "'y' has data offset 64, expected 32",
        None,
    ),
    (
        gguf_bytes([ARCH], [tensor_info("x", [9], 0, 0)], bytes(36)),
        "before the padding after the last tensor",
        None,
    ),
    (
        gguf_bytes([ARCH], [tensor_info("x", [64], 0, 0)], DATA_32),
        "tensor 'x' (256 bytes at byte",
        None,
    ),
]


@pytest.mark.parametrize("data, message, offset", DAMAGED, ids=[case[1][:40] for case in DAMAGED])
def test_damaged_files_name_file_and_offset(tmp_path, data, message, offset):
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(ModelFileError) as caught:
        GGUFReader(path)
    assert message in caught.value.reason
    assert caught.value.path == str(path)
    if offset is not None:
        assert caught.value.offset == offset


def test_valid_variants_of_the_damaged_files_are_accepted(tmp_path):
    """The fixtures above are right except for the one damage: the undamaged forms parse."""
    good = gguf_bytes(
        [ARCH, kv("general.alignment", 4, struct.pack("<I", 64))],
        [ONE_F32, tensor_info("y", [32], 8, 64)],
        DATA_32 * 2 + bytes(34) + bytes(30),
        alignment=64,
    )
    path = tmp_path / "good.gguf"
    path.write_bytes(good)
    reader = GGUFReader(path)
    assert reader.alignment == 64 and [t.shape for t in reader.tensors.values()] == [(8,), (32,)]
    assert (
        reader.tensors["y"].offset == reader.data_offset + 64 and reader.tensors["y"].nbytes == 34
    )


def test_every_truncation_is_reported(tmp_path):
    data = write_ours(
        tmp_path / "full.gguf", fields=SCALARS[:3] + ARRAYS[:2], tensors=sample_tensors()[:3]
    ).read_bytes()
    path = tmp_path / "cut.gguf"
    for length in range(len(data)):
        path.write_bytes(data[:length])
        with pytest.raises(ModelFileError) as caught:
            GGUFReader(path)
        assert caught.value.path == str(path)
        assert caught.value.offset is None or caught.value.offset <= length


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_any_corrupted_byte_parses_or_raises_model_file_error(tmp_path, position, value):
    path = tmp_path / "fuzz.gguf"
    data = bytearray(
        write_ours(path, fields=SCALARS[:3] + ARRAYS[:2], tensors=sample_tensors()[:3]).read_bytes()
    )
    data[position % len(data)] = value
    path.write_bytes(bytes(data))
    try:
        reader = GGUFReader(path)
    except ModelFileError as error:
        assert error.path == str(path)
        return
    for info in reader.tensors.values():
        assert info.offset + info.nbytes <= len(data) and info.data.nbytes == info.nbytes


# ---------------------------------------------------------------------------------------------
# Writer checks


@pytest.mark.parametrize(
    "fields, records, message",
    [
        ([SCALARS[0], SCALARS[0]], [], "duplicate metadata key 'general.architecture'"),
        ([GGUFField("t.u8", V.UINT8, 256)], [], "outside the UINT8 range"),
        ([GGUFField("t.u32", V.UINT32, 1.5)], [], "must be an integer for UINT32"),
        ([GGUFField("t.i64", V.INT64, float("nan"))], [], "must be an integer for INT64"),
        ([GGUFField("t.b", V.BOOL, 1)], [], "must be a bool"),
        ([GGUFField("t.s", V.STRING, b"raw")], [], "must be a str"),
        ([GGUFField("t.a", V.ARRAY, [[1]], V.ARRAY)], [], "needs a non-array element type"),
        ([GGUFField("t.a", V.ARRAY, [1, 2**31], V.INT32)], [], "outside the INT32 range"),
        ([GGUFField("kéy", V.UINT8, 1)], [], "must be 1 to 65535 ASCII characters"),
        (
            [GGUFField("general.alignment", V.UINT32, 24)],
            [],
            "general.alignment 24 is not a power of two",
        ),
        (
            [GGUFField("general.alignment", V.INT32, 32)],
            [],
            "general.alignment has type INT32, expected UINT32",
        ),
        ([], [OutputTensor("x" * 64, GGMLType.F32, (1,), [b"\0" * 4])], "longer than 63 bytes"),
        ([], [OutputTensor("x", GGMLType.F32, (1,), [b"\0" * 4])] * 2, "duplicate tensor name 'x'"),
        (
            [],
            [OutputTensor("x", GGMLType.Q8_0, (2, 16), [b""])],
            "not a multiple of the q8_0 block size",
        ),
        (
            [],
            [OutputTensor("x", GGMLType.F32, (2,), [b"\0" * 4])],
            "got 4 bytes of data, expected 8",
        ),
        (
            [],
            [OutputTensor("x", GGMLType.F32, (1,), [b"\0" * 4, b"\0"])],
            "got 5 bytes of data, expected 4",
        ),
    ],
)
def test_writer_rejects_what_readers_would_refuse(tmp_path, fields, records, message):
    with open(tmp_path / "out.gguf", "wb") as out, pytest.raises(ModelFileError, match=message):
        write_gguf(out, fields, records, path="out.gguf")


def test_writer_streams_chunks_and_reports_progress(tmp_path):
    data = np.arange(40, dtype=np.float32)
    calls = []
    records = [
        OutputTensor("a", GGMLType.F32, (4, 10), [data[:20], data[20:].tobytes()]),
        OutputTensor("b", GGMLType.F32, (2,), [data[:2]]),
    ]
    with open(tmp_path / "s.gguf", "wb") as out:
        write_gguf(
            out, [SCALARS[0]], records, path="s.gguf", progress=lambda *call: calls.append(call)
        )
    assert calls == [("a", 80, 168), ("a", 160, 168), ("b", 168, 168)]
    reader = gguf_py.GGUFReader(tmp_path / "s.gguf")
    np.testing.assert_array_equal(reader.tensors[0].data, data.reshape(4, 10))


# ---------------------------------------------------------------------------------------------
# GPT-J: tensor names, tokens, merges


def test_tensor_names_match_gguf_py_gptj_map():
    name_map = gguf_py.get_tensor_name_map(gguf_py.MODEL_ARCH.GPTJ, 28)
    names = tensor_names(28)
    assert len(names) == 285
    for hf_name in names:
        expected = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert gguf_tensor_name(hf_name) == expected, hf_name
        assert hf_tensor_name(expected) == hf_name
    # exactly gguf-py's GPT-J tensor list, nothing more
    gptj_tensors = {
        gguf_py.TENSOR_NAMES[t].format(bid=0)
        for t in gguf_py.MODEL_TENSORS[gguf_py.MODEL_ARCH.GPTJ]
    }
    assert {gguf_tensor_name(name).rsplit(".", 1)[0] for name in tensor_names(1)} == gptj_tensors


@pytest.mark.parametrize(
    "name",
    [
        "transformer.h.0.attn.masked_bias",
        "transformer.h.01.ln_1.weight",
        "transformer.wpe.weight",
        "lm_head.scale",
        "blk.0.attn_q.weight",
        "",
    ],
)
def test_names_outside_gptj_have_no_gguf_name(name):
    assert gguf_tensor_name(name) is None


@pytest.mark.parametrize(
    "name", ["blk.0.ffn_gate.weight", "blk.x.attn_q.weight", "token_embd", "output.scale"]
)
def test_gguf_names_outside_gptj_have_no_hf_name(name):
    assert hf_tensor_name(name) is None


def vocab_json_tokens(folder: Path, n_vocab: int = 50400) -> list:
    """Token strings by id as GPT-2's vocab.json and GPT-J's added_tokens.json spell them."""
    tokens = [None] * n_vocab
    for table in ("vocab.json", "added_tokens.json"):
        for token, token_id in json.loads((folder / table).read_text(encoding="utf-8")).items():
            tokens[token_id] = token
    return tokens


@pytest.fixture(scope="module")
def gpt_j_vocab(tiny_model_dir):
    return read_vocab(tiny_model_dir, 50400)


def test_token_strings_are_vocab_json_spelling(tiny_model_dir, gpt_j_vocab):
    strings, types = gguf_token_strings(gpt_j_vocab)
    assert strings == vocab_json_tokens(tiny_model_dir)
    assert types.dtype == np.int32
    assert np.flatnonzero(types == GGUFTokenType.CONTROL).tolist() == list(range(50256, 50400))
    assert (types[:50256] == GGUFTokenType.NORMAL).all()


def test_merges_derived_from_gpt2_vocabulary_equal_merges_txt(tiny_model_dir, gpt_j_vocab):
    lines = (tiny_model_dir / "merges.txt").read_text(encoding="utf-8").split("\n")
    assert lines[0].startswith("#version") and lines[-1] == ""
    golden = [tuple(token_to_bytes(part) for part in line.split(" ")) for line in lines[1:-1]]
    assert len(golden) == 50000
    assert derive_merges(gpt_j_vocab) == golden


@pytest.mark.parametrize(
    "vocab, merges",
    [
        # "abc" is formed from the lower-ranked "ab", not from "bc", which ranks after it
        ([b"a", b"b", b"c", b"ab", b"abc", b"bc"], [(b"a", b"b"), (b"ab", b"c"), (b"b", b"c")]),
        # with "bc" first, rank-by-id BPE builds "abc" as a + bc
        ([b"a", b"b", b"c", b"bc", b"ab", b"abc"], [(b"b", b"c"), (b"a", b"b"), (b"a", b"bc")]),
        # "abc" is unreachable in one merge (no two-token split of lower rank): no merge for it
        ([b"a", b"b", b"c", b"abc"], []),
        # duplicates rank by their first id; control tokens take no part
        ([b"a", b"b", b"ab", b"ab", b"<|ab|>"], [(b"a", b"b")]),
    ],
)
def test_merge_derivation_rules(vocab, merges):
    assert derive_merges(vocab) == merges
