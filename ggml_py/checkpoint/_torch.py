"""Checkpoints written by ``torch.save``: the zip archive (torch >= 1.6) and the legacy stream.

Both hold one object pickle whose tensors point at storages through persistent ids; the
pickle runs on ``_unpickler.unpickle``, never on ``pickle``. Opening reads the zip directory, the
pickle and the zip local headers (or the legacy blob counts), never the tensor data.
"""

from __future__ import annotations

import contextlib
import lzma
import mmap
import struct
import zipfile
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from ggml_py.checkpoint._tensor import LazyTensor, MappedStorage, Storage, describe
from ggml_py.checkpoint._unpickler import (
    DTypeName,
    RebuiltTensor,
    Refused,
    TypedStorage,
    unpickle,
)
from ggml_py.errors import CheckpointError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# Deflate cannot expand data by more than 1032:1; a record claiming more is a zip bomb.
_MAX_EXPANSION = 1032
# what zipfile can decompress; it would refuse any other method only once the record is read
_COMPRESSION_METHODS = (
    zipfile.ZIP_STORED,
    zipfile.ZIP_DEFLATED,
    zipfile.ZIP_BZIP2,
    zipfile.ZIP_LZMA,
)
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., file name length, extra length
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    RuntimeError,
    ValueError,
    OverflowError,
    struct.error,
    OSError,
)


def read_zip(path: str, file_size: int) -> dict[str, LazyTensor]:
    """The tensors of a torch zip archive (``torch.save`` since torch 1.6)."""
    with open(path, "rb") as file:
        with _zip_errors(path, file_size):
            archive = zipfile.ZipFile(file)
        records = {info.filename: info for info in archive.infolist()}
        prefix = _archive_prefix(path, archive.infolist())
        if f"{prefix}/constants.pkl" in records:
            raise CheckpointError(
                path, "a TorchScript archive (torch.jit.save), not a torch.save checkpoint"
            )
        pickle_info = records.get(f"{prefix}/data.pkl")
        if pickle_info is None:
            raise CheckpointError(path, f"no {prefix}/data.pkl in the archive")
        big_endian = (
            _byteorder(path, file, archive, records.get(f"{prefix}/byteorder"), file_size) == "big"
        )
        storages = _ZipStorages(path, file, records, prefix, file_size, big_endian)
        pickle_bytes, pickle_offset = _read_record(path, file, archive, pickle_info, file_size)
        origin = pickle_offset if pickle_info.compress_type == zipfile.ZIP_STORED else None
        root, _ = unpickle(pickle_bytes, 0, path, pickle_info.filename, storages.load, origin)
    return collect_tensors(path, root)


def read_legacy(path: str, file_size: int) -> dict[str, LazyTensor]:
    """The tensors of a legacy torch stream (``_use_new_zipfile_serialization=False``)."""
    with open(path, "rb") as file:
        data = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        magic, position = unpickle(data, 0, path, "magic number")
        if type(magic) is not int or magic != LEGACY_MAGIC:
            raise CheckpointError(
                path, "not a torch checkpoint: the first pickle is not torch's magic number", 0
            )
        version_offset = position
        version, position = unpickle(data, position, path, "protocol version")
        if type(version) is not int or version != LEGACY_PROTOCOL:
            reason = f"legacy protocol version {describe(version)} (only 1001 exists)"
            raise CheckpointError(path, reason, version_offset)
        system_info_offset = position
        system_info, position = unpickle(data, position, path, "sys_info")
        if type(system_info) is not dict:
            raise CheckpointError(
                path, f"sys_info is {describe(system_info)}, not a dict", system_info_offset
            )
        storages = _LegacyStorages(path, file_size)
        root, position = unpickle(data, position, path, "object pickle", storages.load)
        keys_offset = position
        keys, position = unpickle(data, position, path, "storage key list")
        storages.place(data, position, keys, keys_offset)
    finally:
        data.close()
    return collect_tensors(path, root)


