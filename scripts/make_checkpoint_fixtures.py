"""Write the checkpoint fixtures of tests/test_checkpoint_*.py with the real torch and safetensors.

Run by hand with the generator environment (torch, safetensors, transformers):

    /work/venv-gen/bin/python scripts/make_checkpoint_fixtures.py

Every checkpoint is written by ``torch.save``, ``torch.jit.save``, ``safetensors.torch.save_file``
or transformers' ``save_pretrained``. Three are then rewritten as a user or another tool would,
and each rewrite is checked by loading it back with ``torch.load``:

- ``big_endian.pt``: torch writes its host's byte order (``byteorder`` record) and this machine
  is little-endian, so the ``byteorder`` record is set to ``big`` and every storage byte-swapped
  element by element (complex numbers per component); torch.load must return the originals.
- ``compressed.pt``: ``dtypes.pt`` re-zipped with deflate (torch itself never compresses).
- ``sharded_bin/``: transformers 5 writes only safetensors, so the ``.bin`` shards are
  ``torch.save`` of the same split as ``sharded_safetensors/``, with an index written like
  transformers writes its own (``indent=2, sort_keys=True``).

For every checkpoint ``X`` the expected arrays go to ``X.npz``: one array per tensor, taken from
the torch tensors with ``.numpy()`` (bfloat16 and float8 as their integer bit patterns via
``Tensor.view``), plus ``__dtypes__``, a JSON map of tensor name -> torch dtype name.

All outputs are deterministic except ``legacy.pt``, whose storage keys are memory addresses
(``str(storage._cdata)``, as torch's legacy writer does).
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import pathlib
import shutil
import zipfile

import numpy as np
import safetensors.torch
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "fixtures" / "checkpoints"
TINY_GPTJ = REPO / "examples" / "tiny-gptj" / "pytorch_model.bin"

STORAGE_DTYPES = [
    torch.float64,
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
    torch.complex64,
    torch.complex128,
]
# dtypes without a legacy storage class: saved as UntypedStorage + _rebuild_tensor_v3.
UNTYPED_DTYPES = [
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.float8_e4m3fnuz,
    torch.float8_e5m2fnuz,
    torch.float8_e8m0fnu,
    torch.uint16,
    torch.uint32,
    torch.uint64,
]


def sample(dtype: torch.dtype, shape, generator: torch.Generator) -> torch.Tensor:
    """Varied values of ``dtype``: normals (with sign and fractions) for floats, full-range ints."""
    if dtype == torch.bool:
        return torch.rand(shape, generator=generator) > 0.5
    if dtype.is_complex:
        return torch.randn(shape, dtype=dtype, generator=generator) * 10
    if dtype.is_floating_point:
        values = torch.randn(shape, generator=generator, dtype=torch.float64) * 3
        return values.abs().to(dtype) if dtype == torch.float8_e8m0fnu else values.to(dtype)
    info = torch.iinfo(dtype)
    low, high = max(info.min, -(2**62)), min(info.max, 2**62)
    return torch.randint(low, high, shape, generator=generator, dtype=torch.int64).to(dtype)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """The tensor's values as NumPy: ml_dtypes types as their bit patterns."""
    tensor = tensor.detach().contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy()
    if tensor.dtype.is_floating_point and tensor.dtype.itemsize == 1:
        return tensor.view(torch.uint8).numpy()
    return tensor.numpy()


def dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def write_expected(name: str, tensors: dict) -> None:
    arrays = {key: to_numpy(value) for key, value in tensors.items()}
    arrays["__dtypes__"] = np.array(
        json.dumps({key: dtype_name(value) for key, value in tensors.items()})
    )
    np.savez(OUT / f"{name}.npz", **arrays)


def check_loads_back(path: pathlib.Path, tensors: dict, unwrap=lambda loaded: loaded) -> None:
    loaded = unwrap(torch.load(path, weights_only=True))
    assert list(loaded) == list(tensors), path
    for key, tensor in tensors.items():
        assert loaded[key].dtype == tensor.dtype and loaded[key].shape == tensor.shape, (path, key)
        assert to_numpy(loaded[key]).tobytes() == to_numpy(tensor).tobytes(), (path, key)


def save(name: str, obj: object, tensors: dict, **options) -> pathlib.Path:
    """torch.save ``obj`` to ``OUT/name`` (a path, so the archive folder is the file's stem)."""
    path = OUT / name
    torch.save(obj, path, **options)
    write_expected(name, tensors)
    return path


def rewrite_zip(
    source: pathlib.Path, target: pathlib.Path, compression: int, edit=lambda name, data: data
) -> None:
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            entry = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = compression
            new.writestr(entry, edit(info.filename, old.read(info)))


