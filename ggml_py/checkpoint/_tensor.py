"""Storages, lazy tensors and the checkpoint mapping shared by every container format.

A *storage* is a run of bytes in a file (a torch ``data/<key>`` record, a legacy blob, a
safetensors byte range). A *lazy tensor* is a view of one storage: dtype, shape, element strides
and element offset, as torch describes tensors. Nothing is read until ``LazyTensor.numpy()``.
"""

from __future__ import annotations

import abc
import math
import os
import weakref
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from ggml_py.checkpoint._dtypes import swap_unit
from ggml_py.errors import CheckpointError

# NumPy >= 1.22 supports 32 dimensions; torch checkpoints of real models use at most 4 or 5.
MAX_NDIM = 32

_NO_BYTES = np.zeros(0, dtype=np.uint8)
_NO_BYTES.flags.writeable = False


class Storage(abc.ABC):
    """The bytes of one storage, handed out as a read-only 1-D ``uint8`` array by ``buffer()``.

    The array is remembered only through a weak reference: tensors that share the storage share
    one array while any of their views is alive, and nothing stays in memory once the caller has
    dropped its arrays (a converter streams a 12 GB checkpoint one tensor at a time).
    """

    offset: int | None = None  # where the bytes start in the file, if they are stored as they are

    def __init__(self, path: str, nbytes: int, file_size: int, big_endian: bool = False):
        self.path = path
        self.nbytes = nbytes
        self.file_size = file_size
        self.big_endian = big_endian
        self._cached: weakref.ref | None = None

    def buffer(self) -> np.ndarray:
        data = None if self._cached is None else self._cached()
        if data is None:
            data = self._load() if self.nbytes else _NO_BYTES
            self._cached = weakref.ref(data)
        return data

    @abc.abstractmethod
    def _load(self) -> np.ndarray:
        """Read or map the ``nbytes`` bytes (only called when ``nbytes > 0``)."""


class MappedStorage(Storage):
    """Bytes stored uncompressed at ``offset`` in the file: a read-only memory map of them.

    Each map covers one storage and is unmapped when its last view dies, so the resident set
    stays near the size of the tensors the caller currently holds.
    """

    def __init__(
        self, path: str, offset: int, nbytes: int, file_size: int, big_endian: bool = False
    ):
        super().__init__(path, nbytes, file_size, big_endian)
        self.offset = offset

    def _load(self) -> np.ndarray:
        try:
            return np.memmap(
                self.path, dtype=np.uint8, mode="r", offset=self.offset, shape=(self.nbytes,)
            )
        except (OSError, ValueError) as error:
            raise CheckpointError(
                self.path, f"cannot map {self.nbytes} bytes of tensor data: {error}", self.offset
            ) from error