def collect_tensors(path: str, root: object) -> dict[str, LazyTensor]:
    """The name -> tensor entries of the pickled object, unwrapping ``{"model": ...}`` and
    ``{"state_dict": ...}`` training checkpoints; entries that are not tensors are skipped."""
    state = root
    for _ in range(8):  # a bound, because a pickle can make a dict contain itself
        if not isinstance(state, dict) or any(
            isinstance(value, RebuiltTensor) for value in state.values()
        ):
            break
        inner = [state[key] for key in ("model", "state_dict") if isinstance(state.get(key), dict)]
        if not inner:
            break
        state = inner[0]
    if not isinstance(state, dict):
        raise CheckpointError(path, f"the pickle holds {describe(state)}, not a dict of tensors")
    tensors = {}
    for name, record in state.items():
        if isinstance(record, RebuiltTensor):
            if type(name) is not str:
                raise CheckpointError(path, f"tensor key {describe(name)} is not a string")
            tensors[name] = LazyTensor(
                name, record.storage, record.dtype, record.shape, record.strides, record.offset
            )
    return tensors


@contextlib.contextmanager
def _zip_errors(path: str, offset: int) -> Iterator[None]:
    """zipfile's errors as CheckpointError at ``offset``: the end of the file (where the zip
    directory is) while the archive is opened, else the record being read."""
    try:
        yield
    except CheckpointError:
        raise
    except _ZIP_ERRORS as error:
        raise CheckpointError(path, f"broken or truncated zip archive: {error}", offset) from None


def _archive_prefix(path: str, infos: list[zipfile.ZipInfo]) -> str:
    # torch names the folder after the file it wrote (or "archive" for a stream): never assume it.
    if not infos or "/" not in infos[0].filename:
        raise CheckpointError(path, "a zip archive without torch's top-level folder")
    return infos[0].filename.split("/", 1)[0]


def _data_offset(path: str, file: BinaryIO, info: zipfile.ZipInfo, file_size: int) -> int:
    """File offset of a record's data, from its *local* header (whose extra field, torch's
    alignment padding, differs from the central directory's)."""
    if not 0 <= info.header_offset <= file_size - _LOCAL_HEADER.size:
        # The faulty field is in the directory, at the end of the file (zipfile keeps no position).
        reason = f"the zip directory puts the header of {info.filename} at byte {info.header_offset}, outside the file"
        raise CheckpointError(path, reason, file_size)
    with _zip_errors(path, info.header_offset):
        file.seek(info.header_offset)
        header = file.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise CheckpointError(path, f"no zip local header for {info.filename}", info.header_offset)
    _, name_length, extra_length = _LOCAL_HEADER.unpack(header)
    offset = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
    if offset + info.compress_size > file_size:
        reason = f"{info.filename} runs past the end of the file (truncated?)"
        raise CheckpointError(path, reason, min(offset, file_size))
    return offset


def _checked_record(path: str, file: BinaryIO, info: zipfile.ZipInfo, file_size: int) -> int:
    """The file offset of a record's data, once its sizes are known to be safe to read: its stored
    bytes end within the file (zipfile would otherwise allocate the forged compressed size up
    front), a compressed record expands by at most deflate's 1032:1 and, like any record, to no
    more than the whole file (weights barely compress), so reading it costs at most about twice
    the file's size."""
    offset = _data_offset(path, file, info, file_size)
    if info.compress_type not in _COMPRESSION_METHODS:
        raise CheckpointError(
            path,
            f"{info.filename} uses zip compression method {info.compress_type}, "
            "which is not supported",
            info.header_offset,
        )
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        reason = f"{info.filename} is stored uncompressed but claims {info.file_size} bytes in {info.compress_size}"
        raise CheckpointError(path, reason, offset)
    if (
        info.compress_type != zipfile.ZIP_STORED
        and info.file_size > _MAX_EXPANSION * info.compress_size + 1024
    ):
        raise CheckpointError(
            path,
            f"{info.filename} claims {info.file_size} bytes from {info.compress_size} compressed bytes "
            f"(more than {_MAX_EXPANSION}:1, a zip bomb?)",
            offset,
        )
    if info.file_size > file_size:
        raise CheckpointError(
            path, f"{info.filename} claims {info.file_size} bytes, more than the whole file", offset
        )
    return offset


