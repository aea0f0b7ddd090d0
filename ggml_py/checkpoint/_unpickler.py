"""A restricted interpreter for the pickles inside torch checkpoints.

``pickle.load`` imports and calls whatever a file names, so a downloaded checkpoint could run
any code. This module is a separate stack machine over the raw bytes instead: it knows the
opcodes torch's pickles use (protocols 2 to 5) and refuses every other one, and it resolves a
global only through a fixed allowlist that maps the name to an inert stand-in. Nothing is ever
imported or called outside this module. The stand-ins build plain Python data: dicts, lists,
tuples, strings, numbers, and ``RebuiltTensor`` for each tensor rebuild call.

Limits keep a hostile pickle from exhausting memory or time: no read past the data, strings and
integers bounded, at most ``MAX_MEMO`` memo entries, ``MAX_MARK_DEPTH`` nested marks,
``MAX_STACK`` items on the stack and ``MAX_OBJECTS`` created objects. Dict keys must be
scalars, so hashing a key never walks a (possibly exponentially shared) structure.
"""

from __future__ import annotations

import mmap
import pickletools
import struct
from collections.abc import Callable

import numpy as np

from ggml_py.checkpoint._dtypes import STORAGE_CLASSES, TORCH_DTYPE_NAMES, numpy_dtype
from ggml_py.checkpoint._tensor import Storage, describe
from ggml_py.errors import CheckpointError

MAX_STRING = 1 << 26  # 64 MiB; tensor names and metadata strings are tiny
MAX_LONG_BYTES = 256
MAX_MEMO = 1_000_000
MAX_MARK_DEPTH = 100
MAX_STACK = 1_000_000  # on all stack levels together
MAX_OBJECTS = 2_000_000  # about 12 per tensor: room for 150k tensors
MAX_GLOBAL_NAME = 256

_OPCODE_NAMES = {ord(op.code): op.name for op in pickletools.opcodes}
_SCALAR_KEYS = (str, int, float, bool, bytes, type(None))


class Refused(Exception):
    """Why the pickle is refused; ``unpickle`` adds the file name and the byte offset."""


class TypedStorage:
    """What a storage persistent id resolves to: its bytes and the storage's element dtype."""

    __slots__ = ("storage", "dtype")

    def __init__(self, storage: Storage, dtype: np.dtype):
        self.storage = storage
        self.dtype = dtype


class RebuiltTensor:
    """A tensor rebuild call, unchecked: ``LazyTensor`` validates the layout once it has a name."""

    __slots__ = ("storage", "dtype", "offset", "shape", "strides")

    def __init__(
        self, storage: Storage, dtype: np.dtype, offset: object, shape: object, strides: object
    ):
        self.storage = storage
        self.dtype = dtype
        self.offset = offset
        self.shape = shape
        self.strides = strides


class StateDict(dict):
    """A pickled ``collections.OrderedDict``: the only object BUILD may update (with
    ``{'_metadata': ...}`` from ``Module.state_dict()``, which is ignored)."""


class _StandIn:
    """An allowlisted global. The name is matched, never imported."""

    __slots__ = ("qualname",)

    def __init__(self, qualname: str):
        self.qualname = qualname


class DTypeName(_StandIn):
    """A torch dtype (``torch.bfloat16``) or storage class (``torch.HalfStorage``): each only
    names a dtype, but torch accepts neither in the other's place, so ``is_storage_class`` keeps
    them apart. The NumPy dtype is looked up when a tensor uses it, so only bf16 and float8
    checkpoints import ml_dtypes."""

    __slots__ = ("dtype_name", "is_storage_class")

    def __init__(self, qualname: str, dtype_name: str, is_storage_class: bool):
        super().__init__(qualname)
        self.dtype_name = dtype_name
        self.is_storage_class = is_storage_class

    @property
    def dtype(self) -> np.dtype:
        return numpy_dtype(self.dtype_name)


class _TensorType(_StandIn):
    """``torch.Tensor`` or ``Parameter`` as the target type of ``_rebuild_from_type_v2``."""

    __slots__ = ()


