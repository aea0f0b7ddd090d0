"""Hostile and broken checkpoints are refused with CheckpointError, and nothing in them runs.

The payloads are built here: with ``pickle.dumps`` for code-execution attacks (exactly what an
attacker would upload) and opcode by opcode (tests/torch_pickles.py) for the rest.
"""

from __future__ import annotations

import builtins
import io
import os
import pickle
import struct
import subprocess
import zipfile

import pytest
from conftest import REPO
from torch_pickles import op_global, op_int, op_str, op_tuple, state_dict, tensor, torch_zip

import ggml_py
from ggml_py.checkpoint import _unpickler

FIXTURES = REPO / "tests" / "fixtures" / "checkpoints"
LEGACY_HEADER = (
    pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    + pickle.dumps(1001, protocol=2)
    + pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)
)


class Payload:
    """Unpickles as ``function(argument)``: the classic pickle code-execution attack."""

    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


def attacks(marker):
    shell = f"touch {marker}"
    python = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": Payload(os.system, shell),
        "builtins.eval": Payload(builtins.eval, python),
        "builtins.exec": Payload(builtins.exec, python),
        "subprocess.Popen": Payload(subprocess.Popen, ["touch", str(marker)]),
    }


def refused(path, match: str | None = None) -> ggml_py.CheckpointError:
    with pytest.raises(ggml_py.CheckpointError, match=match) as error:
        checkpoint = ggml_py.open_checkpoint(path)
        for name in checkpoint:
            checkpoint[name].numpy()
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    return error.value


def test_the_payloads_are_live(tmp_path):
    # Proof that the attack files below would run code under pickle.load.
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps({"weight": attacks(marker)["builtins.exec"]}, protocol=2))
    assert marker.exists()


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize(
    "attack", ["os.system", "builtins.eval", "builtins.exec", "subprocess.Popen"]
)
def test_code_execution_in_a_zip_archive_is_refused(tmp_path, attack, protocol):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"weight": attacks(marker)[attack]}, protocol=protocol)
    assert (b"\x93" in payload) == (protocol == 4)  # protocol 4 names globals with STACK_GLOBAL
    torch_zip(tmp_path / "evil.bin", payload, {})
    error = refused(tmp_path / "evil.bin", "global .* is not allowed")
    assert error.offset is not None
    assert not marker.exists()


@pytest.mark.parametrize("attack", ["os.system", "builtins.exec", "subprocess.Popen"])
def test_code_execution_in_a_legacy_stream_is_refused(tmp_path, attack):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(LEGACY_HEADER + pickle.dumps({"weight": attacks(marker)[attack]}, protocol=2))
    refused(path, "object pickle: global .* is not allowed")
    assert not marker.exists()


def test_code_execution_in_the_legacy_magic_number_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(attacks(marker)["os.system"], protocol=2))
    refused(path, "magic number: global .* is not allowed")
    assert not marker.exists()


def test_module_persistent_id_is_refused(tmp_path):
    class ModulePickler(pickle.Pickler):
        def persistent_id(self, obj):
            return (
                ("module", "Net", "net.py", "import os; os.system('id')") if obj == "NET" else None
            )

    buffer = io.BytesIO()
    ModulePickler(buffer, protocol=2).dump({"net": "NET"})
    torch_zip(tmp_path / "module.bin", buffer.getvalue(), {})
    refused(tmp_path / "module.bin", "'module' persistent id")


@pytest.mark.parametrize(
    "opcode",
    [
        b"i__builtin__\nobject\n",  # INST
        b"(c__builtin__\nobject\no",  # OBJ
        b"\x82\x01",  # EXT1
        b"\x83\x01\x00",  # EXT2
        b"c__builtin__\nobject\n)\x81",  # NEWOBJ
        b"Pid\n",  # PERSID (text)
        b"I1\n",  # INT (protocol 0)
        b"\x96\x00\x00\x00\x00\x00\x00\x00\x00",  # BYTEARRAY8
        b"\xff",  # not an opcode at all
    ],
)
def test_unexpected_opcodes_are_refused(tmp_path, opcode):
    torch_zip(tmp_path / "odd.bin", b"\x80\x02" + opcode + b".", {})
    refused(tmp_path / "odd.bin", "is not allowed")