class LazyTensor:
    """One tensor of a checkpoint: name, shape and dtype now, the data when asked.

    ``numpy()`` returns a read-only view of the memory-mapped file when the data is stored
    contiguously, uncompressed and little-endian; otherwise a fresh C-contiguous array.

    >>> import ggml_py
    >>> wte = ggml_py.open_checkpoint("examples/tiny-gptj")["transformer.wte.weight"]
    >>> wte.shape, wte.dtype, wte.nbytes
    ((50400, 64), dtype('float16'), 6451200)
    >>> wte.numpy().flags.writeable
    False
    """

    __slots__ = ("name", "shape", "dtype", "_storage", "_strides", "_offset")

    def __init__(
        self,
        name: str,
        storage: Storage,
        dtype: np.dtype,
        shape: Sequence[int],
        strides: Sequence[int] | None = None,
        offset: int = 0,
    ):
        """``strides`` and ``offset`` count elements of ``dtype`` (torch's convention); no strides
        means C order. The layout is checked against the storage: a bad one raises CheckpointError."""
        self.name = name
        self.dtype = dtype
        self._storage = storage
        self.shape = self._sizes(shape, "shape")
        self._strides = (
            _c_strides(self.shape) if strides is None else self._sizes(strides, "strides")
        )
        self._offset = self._sizes((offset,), "storage offset")[0]
        self._check_layout()

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def numpy(self) -> np.ndarray:
        itemsize = self.dtype.itemsize
        array = np.ndarray(
            self.shape,
            dtype=self.dtype,
            buffer=self._storage.buffer(),
            offset=self._offset * itemsize,
            strides=tuple(stride * itemsize for stride in self._strides),
        )
        unit = swap_unit(self.dtype)
        if self._storage.big_endian and unit > 1:
            array = np.array(array, order="C")
            array.reshape(-1).view(np.dtype(f"u{unit}")).byteswap(inplace=True)
        elif not array.flags.c_contiguous:
            array = np.ascontiguousarray(array)
        return array

    def __repr__(self) -> str:
        return f"LazyTensor({self.name!r}, shape={self.shape}, dtype={self.dtype})"

    def _fail(self, reason: str) -> CheckpointError:
        return CheckpointError(
            self._storage.path, f"tensor {self.name!r}: {reason}", self._storage.offset
        )

    def _sizes(self, values: object, what: str) -> tuple[int, ...]:
        if not isinstance(values, (tuple, list)) or len(values) > MAX_NDIM:
            raise self._fail(f"{what} must be a list of at most {MAX_NDIM} integers")
        for value in values:
            # bool is an int subclass, but True is no size; 2**62 keeps NumPy's intp arithmetic exact.
            if type(value) is not int or not 0 <= value < 2**62:
                raise self._fail(f"{what} must hold integers in [0, 2**62), not {describe(value)}")
        return tuple(values)

    def _check_layout(self) -> None:
        if len(self._strides) != len(self.shape):
            raise self._fail(f"{len(self.shape)} sizes but {len(self._strides)} strides")
        itemsize = self.dtype.itemsize
        if math.prod(self.shape) == 0:
            end = self._offset * itemsize
        else:
            last = self._offset + sum(
                (size - 1) * stride for size, stride in zip(self.shape, self._strides, strict=True)
            )
            end = (last + 1) * itemsize
        storage = self._storage
        if end > storage.nbytes:
            raise self._fail(f"its view reaches byte {end} of a storage of {storage.nbytes} bytes")
        # Zero strides repeat elements; never let that build an array larger than the file.
        if self.nbytes > max(storage.nbytes, storage.file_size):
            raise self._fail(
                f"{self.nbytes} bytes expanded from a storage of {storage.nbytes} bytes"
            )


class Checkpoint(Mapping):
    """A read-only mapping of tensor name -> ``LazyTensor``, in the file's tensor order.

    >>> import ggml_py
    >>> checkpoint = ggml_py.open_checkpoint("examples/tiny-gptj")
    >>> len(checkpoint), next(iter(checkpoint))
    (25, 'transformer.wte.weight')
    """

    def __init__(self, path: str | os.PathLike[str], tensors: dict[str, LazyTensor]):
        self.path = os.fspath(path)
        self._tensors = tensors

    def __getitem__(self, name: str) -> LazyTensor:
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __repr__(self) -> str:
        return f"Checkpoint({self.path!r}, {len(self)} tensors)"


def _c_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides = []
    step = 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def describe(value: object) -> str:
    """A short, safe description of a value read from a file, for error messages.

    Only scalars are shown; anything else is named by its type, so a huge or deeply nested
    structure is never printed.

    >>> describe("os.system"), describe([1, 2]), describe(12)
    ("'os.system'", 'a list', '12')
    """
    if isinstance(value, (str, bytes)):
        text = repr(value[:40])
        return text if len(value) <= 40 else text + "..."
    if isinstance(value, (int, float, type(None))):
        return repr(value)
    qualname = getattr(value, "qualname", None)  # the pickle's stand-ins for allowlisted globals
    return qualname if isinstance(qualname, str) else f"a {type(value).__name__}"