class _Function(_StandIn):
    """A callable REDUCE may apply: ``build`` receives the argument tuple."""

    __slots__ = ("build",)

    def __init__(self, qualname: str, build: Callable[[tuple], object]):
        super().__init__(qualname)
        self.build = build


def _arguments(args: tuple, name: str, least: int, most: int) -> tuple:
    if not least <= len(args) <= most:
        count = least if least == most else f"{least} to {most}"
        raise Refused(f"{name} takes {count} arguments, not {len(args)}")
    return args


def _rebuild_tensor(
    args: tuple, name: str, least: int, most: int, dtype_at: int | None
) -> RebuiltTensor:
    args = _arguments(args, name, least, most)
    typed = args[0]
    if not isinstance(typed, TypedStorage):
        raise Refused(f"{name} needs a storage, not {describe(typed)}")
    dtype = typed.dtype
    if dtype_at is not None:
        if not isinstance(args[dtype_at], DTypeName) or args[dtype_at].is_storage_class:
            raise Refused(f"{name} needs a torch dtype, not {describe(args[dtype_at])}")
        dtype = args[dtype_at].dtype
    return RebuiltTensor(typed.storage, dtype, args[1], args[2], args[3])


def _rebuild_tensor_v2(args: tuple) -> RebuiltTensor:
    # (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    return _rebuild_tensor(args, "_rebuild_tensor_v2", 6, 7, None)


def _rebuild_tensor_v3(args: tuple) -> RebuiltTensor:
    # (untyped storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype[, metadata])
    return _rebuild_tensor(args, "_rebuild_tensor_v3", 7, 8, 6)


def _parameter(args: tuple, name: str, count: int) -> RebuiltTensor:
    # (data, requires_grad, backward_hooks[, state]): a Parameter is its data.
    data = _arguments(args, name, count, count)[0]
    if not isinstance(data, RebuiltTensor):
        raise Refused(f"{name} needs a tensor, not {describe(data)}")
    return data


def _rebuild_from_type_v2(args: tuple) -> object:
    # (func, new_type, args, state): a Tensor or Parameter carrying Python attributes.
    function, new_type, inner, _state = _arguments(args, "_rebuild_from_type_v2", 4, 4)
    if (
        function not in _TENSOR_FUNCTIONS.values()
        or not isinstance(new_type, _TensorType)
        or type(inner) is not tuple
    ):
        raise Refused("_rebuild_from_type_v2 only rebuilds plain tensors and parameters")
    return function.build(inner)


def _ordered_dict(args: tuple) -> StateDict:
    _arguments(args, "OrderedDict", 0, 0)
    return StateDict()


def _size(args: tuple) -> tuple:
    (sizes,) = _arguments(args, "torch.Size", 1, 1)
    if type(sizes) is not tuple:
        raise Refused(f"torch.Size needs a tuple, not {describe(sizes)}")
    return sizes


def _function(
    module: str, name: str, build: Callable[[tuple], object]
) -> tuple[tuple[str, str], _Function]:
    return (module, name), _Function(f"{module}.{name}", build)


_TENSOR_FUNCTIONS = dict(
    [
        _function("torch._utils", "_rebuild_tensor_v2", _rebuild_tensor_v2),
        _function("torch._utils", "_rebuild_tensor_v3", _rebuild_tensor_v3),
        _function(
            "torch._utils",
            "_rebuild_parameter",
            lambda args: _parameter(args, "_rebuild_parameter", 3),
        ),
        _function(
            "torch._utils",
            "_rebuild_parameter_with_state",
            lambda args: _parameter(args, "_rebuild_parameter_with_state", 4),
        ),
    ]
)