def test_build_on_anything_but_an_ordered_dict_is_refused(tmp_path):
    # A dict updated by BUILD: the object-state gadget torch's weights-only reader also blocks.
    torch_zip(tmp_path / "build.bin", b"\x80\x02}}b.", {})
    refused(tmp_path / "build.bin", "BUILD of a dict on a dict is not allowed")


def test_element_count_beyond_the_data_is_refused_without_allocating(tmp_path):
    huge = 10**15  # 2 PB of float16, in a file of a few hundred bytes
    pickle_bytes = state_dict({"w": tensor("HalfStorage", "0", huge, (huge,), (1,))})
    torch_zip(tmp_path / "huge.bin", pickle_bytes, {"0": [b"\x00" * 8]})
    refused(tmp_path / "huge.bin", "declares 1000000000000000 elements .* holds 8 bytes")


def test_tensor_view_beyond_its_storage_is_refused(tmp_path):
    pickle_bytes = state_dict({"w": tensor("FloatStorage", "0", 4, (2, 2), (2, 1), offset=3)})
    torch_zip(tmp_path / "view.bin", pickle_bytes, {"0": [b"\x00" * 16]})
    refused(tmp_path / "view.bin", "tensor 'w': its view reaches byte 28 of a storage of 16 bytes")


def test_zero_strides_cannot_expand_beyond_the_file(tmp_path):
    size = 2**40
    pickle_bytes = state_dict({"w": tensor("FloatStorage", "0", 1, (size,), (0,))})
    torch_zip(tmp_path / "expand.bin", pickle_bytes, {"0": [b"\x00" * 4]})
    refused(tmp_path / "expand.bin", "expanded from a storage of 4 bytes")


def test_storage_key_without_a_record_is_refused(tmp_path):
    torch_zip(
        tmp_path / "nodata.bin", state_dict({"w": tensor("FloatStorage", "7", 1, (1,), (1,))}), {}
    )
    refused(tmp_path / "nodata.bin", "storage record archive/data/7 is missing")


def test_one_storage_described_with_two_types_is_refused(tmp_path):
    pickle_bytes = state_dict(
        {
            "a": tensor("FloatStorage", "0", 2, (2,), (1,)),
            "b": tensor("IntStorage", "0", 2, (2,), (1,)),
        }
    )
    torch_zip(tmp_path / "twice.bin", pickle_bytes, {"0": [b"\x00" * 8]})
    refused(tmp_path / "twice.bin", "described twice")


def test_quantized_storages_are_refused(tmp_path):
    torch_zip(
        tmp_path / "q.bin",
        state_dict({"w": tensor("QInt8Storage", "0", 1, (1,), (1,))}),
        {"0": [b"\x00"]},
    )
    refused(tmp_path / "q.bin", "global 'torch.QInt8Storage' is not allowed")


def test_storage_classes_and_dtypes_are_not_interchangeable(tmp_path):
    """Both name a dtype, but torch fails on either in the other's place, so we refuse it."""
    torch_zip(
        tmp_path / "dtype-as-storage.bin",
        state_dict({"w": tensor("float32", "0", 1, (1,), (1,))}),
        {"0": [bytes(4)]},
    )
    refused(tmp_path / "dtype-as-storage.bin", "torch.float32 is not a torch storage class")

    for name, dtype in [("v3.bin", "float16"), ("storage-as-dtype.bin", "HalfStorage")]:
        pickle_bytes = state_dict({"w": tensor("FloatStorage", "0", 1, (1,), (1,), dtype=dtype)})
        torch_zip(tmp_path / name, pickle_bytes, {"0": [bytes(4)]})
    assert ggml_py.open_checkpoint(tmp_path / "v3.bin")["w"].dtype == "float16"
    refused(tmp_path / "storage-as-dtype.bin", "_rebuild_tensor_v3 needs a torch dtype")


def test_missing_data_pkl_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "nopickle.bin", "w") as archive:
        archive.writestr("archive/byteorder", b"little")
        archive.writestr("archive/data/0", b"\x00" * 4)
    refused(tmp_path / "nopickle.bin", "no archive/data.pkl in the archive")


def test_torchscript_archive_is_refused():
    refused(FIXTURES / "torchscript.pt", "TorchScript archive")


