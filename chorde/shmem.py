"""numpy arrays as raw bytes and back as read-only, zero-copy views (the ``shmem`` extra).

:class:`chorde.clients.files.FilesCacheClient` stores arrays this way: the array's bytes in
C (or Fortran) order after a small text description (``dtype.str``, order, shape), and reads
them back with :func:`numpy.frombuffer` over a read-only memory map, so a get costs neither a
copy nor an unpickle. Importing this module without numpy raises the ImportError that names
the extra (``pip install 'chorde[shmem]'``).

Only plain arrays of fixed-size, object-free, unstructured dtypes go raw; subclasses
(``np.matrix``, masked arrays), object arrays, structured dtypes (whose field names
``dtype.str`` cannot carry) and subarray dtypes are left to pickle (:func:`describe` returns
``None`` for them).
"""

from __future__ import annotations

import functools
import math
from typing import Any

from chorde.errors import require

np = require("numpy", "shmem")

__all__ = ["array_from_buffer", "describe", "is_array"]

_PLAIN_TYPES = (np.ndarray, np.memmap)


def is_array(value: Any) -> bool:
    """Whether ``value`` is a numpy array (subclasses included)."""
    return isinstance(value, np.ndarray)


def describe(arr: Any) -> tuple[bytes, memoryview] | None:
    """``(meta, bytes view)`` of an array stored raw, or ``None`` if it must be pickled.

    The bytes view aliases the array's memory when it is C- or Fortran-contiguous (a
    non-contiguous array is copied once, into C order).
    """
    if type(arr) not in _PLAIN_TYPES:
        return None
    dtype = arr.dtype
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        return None
    if arr.flags.c_contiguous:
        order, data = "C", arr
    elif arr.flags.f_contiguous:
        order, data = "F", arr.T
    else:
        order, data = "C", np.ascontiguousarray(arr)
    meta = f"{dtype.str};{order};{','.join(map(str, arr.shape))}".encode("ascii")
    return meta, memoryview(data.reshape(-1).view(np.uint8))


@functools.lru_cache(maxsize=256)
def _parse(meta: bytes) -> tuple[Any, tuple[int, ...], bool, int]:
    """``(dtype, shape, fortran, byte length)`` of a description; ``ValueError`` if bad."""
    try:
        dtype_str, order, shape_text = meta.decode("ascii").split(";")
        dtype = np.dtype(dtype_str)
        shape = tuple(int(n) for n in shape_text.split(",")) if shape_text else ()
    except (UnicodeDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"bad array description {meta!r}: {exc}") from None
    if dtype.hasobject or dtype.fields is not None or order not in ("C", "F"):
        raise ValueError(f"bad array description {meta!r}")
    if any(n < 0 for n in shape):
        raise ValueError(f"bad array shape {shape!r}")
    return dtype, shape, order == "F", math.prod(shape) * dtype.itemsize


def array_from_buffer(buffer: Any, offset: int, length: int, meta: bytes) -> Any:
    """A read-only array over ``buffer[offset:offset + length]`` described by ``meta``.

    ``ValueError`` when ``meta`` is malformed or does not match ``length``: the caller
    treats it as a corrupt entry.
    """
    dtype, shape, fortran, needed = _parse(meta)
    if needed != length:
        raise ValueError(f"array {dtype.str}{list(shape)} needs {needed} bytes, entry has {length}")
    if needed == 0:
        flat = np.empty(0, dtype)
        flat.flags.writeable = False
    else:
        flat = np.frombuffer(buffer, dtype=dtype, count=needed // dtype.itemsize, offset=offset)
        if flat.flags.writeable:  # a read-only map gives a read-only array already
            flat.flags.writeable = False
    if fortran:
        return flat.reshape(shape[::-1]).T
    return flat.reshape(shape)