def _allowlist() -> dict[tuple[str, str], _StandIn]:
    table: dict[tuple[str, str], _StandIn] = dict(_TENSOR_FUNCTIONS)
    table.update(
        [
            _function("torch._tensor", "_rebuild_from_type_v2", _rebuild_from_type_v2),
            _function("collections", "OrderedDict", _ordered_dict),
            _function("torch", "Size", _size),
        ]
    )
    for module, name in (
        ("torch", "Tensor"),
        ("torch._tensor", "Tensor"),
        ("torch.nn.parameter", "Parameter"),
    ):
        table[(module, name)] = _TensorType(f"{module}.{name}")
    for module in ("torch", "torch.cuda"):
        for name, dtype_name in STORAGE_CLASSES.items():
            table[(module, name)] = DTypeName(f"{module}.{name}", dtype_name, is_storage_class=True)
    table[("torch.storage", "UntypedStorage")] = DTypeName(
        "torch.storage.UntypedStorage", "uint8", is_storage_class=True
    )
    for name in TORCH_DTYPE_NAMES:
        table[("torch", name)] = DTypeName(f"torch.{name}", name, is_storage_class=False)
    return table


ALLOWED_GLOBALS = _allowlist()

PersistentLoad = Callable[[object], TypedStorage]


def unpickle(
    data: bytes | mmap.mmap,
    start: int,
    path: str,
    label: str,
    persistent_load: PersistentLoad | None = None,
    origin: int | None = 0,
) -> tuple[object, int]:
    """Run the pickle that starts at ``data[start]``; return its object and the position after STOP.

    ``data`` is anything whose slices are ``bytes`` (``bytes``, ``mmap.mmap``), so no buffer
    stays exported. ``persistent_load`` resolves BINPERSID ids (None: they are refused).
    Errors name ``path`` and ``label`` (the record or pickle); ``origin`` is the file offset of
    ``data[0]`` so that errors give a file offset, or None when ``data`` is decompressed.

    >>> unpickle(b"\\x80\\x02}q\\x00X\\x01\\x00\\x00\\x00aK\\x07s.", 0, "x.bin", "data.pkl")
    ({'a': 7}, 15)
    """
    machine = _Machine(data, start, persistent_load)
    try:
        return machine.run()
    except Refused as refusal:
        if origin is None:
            raise CheckpointError(
                path, f"{label}, byte {machine.op_start} of the decompressed record: {refusal}"
            ) from None
        raise CheckpointError(path, f"{label}: {refusal}", origin + machine.op_start) from None