def make_dtypes(generator: torch.Generator) -> None:
    tensors = {
        f"t_{dtype_name(torch.empty(0, dtype=d))}": sample(d, (3, 5), generator)
        for d in STORAGE_DTYPES
    }
    path = save("dtypes.pt", tensors, tensors)
    compressed = OUT / "compressed.pt"
    rewrite_zip(path, compressed, zipfile.ZIP_DEFLATED)
    check_loads_back(compressed, tensors)
    write_expected("compressed.pt", tensors)


def make_untyped(generator: torch.Generator) -> None:
    tensors = {
        f"t_{dtype_name(torch.empty(0, dtype=d))}": sample(d, (4, 3), generator)
        for d in UNTYPED_DTYPES
    }
    buffer = io.BytesIO()  # a stream: torch names the archive folder "archive/"
    torch.save(tensors, buffer)
    (OUT / "untyped_v3.pt").write_bytes(buffer.getvalue())
    write_expected("untyped_v3.pt", tensors)


def make_parameters(generator: torch.Generator) -> None:
    plain = torch.nn.Parameter(sample(torch.float32, (2, 3), generator))
    with_state = torch.nn.Parameter(sample(torch.float16, (4,), generator), requires_grad=False)
    with_state.note = "a Python attribute makes torch use _rebuild_parameter_with_state"
    tagged = sample(torch.float32, (3,), generator)
    tagged.note = "a Python attribute makes torch use _rebuild_from_type_v2"
    tensors = {"plain": plain, "with_state": with_state, "tagged": tagged}
    save("parameters.pt", tensors, tensors)


def small_module(generator: torch.Generator) -> torch.nn.Module:
    module = torch.nn.Sequential(
        torch.nn.Linear(4, 3), torch.nn.LayerNorm(3), torch.nn.Linear(3, 2, bias=False)
    )
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(sample(torch.float32, parameter.shape, generator))
    return module


def make_state_dicts(generator: torch.Generator) -> None:
    state_dict = small_module(generator).state_dict()
    assert isinstance(state_dict, collections.OrderedDict) and state_dict._metadata
    save("state_dict_metadata.pt", state_dict, state_dict)
    model = {"model": state_dict, "epoch": 3, "optimizer": {"lr": 0.125, "betas": (0.9, 0.999)}}
    path = save("nested_model.pt", model, state_dict)
    check_loads_back(path, state_dict, lambda loaded: loaded["model"])
    lightning = {"state_dict": state_dict, "global_step": 7, "hyper_parameters": {"name": "tiny"}}
    path = save("nested_state_dict.pt", lightning, state_dict)
    check_loads_back(path, state_dict, lambda loaded: loaded["state_dict"])


def view_tensors(generator: torch.Generator) -> dict:
    """Tensors sharing storages, with offsets, non-contiguous strides, expansion and 0-d."""
    w = sample(torch.float16, (3, 4), generator)
    base = sample(torch.int32, (2, 3, 4), generator)
    return {
        "a.weight": w,
        "rows": w[1:],  # storage offset 4
        "transposed": w.t(),  # strides (1, 4)
        "column": w[:, 1],  # offset 1, stride 4
        "same_object": w,  # the same tensor under a second name
        "permuted": base.permute(2, 0, 1),
        "sliced": base[:, 1:, ::2],  # offset and a step
        "expanded": sample(torch.float32, (1, 4), generator).expand(3, 4),  # stride 0
        "scalar": torch.tensor(2.5, dtype=torch.bfloat16),
        "scalar_f64": torch.tensor(-1.0e-3, dtype=torch.float64),
        "empty": torch.zeros((0, 3), dtype=torch.float32),
    }


def make_views(generator: torch.Generator) -> None:
    tensors = view_tensors(generator)
    path = save("views.pt", tensors, tensors)
    check_loads_back(path, tensors)
    legacy = dict(
        tensors,
        **{
            f"t_{dtype_name(torch.empty(0, dtype=d))}": sample(d, (2, 3), generator)
            for d in STORAGE_DTYPES
        },
    )
    path = save("legacy.pt", legacy, legacy, _use_new_zipfile_serialization=False)
    check_loads_back(path, legacy)