def test_unknown_byteorder_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "order.bin", "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}.")
        archive.writestr("archive/byteorder", b"middle")
    refused(tmp_path / "order.bin", "byteorder record is b'middle'")


@pytest.mark.parametrize("name", ["dtypes.pt", "legacy.pt", "dtypes.safetensors"])
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.999])
def test_truncated_files_are_refused(tmp_path, name, fraction):
    data = (FIXTURES / name).read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: int(len(data) * fraction)])
    refused(path)


def forge_uncompressed_size(path, name: str, size: int) -> None:
    """Rewrite the uncompressed size a zip records for ``name`` (local and central headers)."""
    data = bytearray(path.read_bytes())
    encoded = name.encode()
    for signature, name_at, size_at in ((b"PK\x03\x04", 30, 22), (b"PK\x01\x02", 46, 24)):
        start = data.find(signature)
        while start >= 0:
            if data[start + name_at : start + name_at + len(encoded)] == encoded:
                data[start + size_at : start + size_at + 4] = struct.pack("<I", size)
            start = data.find(signature, start + 1)
    path.write_bytes(bytes(data))


def deflated_archive(path, pickle_bytes: bytes, record: bytes) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", pickle_bytes)
        archive.writestr("archive/data/0", record)


def test_zip_bomb_records_are_refused_before_decompressing(tmp_path):
    claimed = 2**31
    path = tmp_path / "bomb.bin"
    deflated_archive(
        path,
        state_dict({"w": tensor("ByteStorage", "0", claimed, (claimed,), (1,))}),
        b"\x00" * 1000,
    )
    forge_uncompressed_size(path, "archive/data/0", claimed)
    refused(path, rf"archive/data/0 claims {claimed} bytes from \d+ compressed bytes")


def test_compressed_pickle_larger_than_the_file_is_refused(tmp_path):
    path = tmp_path / "bomb.bin"
    deflated_archive(path, b"\x80\x02}.", b"")
    forge_uncompressed_size(
        path, "archive/data.pkl", 2000
    )  # within deflate's 1032:1, beyond the file
    refused(path, "archive/data.pkl claims 2000 bytes, more than the whole file")


def test_unknown_compression_method_is_refused_before_reading(tmp_path):
    path = tmp_path / "odd.bin"
    deflated_archive(path, b"\x80\x02}.", b"")
    data = bytearray(path.read_bytes())
    # compression method field: offset 8 of a local header, 10 of a central directory header
    for signature, method_at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        start = data.find(signature)
        while start >= 0:
            data[start + method_at : start + method_at + 2] = struct.pack("<H", 99)
            start = data.find(signature, start + 1)
    path.write_bytes(bytes(data))
    refused(path, "archive/data.pkl uses zip compression method 99, which is not supported")


def pickle_in_zip(tmp_path, body: bytes):
    torch_zip(tmp_path / "p.bin", b"\x80\x02" + body, {})
    return tmp_path / "p.bin"


def test_huge_string_lengths_are_refused(tmp_path):
    refused(
        pickle_in_zip(tmp_path, b"X\xf0\xff\xff\xff" + b"a" * 10 + b"."),
        "string of 4294967280 bytes exceeds",
    )
    refused(pickle_in_zip(tmp_path, b"X\x00\x00\x10\x00" + b"a" * 10 + b"."), "truncated")
    refused(pickle_in_zip(tmp_path, b"\x8d" + b"\xff" * 8 + b"."), "exceeds the limit")


def test_huge_integers_are_refused(tmp_path):
    refused(pickle_in_zip(tmp_path, b"\x8b\x00\x00\x00\x10" + b"."), "integer of 268435456 bytes")


def test_deep_nesting_is_refused(tmp_path):
    refused(pickle_in_zip(tmp_path, b"(" * 100_000 + b"."), "more than 100 nested MARKs")


def test_deeply_nested_lists_are_harmless(tmp_path):
    depth = 200_000
    refused(
        pickle_in_zip(tmp_path, b"]" * depth + b"a" * (depth - 1) + b"."),
        "holds a list, not a dict",
    )


def test_memo_bomb_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(_unpickler, "MAX_MEMO", 1000)
    body = b"N" + b"".join(b"r" + struct.pack("<I", index) for index in range(1001))
    refused(pickle_in_zip(tmp_path, body + b"."), "more than 1000 memo entries")


