"""Torch-style checkpoints built without torch, opcode by opcode.

Golden data comes from the real ``torch.save`` (scripts/make_checkpoint_fixtures.py). These
builders exist for what torch never writes: hostile globals, wrong element counts, truncated
streams, and the benchmark's 2 GB file. The layout follows torch's own pickles: a dict of
``_rebuild_tensor_v2(persistent storage id, offset, size, stride, False, OrderedDict())``.

>>> state_dict({"w": tensor("HalfStorage", "0", 4, (2, 2), (2, 1))})[:2]
b'\\x80\\x02'
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterable, Sequence


def op_global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def op_str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def op_int(value: int) -> bytes:
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def op_tuple(items: Sequence[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t"


def tensor(
    storage_class: str,
    key: str,
    numel: int,
    shape: Sequence[int],
    strides: Sequence[int],
    offset: int = 0,
    dtype: str | None = None,
) -> bytes:
    """One ``_rebuild_tensor_v2`` call on storage ``data/<key>`` of ``numel`` elements, or with
    ``dtype`` (a ``torch`` global) ``_rebuild_tensor_v3``, which takes the dtype last."""
    storage_id = op_tuple(
        [
            op_str("storage"),
            op_global("torch", storage_class),
            op_str(key),
            op_str("cpu"),
            op_int(numel),
        ]
    )
    hooks = op_global("collections", "OrderedDict") + b")R"
    arguments = [
        storage_id + b"Q",
        op_int(offset),
        op_tuple([op_int(size) for size in shape]),
        op_tuple([op_int(stride) for stride in strides]),
        b"\x89",
        hooks,
    ]
    if dtype is None:
        return op_global("torch._utils", "_rebuild_tensor_v2") + op_tuple(arguments) + b"R"
    arguments.append(op_global("torch", dtype))
    return op_global("torch._utils", "_rebuild_tensor_v3") + op_tuple(arguments) + b"R"


def state_dict(entries: dict[str, bytes]) -> bytes:
    """A protocol-2 pickle of a dict name -> object (each object already encoded)."""
    items = b"".join(op_str(name) + value for name, value in entries.items())
    return b"\x80\x02}(" + items + b"u."


def torch_zip(
    path, data_pkl: bytes, records: dict[str, Iterable[bytes]], prefix: str = "archive"
) -> None:
    """A zip archive laid out like torch's: data.pkl, byteorder, then data/<key> records,
    each written from its chunks (so a record can be larger than memory)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{prefix}/data.pkl", data_pkl)
        archive.writestr(f"{prefix}/byteorder", b"little")
        for key, chunks in records.items():
            with archive.open(f"{prefix}/data/{key}", "w", force_zip64=True) as record:
                for chunk in chunks:
                    record.write(chunk)