class _Machine:
    def __init__(self, data: bytes | mmap.mmap, start: int, persistent_load: PersistentLoad | None):
        self.data = data
        self.pos = start
        self.op_start = start
        self.end = len(data)
        self.persistent_load = persistent_load
        self.stack: list[object] = []
        self.metastack: list[list[object]] = []
        self.stacked = 0  # items on the stacks saved in metastack
        self.memo: dict[int, object] = {}
        self.objects = 0

    def run(self) -> tuple[object, int]:
        data, end = self.data, self.end
        while True:
            self.op_start = self.pos
            if self.pos >= end:
                raise Refused("the pickle is truncated (no STOP opcode)")
            code = data[self.pos]
            self.pos += 1
            if code == _STOP:
                if self.metastack or len(self.stack) != 1:
                    raise Refused("STOP with an unbalanced stack")
                return self.stack.pop(), self.pos
            handler = _HANDLERS.get(code)
            if handler is None:
                name = _OPCODE_NAMES.get(code)
                what = (
                    f"opcode {name} ({bytes([code])!r})"
                    if name
                    else f"byte {code:#04x}, not an opcode,"
                )
                raise Refused(f"{what} is not allowed")
            handler(self)

    # -- reading the stream --

    def take(self, count: int) -> bytes:
        if count > self.end - self.pos:
            raise Refused(
                f"the pickle is truncated ({count} bytes needed, {self.end - self.pos} left)"
            )
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def unpack(self, layout: struct.Struct) -> int:
        return layout.unpack(self.take(layout.size))[0]

    def line(self) -> str:
        stop = self.data.find(b"\n", self.pos, min(self.end, self.pos + MAX_GLOBAL_NAME + 1))
        if stop < 0:
            raise Refused(f"GLOBAL name without a newline within {MAX_GLOBAL_NAME} bytes")
        return self.text(self.take(stop - self.pos + 1)[:-1])

    @staticmethod
    def text(raw: bytes) -> str:
        try:
            return raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise Refused("a string is not valid UTF-8") from None

    def sized(self, layout: struct.Struct) -> bytes:
        count = self.unpack(layout)
        if count > MAX_STRING:
            raise Refused(f"a string of {count} bytes exceeds the limit of {MAX_STRING}")
        return self.take(count)

    # -- the stack --

    def push(self, value: object) -> None:
        if len(self.stack) + self.stacked >= MAX_STACK:
            raise Refused(f"more than {MAX_STACK} items on the stack")
        self.stack.append(value)

    def push_new(self, value: object) -> None:
        self.objects += 1
        if self.objects > MAX_OBJECTS:
            raise Refused(f"more than {MAX_OBJECTS} objects")
        self.push(value)

    def pop(self) -> object:
        if not self.stack:
            raise Refused("stack underflow")
        return self.stack.pop()

    def top(self) -> object:
        if not self.stack:
            raise Refused("stack underflow")
        return self.stack[-1]

    def pop_mark(self) -> list[object]:
        if not self.metastack:
            raise Refused("no MARK to pop to")
        items = self.stack
        self.stack = self.metastack.pop()
        self.stacked -= len(self.stack)
        return items

    def pop_many(self, count: int) -> list[object]:
        if len(self.stack) < count:
            raise Refused("stack underflow")
        items = self.stack[-count:]
        del self.stack[-count:]
        return items

    def container(self, kind: type) -> object:
        target = self.top()
        if type(target) is not kind and not (kind is dict and type(target) is StateDict):
            raise Refused(f"cannot add items to {describe(target)}")
        return target

    def set_items(self, target: dict, items: list[object]) -> None:
        for key, value in zip(items[0::2], items[1::2], strict=True):
            if not isinstance(key, _SCALAR_KEYS):
                raise Refused(f"dict key {describe(key)} is not a string or number")
            target[key] = value

    def memoize(self, index: int) -> None:
        if index not in self.memo and len(self.memo) >= MAX_MEMO:
            raise Refused(f"more than {MAX_MEMO} memo entries")
        self.memo[index] = self.top()

    def recall(self, index: int) -> None:
        if index not in self.memo:
            raise Refused(f"memo entry {index} was never stored")
        self.push(self.memo[index])

    def resolve(self, module: str, name: str) -> None:
        stand_in = ALLOWED_GLOBALS.get((module, name))
        if stand_in is None:
            raise Refused(
                f"global {describe(module + '.' + name)} is not allowed (only torch tensor rebuild "
                "functions, storage types, dtypes and collections.OrderedDict are)"
            )
        self.push(stand_in)


_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct(">d")
_STOP = ord(".")


def _proto(m: _Machine) -> None:
    version = m.unpack(_U8)
    if not 2 <= version <= 5:
        raise Refused(f"pickle protocol {version} is not supported (2 to 5 are)")


def _frame(m: _Machine) -> None:
    # Protocol 4 frames only announce how many bytes follow; the content is read normally.
    if m.unpack(_U64) > m.end - m.pos:
        raise Refused("a frame is longer than the data")


def _mark(m: _Machine) -> None:
    if len(m.metastack) >= MAX_MARK_DEPTH:
        raise Refused(f"more than {MAX_MARK_DEPTH} nested MARKs")
    m.metastack.append(m.stack)
    m.stacked += len(m.stack)
    m.stack = []


def _pop(m: _Machine) -> None:
    if m.stack:
        m.stack.pop()
    else:
        m.pop_mark()


def _tuple_of(count: int) -> Callable[[_Machine], None]:
    return lambda m: m.push_new(tuple(m.pop_many(count)))


def _long(m: _Machine, layout: struct.Struct) -> None:
    count = m.unpack(layout)
    if count > MAX_LONG_BYTES:
        raise Refused(f"an integer of {count} bytes exceeds the limit of {MAX_LONG_BYTES}")
    m.push_new(int.from_bytes(m.take(count), "little", signed=True))