def _read_record(
    path: str, file: BinaryIO, archive: zipfile.ZipFile, info: zipfile.ZipInfo, file_size: int
) -> tuple[bytes, int]:
    """A small record read whole (data.pkl, byteorder), and the file offset of its data."""
    offset = _checked_record(path, file, info, file_size)
    with _zip_errors(path, offset):
        return archive.read(info), offset


def _byteorder(
    path: str,
    file: BinaryIO,
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo | None,
    file_size: int,
) -> str:
    if info is None:
        return "little"  # files from before torch 2.1 have no record; torch assumes little-endian
    value, offset = _read_record(path, file, archive, info, file_size)
    if value not in (b"little", b"big"):
        raise CheckpointError(
            path, f"byteorder record is {describe(value)}, not 'little' or 'big'", offset
        )
    return value.decode()


def _storage_id(pid: object, length: int) -> tuple[DTypeName, str, int, tuple]:
    """Check a storage persistent id: ('storage', storage type, key, location, numel, ...)."""
    if type(pid) is not tuple or not pid:
        raise Refused(f"persistent id {describe(pid)} is not a tuple")
    if pid[0] == "module":
        raise Refused(
            "a pickled nn.Module with its source code ('module' persistent id) is not allowed"
        )
    if pid[0] != "storage" or len(pid) != length:
        raise Refused(f"persistent id must be a {length}-tuple starting with 'storage'")
    _, storage_type, key, _location, numel = pid[:5]
    if not isinstance(storage_type, DTypeName) or not storage_type.is_storage_class:
        raise Refused(f"storage type {describe(storage_type)} is not a torch storage class")
    if type(key) is not str:
        raise Refused(f"storage key {describe(key)} is not a string")
    if type(numel) is not int or numel < 0:
        raise Refused(f"storage {key!r} has element count {describe(numel)}")
    return storage_type, key, numel, pid[5:]


def _same_storage(
    known: TypedStorage, storage_type: DTypeName, numel: int, key: str
) -> TypedStorage:
    if (
        known.dtype != storage_type.dtype
        or known.storage.nbytes != numel * storage_type.dtype.itemsize
    ):
        raise Refused(f"storage {key!r} is described twice with different types or sizes")
    return known


class _ZipEntryStorage(Storage):
    """A compressed record (a re-zipped archive): decompressed on each ``buffer()`` miss."""

    def __init__(
        self, path: str, info: zipfile.ZipInfo, record_offset: int, file_size: int, big_endian: bool
    ):
        super().__init__(path, info.file_size, file_size, big_endian)
        self._info = info
        self._record_offset = record_offset  # of the compressed bytes, for errors

    def _load(self) -> np.ndarray:
        with _zip_errors(self.path, self._record_offset), open(self.path, "rb") as file:
            with zipfile.ZipFile(file) as archive:
                return np.frombuffer(archive.read(self._info), dtype=np.uint8)


class _ZipStorages:
    """Resolves zip persistent ids to the ``<prefix>/data/<key>`` records, each key once."""

    def __init__(
        self,
        path: str,
        file: BinaryIO,
        records: dict[str, zipfile.ZipInfo],
        prefix: str,
        file_size: int,
        big_endian: bool,
    ):
        self.path, self.file, self.records, self.prefix = path, file, records, prefix
        self.file_size, self.big_endian = file_size, big_endian
        self.loaded: dict[str, TypedStorage] = {}

    def load(self, pid: object) -> TypedStorage:
        storage_type, key, numel, _ = _storage_id(pid, 5)
        if key in self.loaded:
            return _same_storage(self.loaded[key], storage_type, numel, key)
        info = self.records.get(f"{self.prefix}/data/{key}")
        if info is None:
            raise Refused(f"storage record {self.prefix}/data/{key} is missing")
        nbytes = numel * storage_type.dtype.itemsize
        if nbytes != info.file_size:
            raise Refused(
                f"storage {key!r} declares {numel} elements ({nbytes} bytes) but {info.filename} "
                f"holds {info.file_size} bytes"
            )
        offset = _checked_record(self.path, self.file, info, self.file_size)
        if info.compress_type == zipfile.ZIP_STORED:
            storage: Storage = MappedStorage(
                self.path, offset, nbytes, self.file_size, self.big_endian
            )
        else:
            storage = _ZipEntryStorage(self.path, info, offset, self.file_size, self.big_endian)
        self.loaded[key] = TypedStorage(storage, storage_type.dtype)
        return self.loaded[key]


