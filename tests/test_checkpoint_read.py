"""Reading every checkpoint variant that torch, safetensors and transformers write.

The fixtures and their expected arrays come from scripts/make_checkpoint_fixtures.py, run with
the real torch; each tensor must come back with the same dtype, shape and bytes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import weakref
import zipfile

import ml_dtypes
import numpy as np
import pytest
from conftest import REPO

import ggml_py
from ggml_py.checkpoint._tensor import MappedStorage

FIXTURES = REPO / "tests" / "fixtures" / "checkpoints"
TORCH_FILES = [
    "dtypes.pt",
    "untyped_v3.pt",
    "parameters.pt",
    "state_dict_metadata.pt",
    "nested_model.pt",
    "nested_state_dict.pt",
    "views.pt",
    "big_endian.pt",
    "compressed.pt",
    "legacy.pt",
]
# These list tensors in file (offset) order; torch files keep the order of the pickled dict.
OTHER_CHECKPOINTS = ["dtypes.safetensors", "sharded_safetensors", "sharded_bin"]


def expected_tensors(name: str):
    with np.load(FIXTURES / f"{name}.npz") as expected:
        dtypes = json.loads(str(expected["__dtypes__"]))
        return {tensor: (dtypes[tensor], expected[tensor]) for tensor in dtypes}


def assert_same_tensors(checkpoint, expected) -> None:
    for name, (dtype, values) in expected.items():
        lazy = checkpoint[name]
        array = lazy.numpy()
        assert (str(lazy.dtype), lazy.shape, lazy.nbytes) == (dtype, values.shape, values.nbytes), (
            name
        )
        assert (str(array.dtype), array.shape) == (dtype, values.shape), name
        assert array.tobytes() == values.tobytes(), name


@pytest.mark.parametrize("name", TORCH_FILES + OTHER_CHECKPOINTS)
def test_every_variant_reads_exactly(name):
    checkpoint = ggml_py.open_checkpoint(FIXTURES / name)
    expected = expected_tensors(name)
    order = list if name in TORCH_FILES else sorted
    assert order(checkpoint) == order(expected)
    assert_same_tensors(checkpoint, expected)


def test_every_torch_storage_dtype_maps_to_its_numpy_dtype():
    checkpoint = ggml_py.open_checkpoint(FIXTURES / "dtypes.pt")
    assert {name: checkpoint[name].dtype for name in checkpoint} == {
        "t_float64": np.dtype("float64"),
        "t_float32": np.dtype("float32"),
        "t_float16": np.dtype("float16"),
        "t_bfloat16": np.dtype(ml_dtypes.bfloat16),
        "t_int64": np.dtype("int64"),
        "t_int32": np.dtype("int32"),
        "t_int16": np.dtype("int16"),
        "t_int8": np.dtype("int8"),
        "t_uint8": np.dtype("uint8"),
        "t_bool": np.dtype("bool"),
        "t_complex64": np.dtype("complex64"),
        "t_complex128": np.dtype("complex128"),
    }


def test_untyped_storages_use_the_rebuild_v3_dtype():
    checkpoint = ggml_py.open_checkpoint(FIXTURES / "untyped_v3.pt")
    assert checkpoint["t_float8_e4m3fn"].dtype == np.dtype(ml_dtypes.float8_e4m3fn)
    assert checkpoint["t_float8_e8m0fnu"].dtype == np.dtype(ml_dtypes.float8_e8m0fnu)
    assert checkpoint["t_uint64"].dtype == np.dtype("uint64")


def test_archive_folder_is_taken_from_the_file_not_its_name(tmp_path):
    # untyped_v3.pt was saved to a stream (folder "archive/"), dtypes.pt to a path ("dtypes/").
    assert zipfile.ZipFile(FIXTURES / "untyped_v3.pt").namelist()[0].startswith("archive/")
    assert zipfile.ZipFile(FIXTURES / "dtypes.pt").namelist()[0].startswith("dtypes/")
    copy = shutil.copy(FIXTURES / "dtypes.pt", tmp_path / "renamed.bin")
    assert list(ggml_py.open_checkpoint(copy)) == list(expected_tensors("dtypes.pt"))


def test_contiguous_stored_tensors_are_read_only_memory_maps():
    checkpoint = ggml_py.open_checkpoint(FIXTURES / "views.pt")
    weight = checkpoint["a.weight"].numpy()
    rows = checkpoint["rows"].numpy()
    assert isinstance(weight.base, np.memmap) and not weight.flags.writeable
    # Both views sit in the one mapping of storage 0, four elements apart.
    assert np.shares_memory(weight, rows)
    assert rows.__array_interface__["data"][0] - weight.__array_interface__["data"][0] == 4 * 2
    assert np.shares_memory(weight, checkpoint["same_object"].numpy())


def test_non_contiguous_views_are_fresh_c_ordered_copies():
    checkpoint = ggml_py.open_checkpoint(FIXTURES / "views.pt")
    weight = checkpoint["a.weight"].numpy()
    for name in ("transposed", "column", "permuted", "sliced", "expanded"):
        array = checkpoint[name].numpy()
        assert (
            array.flags.c_contiguous
            and array.flags.writeable
            and not np.shares_memory(array, weight)
        ), name
    np.testing.assert_array_equal(checkpoint["transposed"].numpy(), weight.T)
    np.testing.assert_array_equal(checkpoint["column"].numpy(), weight[:, 1])


def test_zero_dim_and_empty_tensors():
    checkpoint = ggml_py.open_checkpoint(FIXTURES / "views.pt")
    assert checkpoint["scalar"].shape == () and checkpoint["scalar"].numpy().shape == ()
    assert float(checkpoint["scalar"].numpy()) == 2.5
    assert checkpoint["empty"].shape == (0, 3) and checkpoint["empty"].numpy().size == 0


def test_big_endian_records_are_swapped_into_native_arrays():
    checkpoint = ggml_py.open_checkpoint(FIXTURES / "big_endian.pt")
    with zipfile.ZipFile(FIXTURES / "big_endian.pt") as archive:
        assert archive.read("big_endian/byteorder") == b"big"
    scalar = checkpoint["scalar"].numpy()
    assert scalar.dtype.isnative and float(scalar) == -7.25
    assert checkpoint["f32_transposed"].numpy().flags.writeable


def test_compressed_records_are_decompressed_fresh_arrays():
    with zipfile.ZipFile(FIXTURES / "compressed.pt") as archive:
        assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in archive.infolist())
    array = ggml_py.open_checkpoint(FIXTURES / "compressed.pt")["t_float32"].numpy()
    assert not isinstance(array.base, np.memmap) and not array.flags.writeable


@pytest.mark.parametrize("name", ["views.pt", "compressed.pt"])
def test_arrays_are_not_kept_alive_by_the_checkpoint(name):
    checkpoint = ggml_py.open_checkpoint(FIXTURES / name)
    tensor_name = next(iter(checkpoint))
    array = checkpoint[tensor_name].numpy()
    storage_bytes = weakref.ref(array.base)
    del array
    assert storage_bytes() is None  # the memory map or decompressed record is released
    assert (
        checkpoint[tensor_name].numpy().shape == checkpoint[tensor_name].shape
    )  # read again on demand


def test_opening_reads_no_tensor_data(tiny_model_dir, monkeypatch):
    loads = []
    original = MappedStorage._load
    monkeypatch.setattr(
        MappedStorage, "_load", lambda storage: loads.append(storage.offset) or original(storage)
    )
    checkpoint = ggml_py.open_checkpoint(tiny_model_dir)
    assert loads == []
    checkpoint["lm_head.bias"].numpy()
    assert len(loads) == 1


def test_lightning_and_training_checkpoints_are_unwrapped():
    assert list(ggml_py.open_checkpoint(FIXTURES / "nested_model.pt")) == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "2.weight",
    ]
    assert list(ggml_py.open_checkpoint(FIXTURES / "nested_state_dict.pt")) == list(
        ggml_py.open_checkpoint(FIXTURES / "state_dict_metadata.pt")
    )


def test_checkpoint_is_a_read_only_mapping():
    checkpoint = ggml_py.open_checkpoint(FIXTURES / "dtypes.pt")
    assert len(checkpoint) == 12 and "t_float16" in checkpoint
    with pytest.raises(TypeError):
        checkpoint["x"] = checkpoint["t_float16"]
    with pytest.raises(KeyError):
        checkpoint["missing"]


def test_folder_prefers_safetensors_like_transformers(tmp_path):
    shutil.copy(FIXTURES / "dtypes.safetensors", tmp_path / "model.safetensors")
    shutil.copy(FIXTURES / "legacy.pt", tmp_path / "pytorch_model.bin")
    assert sorted(ggml_py.open_checkpoint(tmp_path)) == sorted(
        expected_tensors("dtypes.safetensors")
    )
    (tmp_path / "model.safetensors").unlink()
    assert list(ggml_py.open_checkpoint(tmp_path)) == list(expected_tensors("legacy.pt"))


def test_folder_prefers_safetensors_shards_over_a_single_bin(tmp_path):
    folder = shutil.copytree(FIXTURES / "sharded_safetensors", tmp_path / "model")
    shutil.copy(FIXTURES / "legacy.pt", folder / "pytorch_model.bin")
    assert sorted(ggml_py.open_checkpoint(folder)) == sorted(
        expected_tensors("sharded_safetensors")
    )


def test_missing_shards_are_named(tmp_path):
    folder = shutil.copytree(FIXTURES / "sharded_bin", tmp_path / "model")
    (folder / "pytorch_model-00002-of-00004.bin").unlink()
    (folder / "pytorch_model-00004-of-00004.bin").unlink()
    with pytest.raises(ggml_py.CheckpointError) as error:
        ggml_py.open_checkpoint(folder)
    assert "pytorch_model.bin.index.json" in str(error.value)
    assert (
        "missing shard files: pytorch_model-00002-of-00004.bin, pytorch_model-00004-of-00004.bin"
        in str(error.value)
    )


def test_index_naming_a_tensor_its_shard_lacks_is_refused(tmp_path):
    folder = shutil.copytree(FIXTURES / "sharded_safetensors", tmp_path / "model")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"]["transformer.extra.weight"] = "model-00001-of-00004.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(
        ggml_py.CheckpointError, match="transformer.extra.weight.*model-00001-of-00004"
    ):
        ggml_py.open_checkpoint(folder)


def test_folder_without_weights_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ggml_py.CheckpointError, match="no weights in the folder"):
        ggml_py.open_checkpoint(tmp_path)


def test_git_lfs_pointer_says_the_weights_were_never_downloaded(tmp_path):
    pointer = tmp_path / "pytorch_model.bin"
    pointer.write_text(
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4faaf004527a2ba434b3aea1c6eeb61c85eb05daa02d9111647248fb0aad5f44\n"
        "size 13210322\n"
    )
    with pytest.raises(ggml_py.CheckpointError) as error:
        ggml_py.open_checkpoint(tmp_path)
    assert (
        str(error.value)
        == f"{pointer}: a Git LFS pointer to a 13210322-byte file, not the weights: run `git lfs pull`"
    )


def shipped_model_digests():
    return json.loads((FIXTURES / "tiny-gptj-sha256.json").read_text())


def assert_matches_torch_digests(state_dict) -> None:
    digests = shipped_model_digests()
    assert list(state_dict) == list(digests)
    for name, array in state_dict.items():
        expected = digests[name]
        assert (str(array.dtype), list(array.shape)) == (expected["dtype"], expected["shape"]), name
        assert hashlib.sha256(array.tobytes()).hexdigest() == expected["sha256"], name


def test_shipped_model_equals_what_torch_reads(tiny_model_dir):
    assert_matches_torch_digests(ggml_py.load_state_dict(tiny_model_dir))


def test_peer_model_equals_what_torch_saved(peer, expected):
    folder = peer / "tiny-gptj" / "hf"
    assert (
        sum(int(np.prod(shape)) for shape in (d["shape"] for d in shipped_model_digests().values()))
        == expected["model"]["n_parameters"]
    )
    assert_matches_torch_digests(ggml_py.load_state_dict(folder))