def _append(m: _Machine) -> None:
    value = m.pop()
    m.container(list).append(value)


def _appends(m: _Machine) -> None:
    items = m.pop_mark()
    m.container(list).extend(items)


def _setitem(m: _Machine) -> None:
    value = m.pop()
    key = m.pop()
    m.set_items(m.container(dict), [key, value])


def _setitems(m: _Machine) -> None:
    items = m.pop_mark()
    if len(items) % 2:
        raise Refused("SETITEMS with an odd number of items")
    m.set_items(m.container(dict), items)


def _stack_global(m: _Machine) -> None:
    name = m.pop()
    module = m.pop()
    if type(module) is not str or type(name) is not str:
        raise Refused("STACK_GLOBAL needs two strings")
    m.resolve(module, name)


def _binpersid(m: _Machine) -> None:
    pid = m.pop()
    if m.persistent_load is None:
        raise Refused("a persistent id where none may occur")
    m.push_new(m.persistent_load(pid))


def _reduce(m: _Machine) -> None:
    args = m.pop()
    function = m.pop()
    if not isinstance(function, _Function):
        raise Refused(f"REDUCE calls {describe(function)}, which is not an allowed function")
    if type(args) is not tuple:
        raise Refused(f"REDUCE arguments must be a tuple, not {describe(args)}")
    m.push_new(function.build(args))


def _build(m: _Machine) -> None:
    state = m.pop()
    if type(m.top()) is not StateDict or type(state) is not dict:
        raise Refused(f"BUILD of {describe(state)} on {describe(m.top())} is not allowed")


def _opcodes() -> dict[int, Callable[[_Machine], None]]:
    table: dict[str, Callable[[_Machine], None]] = {
        "\x80": _proto,
        "\x95": _frame,
        "(": _mark,
        "0": _pop,
        "1": lambda m: m.pop_mark(),
        "}": lambda m: m.push_new(dict()),
        "]": lambda m: m.push_new([]),
        ")": lambda m: m.push(()),
        "t": lambda m: m.push_new(tuple(m.pop_mark())),
        "\x85": _tuple_of(1),
        "\x86": _tuple_of(2),
        "\x87": _tuple_of(3),
        "a": _append,
        "e": _appends,
        "s": _setitem,
        "u": _setitems,
        "N": lambda m: m.push(None),
        "\x88": lambda m: m.push(True),
        "\x89": lambda m: m.push(False),
        "J": lambda m: m.push_new(m.unpack(_I32)),
        "K": lambda m: m.push(m.unpack(_U8)),
        "M": lambda m: m.push_new(m.unpack(_U16)),
        "\x8a": lambda m: _long(m, _U8),
        "\x8b": lambda m: _long(m, _U32),
        "G": lambda m: m.push_new(m.unpack(_F64)),
        "X": lambda m: m.push_new(m.text(m.sized(_U32))),
        "\x8c": lambda m: m.push_new(m.text(m.sized(_U8))),
        "\x8d": lambda m: m.push_new(m.text(m.sized(_U64))),
        # Python 2 ``str``: torch.load decodes it as UTF-8 too.
        "U": lambda m: m.push_new(m.text(m.sized(_U8))),
        "T": lambda m: m.push_new(m.text(m.sized(_U32))),
        "C": lambda m: m.push_new(m.sized(_U8)),
        "B": lambda m: m.push_new(m.sized(_U32)),
        "\x8e": lambda m: m.push_new(m.sized(_U64)),
        "c": lambda m: m.resolve(m.line(), m.line()),
        "\x93": _stack_global,
        "q": lambda m: m.memoize(m.unpack(_U8)),
        "r": lambda m: m.memoize(m.unpack(_U32)),
        "\x94": lambda m: m.memoize(len(m.memo)),
        "h": lambda m: m.recall(m.unpack(_U8)),
        "j": lambda m: m.recall(m.unpack(_U32)),
        "Q": _binpersid,
        "R": _reduce,
        "b": _build,
    }
    return {ord(code): handler for code, handler in table.items()}


_HANDLERS = _opcodes()