def make_big_endian(generator: torch.Generator) -> None:
    w = sample(torch.float32, (3, 4), generator)
    tensors = {
        "f32": w,
        "f32_transposed": w.t(),
        "f64": sample(torch.float64, (2, 2), generator),
        "f16": sample(torch.float16, (5,), generator),
        "bf16": sample(torch.bfloat16, (2, 3), generator),
        "i64": sample(torch.int64, (3,), generator),
        "i16": sample(torch.int16, (3,), generator),
        "c64": sample(torch.complex64, (2,), generator),
        "u8": sample(torch.uint8, (4,), generator),
        "scalar": torch.tensor(-7.25, dtype=torch.float32),
    }
    little = OUT / "big_endian.tmp"  # torch names the archive folder after the stem: big_endian/
    torch.save(tensors, little)
    # Storage keys are handed out in first-seen order of the storages; f32_transposed shares f32's.
    key_by_storage = {}
    unit_by_key = {}
    for tensor in tensors.values():
        storage = tensor.untyped_storage().data_ptr()
        if storage not in key_by_storage:
            key_by_storage[storage] = key = str(len(key_by_storage))
            unit_by_key[key] = (
                tensor.dtype.itemsize // 2 if tensor.dtype.is_complex else tensor.dtype.itemsize
            )

    def swap(name: str, data: bytes) -> bytes:
        folder, _, record = name.partition("/")
        if record == "byteorder":
            return b"big"
        if record.startswith("data/"):
            unit = unit_by_key[record[len("data/") :]]
            return np.frombuffer(data, dtype=f"<u{unit}").byteswap().tobytes() if unit > 1 else data
        return data

    path = OUT / "big_endian.pt"
    rewrite_zip(little, path, zipfile.ZIP_STORED, swap)
    little.unlink()
    check_loads_back(path, tensors)  # torch swaps 'big' records back on this little-endian host
    write_expected("big_endian.pt", tensors)


def make_safetensors(generator: torch.Generator) -> None:
    tensors = {
        f"t_{dtype_name(torch.empty(0, dtype=d))}": sample(d, (2, 3), generator)
        for d in STORAGE_DTYPES
        if not d.is_complex
    }
    tensors.update(
        {
            f"t_{dtype_name(torch.empty(0, dtype=d))}": sample(d, (3,), generator)
            for d in UNTYPED_DTYPES
        }
    )
    tensors["scalar"] = torch.tensor(0.5, dtype=torch.bfloat16)
    tensors["empty"] = torch.zeros((2, 0), dtype=torch.float16)
    safetensors.torch.save_file(tensors, OUT / "dtypes.safetensors", metadata={"format": "pt"})
    write_expected("dtypes.safetensors", tensors)


def make_shards() -> None:
    import transformers

    torch.manual_seed(1234)
    config = transformers.GPTJConfig(
        vocab_size=64,
        n_positions=16,
        n_embd=16,
        n_layer=2,
        n_head=2,
        rotary_dim=4,
        initializer_range=0.3,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = transformers.GPTJForCausalLM(config)
    folder = OUT / "sharded_safetensors"
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder, max_shard_size="12KB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    state_dict = model.state_dict()
    tensors = {name: state_dict[name] for name in sorted(index["weight_map"])}
    write_expected("sharded_safetensors", tensors)

    bin_folder = OUT / "sharded_bin"
    shutil.rmtree(bin_folder, ignore_errors=True)
    bin_folder.mkdir()
    shards = sorted(set(index["weight_map"].values()))
    weight_map = {}
    for number, shard in enumerate(shards, 1):
        shard_name = f"pytorch_model-{number:05d}-of-{len(shards):05d}.bin"
        part = {
            name: tensors[name].contiguous()
            for name, file in index["weight_map"].items()
            if file == shard
        }
        torch.save(part, bin_folder / shard_name)
        weight_map.update({name: shard_name for name in part})
    bin_index = {"metadata": index["metadata"], "weight_map": weight_map}
    (bin_folder / "pytorch_model.bin.index.json").write_text(
        json.dumps(bin_index, indent=2, sort_keys=True) + "\n"
    )
    write_expected("sharded_bin", tensors)


def make_torchscript() -> None:
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 1)), OUT / "torchscript.pt")


def make_tiny_gptj_digests() -> None:
    """Per-tensor sha256 of the shipped model's raw bytes, as torch reads them."""
    state_dict = torch.load(TINY_GPTJ, weights_only=True)
    digests = {
        name: {
            "dtype": dtype_name(tensor),
            "shape": list(tensor.shape),
            "sha256": hashlib.sha256(to_numpy(tensor).tobytes()).hexdigest(),
        }
        for name, tensor in state_dict.items()
    }
    (OUT / "tiny-gptj-sha256.json").write_text(json.dumps(digests, indent=1) + "\n")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(2024)
    make_dtypes(generator)
    make_untyped(generator)
    make_parameters(generator)
    make_state_dicts(generator)
    make_views(generator)
    make_big_endian(generator)
    make_safetensors(generator)
    make_shards()
    make_torchscript()
    make_tiny_gptj_digests()
    total = sum(path.stat().st_size for path in OUT.rglob("*") if path.is_file())
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