class _StorageSlice(Storage):
    """A legacy storage view: a byte range of a root storage."""

    def __init__(self, root: Storage, start: int, nbytes: int):
        super().__init__(root.path, nbytes, root.file_size, root.big_endian)
        self._root, self._start = root, start

    @property
    def offset(self) -> int | None:
        return None if self._root.offset is None else self._root.offset + self._start

    def _load(self) -> np.ndarray:
        return self._root.buffer()[self._start : self._start + self.nbytes]


class _LegacyStorages:
    """Resolves legacy persistent ids; blob offsets are known only after the key list."""

    def __init__(self, path: str, file_size: int):
        self.path, self.file_size = path, file_size
        self.roots: dict[str, TypedStorage] = {}
        self.views: dict[str, TypedStorage] = {}

    def load(self, pid: object) -> TypedStorage:
        storage_type, key, numel, (view,) = _storage_id(pid, 6)
        itemsize = storage_type.dtype.itemsize
        if key in self.roots:
            root = _same_storage(self.roots[key], storage_type, numel, key)
        else:
            # Placed at its real offset by ``place``, which also checks that every root was written.
            storage = MappedStorage(self.path, 0, numel * itemsize, self.file_size)
            root = self.roots[key] = TypedStorage(storage, storage_type.dtype)
        if view is None:
            return root
        if type(view) is not tuple or len(view) != 3 or type(view[0]) is not str:
            raise Refused(f"storage view {describe(view)} is not (key, offset, size)")
        view_key, offset, size = view
        if (
            type(offset) is not int
            or type(size) is not int
            or offset < 0
            or size < 0
            or offset + size > numel
        ):
            raise Refused(f"storage view {view_key!r} does not fit in its {numel}-element storage")
        if view_key not in self.views:
            self.views[view_key] = TypedStorage(
                _StorageSlice(root.storage, offset * itemsize, size * itemsize), storage_type.dtype
            )
        return self.views[view_key]

    def place(self, data: mmap.mmap, position: int, keys: object, keys_offset: int) -> None:
        """Walk the blobs after the key list (pickled at ``keys_offset``): an int64 element count,
        then the data."""
        if (
            type(keys) is not list
            or any(type(key) is not str for key in keys)
            or len(set(keys)) != len(keys)
        ):
            raise CheckpointError(
                self.path, "the storage key list is not a list of distinct strings", keys_offset
            )
        if set(keys) != set(self.roots):
            missing = sorted(set(self.roots) - set(keys)) or sorted(set(keys) - set(self.roots))
            raise CheckpointError(
                self.path, f"storage keys and tensors disagree (e.g. {missing[0]!r})", keys_offset
            )
        for key in keys:
            root = self.roots[key]
            if position + 8 > self.file_size:
                raise CheckpointError(
                    self.path, f"storage {key!r} is missing (truncated file?)", position
                )
            count = int.from_bytes(data[position : position + 8], "little", signed=True)
            numel = root.storage.nbytes // root.dtype.itemsize
            if count != numel:
                raise CheckpointError(
                    self.path,
                    f"storage {key!r} holds {count} elements, the pickle says {numel}",
                    position,
                )
            start = position + 8
            position = start + root.storage.nbytes
            if position > self.file_size:
                raise CheckpointError(
                    self.path, f"storage {key!r} runs past the end of the file (truncated?)", start
                )
            root.storage.offset = start
