"""Which reader a path needs: a file's format from its first bytes, and Hugging Face folders.

Formats are recognised by content, never by extension: ``PK\\x03\\x04`` is a torch zip archive,
a pickle PROTO opcode a legacy torch stream, a small little-endian length followed by ``{`` a
safetensors file. A Git LFS pointer (a clone without ``git lfs pull``) gets its own message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from ggml_py.checkpoint._safetensors import looks_like_safetensors, read_safetensors
from ggml_py.checkpoint._tensor import LazyTensor, describe
from ggml_py.checkpoint._torch import read_legacy, read_zip
from ggml_py.errors import CheckpointError

# (single file, index of shards) in transformers' order of preference: safetensors first.
WEIGHT_FILES = (
    ("model.safetensors", "model.safetensors.index.json"),
    ("pytorch_model.bin", "pytorch_model.bin.index.json"),
)
MAX_INDEX_SIZE = 1 << 26
_LFS_POINTER = b"version https://git-lfs"


def read_path(path: str) -> dict[str, LazyTensor]:
    """The tensors of a checkpoint file or Hugging Face folder."""
    if os.path.isdir(path):
        return read_folder(path)
    if not os.path.exists(path):
        raise CheckpointError(path, "no such file or folder")
    return read_file(path)


def read_file(path: str) -> dict[str, LazyTensor]:
    try:
        file_size = os.path.getsize(path)
        with open(path, "rb") as file:
            head = file.read(1024)
        return _reader(path, head)(path, file_size)
    except OSError as error:
        raise CheckpointError(path, error.strerror or str(error)) from None


def _reader(path: str, head: bytes) -> Callable[[str, int], dict[str, LazyTensor]]:
    if head.startswith(b"PK\x03\x04"):
        return read_zip
    if head.startswith(b"\x80"):
        return read_legacy
    if looks_like_safetensors(head):
        return read_safetensors
    if head.startswith(_LFS_POINTER):
        raise CheckpointError(
            path, f"a Git LFS pointer{_lfs_size(head)}, not the weights: run `git lfs pull`"
        )
    if not head:
        raise CheckpointError(path, "empty file", 0)
    if head[257:262] == b"ustar":
        raise CheckpointError(path, "a tar checkpoint from torch < 0.4, which is not supported")
    raise CheckpointError(
        path, f"not a checkpoint (unknown format, first bytes {head[:8].hex(' ')})", 0
    )


def read_folder(folder: str) -> dict[str, LazyTensor]:
    for single, index in WEIGHT_FILES:
        if os.path.isfile(os.path.join(folder, single)):
            return read_file(os.path.join(folder, single))
        if os.path.isfile(os.path.join(folder, index)):
            return _read_shards(folder, os.path.join(folder, index))
    names = ", ".join(name for pair in WEIGHT_FILES for name in pair)
    raise CheckpointError(folder, f"no weights in the folder (looked for {names})")


def _read_shards(folder: str, index_path: str) -> dict[str, LazyTensor]:
    """All tensors of the shards an index lists; each shard is opened once and every name the
    index maps must be in the shard it names."""
    weight_map = _weight_map(index_path)
    shards = sorted(set(weight_map.values()))
    missing = [shard for shard in shards if not os.path.isfile(os.path.join(folder, shard))]
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise CheckpointError(index_path, f"missing shard files: {shown}")
    tensors: dict[str, LazyTensor] = {}
    found_in: dict[str, str] = {}
    for shard in shards:
        for name, tensor in read_file(os.path.join(folder, shard)).items():
            if name in found_in:
                raise CheckpointError(
                    os.path.join(folder, shard), f"tensor {name!r} is also in {found_in[name]}"
                )
            tensors[name] = tensor
            found_in[name] = shard
    for name, shard in weight_map.items():
        if found_in.get(name) != shard:
            raise CheckpointError(
                index_path, f"tensor {name!r} is mapped to {shard} but is not in it"
            )
    return tensors


def _weight_map(index_path: str) -> dict[str, str]:
    try:
        with open(index_path, "rb") as file:
            raw = file.read(MAX_INDEX_SIZE + 1)
    except OSError as error:
        raise CheckpointError(index_path, error.strerror or str(error)) from None
    if len(raw) > MAX_INDEX_SIZE:
        raise CheckpointError(index_path, f"index file larger than {MAX_INDEX_SIZE} bytes")
    try:
        index = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, RecursionError, ValueError) as error:
        raise CheckpointError(
            index_path, f"not a valid JSON index: {type(error).__name__}"
        ) from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(shard, str) for shard in weight_map.values()
    ):
        raise CheckpointError(
            index_path, "the index has no weight_map of tensor name -> shard file"
        )
    for shard in set(weight_map.values()):
        parts = shard.replace("\\", "/").split("/")
        if not shard or os.path.isabs(shard) or ".." in parts:
            raise CheckpointError(
                index_path, f"shard {describe(shard)} is not a file inside the folder"
            )
    return weight_map


def _lfs_size(pointer: bytes) -> str:
    for line in pointer.decode("utf-8", "replace").splitlines():
        key, _, value = line.partition(" ")
        if key == "size" and value.strip().isdigit():
            return f" to a {int(value)}-byte file"
    return ""