def test_stack_size_counts_every_mark_level(tmp_path, monkeypatch):
    monkeypatch.setattr(_unpickler, "MAX_STACK", 1000)
    refused(
        pickle_in_zip(tmp_path, b"N" * 600 + b"(" + b"N" * 600 + b"."),
        "more than 1000 items on the stack",
    )


def test_exponential_structures_never_get_hashed_or_walked(tmp_path):
    # Each level is a pair of references to the level below: 2**200 leaves if anything walked it.
    levels = b")" + b"".join(b"q\x000h\x00h\x00\x86" for _ in range(200))
    refused(
        pickle_in_zip(tmp_path, b"}" + levels + b"K\x01s."),
        "dict key a tuple is not a string or number",
    )
    storage_id = op_tuple(
        [
            op_str("storage"),
            op_global("torch", "FloatStorage"),
            op_str("0"),
            op_str("cpu"),
            op_int(1),
        ]
    )
    rebuild_arguments = [storage_id + b"Q", op_int(0), levels, op_tuple([op_int(1)]), b"\x89", b"}"]
    bomb = op_global("torch._utils", "_rebuild_tensor_v2") + op_tuple(rebuild_arguments) + b"R"
    torch_zip(tmp_path / "shape.bin", state_dict({"w": bomb}), {"0": [b"\x00" * 4]})
    refused(tmp_path / "shape.bin", "tensor 'w': shape must hold integers")


def test_stack_underflow_and_unbalanced_streams_are_refused(tmp_path):
    refused(pickle_in_zip(tmp_path, b"t."), "no MARK")
    refused(pickle_in_zip(tmp_path, b"R."), "stack underflow")
    refused(pickle_in_zip(tmp_path, b"NN."), "unbalanced stack")
    refused(pickle_in_zip(tmp_path, b"}"), "no STOP")
    refused(pickle_in_zip(tmp_path, b"h\x05."), "memo entry 5 was never stored")


def test_legacy_counts_must_match_the_pickle(tmp_path):
    storage_id = op_tuple(
        [
            op_str("storage"),
            op_global("torch", "FloatStorage"),
            op_str("140"),
            op_str("cpu"),
            op_int(2),
            b"N",
        ]
    )
    tensor_call = (
        op_global("torch._utils", "_rebuild_tensor_v2")
        + op_tuple(
            [
                storage_id + b"Q",
                op_int(0),
                op_tuple([op_int(2)]),
                op_tuple([op_int(1)]),
                b"\x89",
                b"}",
            ]
        )
        + b"R"
    )
    objects = b"\x80\x02}(" + op_str("w") + tensor_call + b"u."
    keys = pickle.dumps(["140"], protocol=2)
    good = LEGACY_HEADER + objects + keys + struct.pack("<q", 2) + struct.pack("<2f", 1.5, -2.0)
    (tmp_path / "good.pt").write_bytes(good)
    assert ggml_py.load_state_dict(tmp_path / "good.pt")["w"].tolist() == [1.5, -2.0]
    (tmp_path / "count.pt").write_bytes(good.replace(struct.pack("<q", 2), struct.pack("<q", 3)))
    refused(tmp_path / "count.pt", "storage '140' holds 3 elements, the pickle says 2")
    (tmp_path / "short.pt").write_bytes(good[:-1])
    refused(tmp_path / "short.pt", "runs past the end of the file")
    (tmp_path / "keys.pt").write_bytes(good.replace(keys, pickle.dumps(["141"], protocol=2)))
    refused(tmp_path / "keys.pt", "storage keys and tensors disagree")


