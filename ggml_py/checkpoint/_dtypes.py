"""Element types of the checkpoint formats and their NumPy dtypes.

torch names a dtype two ways in a pickle: a legacy storage class (``torch HalfStorage``) or,
for ``_rebuild_tensor_v3``, the dtype itself (``torch float8_e4m3fn``). safetensors names it
with a short code (``F16``). All three map to one NumPy dtype; types without an exact NumPy
equivalent (quantized, complex32, sub-byte floats) are absent, so they are refused.
"""

from __future__ import annotations

import numpy as np

# torch dtype name (``str(torch.float16)`` without ``torch.``) -> NumPy dtype.
_NUMPY_DTYPES = {
    "float64": np.dtype("<f8"),
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "int64": np.dtype("<i8"),
    "int32": np.dtype("<i4"),
    "int16": np.dtype("<i2"),
    "int8": np.dtype("i1"),
    "uint64": np.dtype("<u8"),
    "uint32": np.dtype("<u4"),
    "uint16": np.dtype("<u2"),
    "uint8": np.dtype("u1"),
    "bool": np.dtype("?"),
    "complex64": np.dtype("<c8"),
    "complex128": np.dtype("<c16"),
}
# The ones NumPy lacks, named as in ml_dtypes. ml_dtypes is imported only when a checkpoint holds
# one: its import takes most of a second, longer than the rest of ggml_py's together.
_ML_DTYPES = (
    "bfloat16",
    "float8_e4m3fn",
    "float8_e5m2",
    "float8_e4m3fnuz",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
)
TORCH_DTYPE_NAMES = (*_NUMPY_DTYPES, *_ML_DTYPES)


def numpy_dtype(torch_name: str) -> np.dtype:
    """The NumPy dtype of a torch dtype name in ``TORCH_DTYPE_NAMES``.

    >>> numpy_dtype("float16"), numpy_dtype("bfloat16").name
    (dtype('float16'), 'bfloat16')
    """
    if torch_name in _ML_DTYPES:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, torch_name))
    return _NUMPY_DTYPES[torch_name]


# Legacy typed storage class name -> torch dtype name (torch/storage.py's map, reversed).
STORAGE_CLASSES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
    # An untyped storage holds raw bytes; its element count is a byte count.
    "UntypedStorage": "uint8",
}

# safetensors dtype code -> torch dtype name.
SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F8_E8M0": "float8_e8m0fnu",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
    "C64": "complex64",
}


def swap_unit(dtype: np.dtype) -> int:
    """Bytes swapped together when changing byte order: complex numbers swap each half.

    >>> swap_unit(np.dtype("<c8")), swap_unit(np.dtype("<f2")), swap_unit(np.dtype("?"))
    (4, 2, 1)
    """
    return dtype.itemsize // 2 if dtype.kind == "c" else dtype.itemsize