def test_legacy_storage_views_read_their_slice(tmp_path):
    # Pre-1.0 torch wrote views as (view key, element offset, element count) of a root storage.
    view = op_tuple([op_str("v1"), op_int(1), op_int(2)])
    storage_id = op_tuple(
        [
            op_str("storage"),
            op_global("torch", "IntStorage"),
            op_str("9"),
            op_str("cpu"),
            op_int(4),
            view,
        ]
    )
    tensor_call = (
        op_global("torch._utils", "_rebuild_tensor_v2")
        + op_tuple(
            [
                storage_id + b"Q",
                op_int(0),
                op_tuple([op_int(2)]),
                op_tuple([op_int(1)]),
                b"\x89",
                b"}",
            ]
        )
        + b"R"
    )
    blob = struct.pack("<q", 4) + struct.pack("<4i", 10, 11, 12, 13)
    path = tmp_path / "views.pt"
    path.write_bytes(
        LEGACY_HEADER
        + b"\x80\x02}("
        + op_str("w")
        + tensor_call
        + b"u."
        + pickle.dumps(["9"], protocol=2)
        + blob
    )
    assert ggml_py.load_state_dict(path)["w"].tolist() == [11, 12]


def safetensors_file(tmp_path, header: bytes, data: bytes = b"", name="bad.safetensors"):
    path = tmp_path / name
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


@pytest.mark.parametrize(
    "header, data, match",
    [
        (
            b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}',
            b"\x00" * 7,
            "cover 8 data bytes but the file holds 7",
        ),
        (
            b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}',
            b"\x00" * 9,
            "cover 8 data bytes but the file holds 9",
        ),
        (
            b'{"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}',
            b"\x00" * 8,
            "8 bytes do not hold F32",
        ),
        (
            b'{"a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}, '
            b'"b": {"dtype": "F16", "shape": [2], "data_offsets": [2, 6]}}',
            b"\x00" * 6,
            "invalid offset for tensor 'b'",
        ),
        (
            b'{"a": {"dtype": "F16", "shape": [1], "data_offsets": [2, 4]}}',
            b"\x00" * 4,
            "starts at 2, expected 0",
        ),
        (
            b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
            b'"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}',
            b"\x00" * 4,
            "the name 'a' twice",
        ),
        (
            b'{"a": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}}',
            b"\x00",
            "dtype 'Q4' is not supported",
        ),
        (
            b'{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}',
            b"\x00" * 4,
            "non-negative integers",
        ),
        (
            b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}',
            b"\x00" * 4,
            "begin <= end",
        ),
        (b'{"__metadata__": {"format": 1}}', b"", "must map strings to strings"),
        (b'{"a": [1, 2', b"", "not valid JSON"),
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", b"", "not valid JSON"),
        (b'{"a": 1' + b"0" * 5000 + b"}", b"", "not valid JSON: a number of more than 4300"),
        (b" " * 2000 + b"[]", b"", "not a JSON object"),
    ],
)
def test_safetensors_validation(tmp_path, header, data, match):
    refused(safetensors_file(tmp_path, header, data), match)


def test_safetensors_header_limits(tmp_path):
    path = tmp_path / "large.safetensors"
    path.write_bytes(struct.pack("<Q", 100_000_001) + b"{" + b" " * 100)
    refused(path, "not a checkpoint")
    path.write_bytes(struct.pack("<Q", 1000) + b'{"a": 1}')
    refused(path, "safetensors header of 1000 bytes runs past the end of the file")


def test_safetensors_empty_and_scalar_tensors(tmp_path):
    header = (
        b'{"s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}, '
        b'"e": {"dtype": "F16", "shape": [0, 5], "data_offsets": [4, 4]}, "__metadata__": {"format": "pt"}}'
    )
    path = safetensors_file(tmp_path, header, struct.pack("<f", 3.5), "ok.safetensors")
    state = ggml_py.load_state_dict(path)
    assert float(state["s"]) == 3.5 and state["e"].shape == (0, 5)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "empty file"),
        (b"hello world, not weights", r"unknown format, first bytes 68 65 6c 6c 6f 20 77 6f"),
        (b"\x00" * 257 + b"ustar" + b"\x00" * 300, "tar checkpoint from torch < 0.4"),
    ],
)
def test_unknown_files_are_refused(tmp_path, content, match):
    (tmp_path / "x.bin").write_bytes(content)
    refused(tmp_path / "x.bin", match)


def test_missing_path_is_a_checkpoint_error(tmp_path):
    refused(tmp_path / "nothing.bin", "no such file or folder")


def test_index_with_paths_outside_the_folder_is_refused(tmp_path):
    (tmp_path / "pytorch_model.bin.index.json").write_text('{"weight_map": {"w": "../secret.bin"}}')
    refused(tmp_path, "shard '../secret.bin' is not a file inside the folder")
